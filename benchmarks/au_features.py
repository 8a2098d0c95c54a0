"""AU features before any training: how well each AU's own pooled region separates that AU, for
several ways of extracting the regions, on the same faces.

    python benchmarks/au_features.py [--manifest CAPTIONED | --preset hard --images 1400] [--work DIR]
                                     [--sizes 200,800] [--seeds 3] [--variant NAME=ARGS ...] [--tiny]

* Data: ``--manifest`` (a captioned manifest) or ``--images`` SynthFACS faces of ``--preset``
  rendered and captioned into ``--work`` (``hard``: SynthFACS-hard, with its test split).
* Each ``--variant NAME=ARGS`` is one ``mf2 extract-features`` of those faces with ``ARGS`` after
  the defaults (``--augment none``), into ``--work/NAME.zarr`` (resumed when there). The first
  variant is the reference; the default list is the defaults beside the region table for small
  faces, narrower and wider windows, more samples, a larger input and the stride-8 map.
* For each training size and seed: ``mf2.evaluation.probe.au_region_probe`` (a logistic
  regression per AU on that AU's own region, fitted on SIZE training rows drawn as ``pretrain
  --train-rows`` draws them) scored on the test split (val when there is none): AU mean F1 at 0.5
  and at each AU's threshold tuned on val (the way a trained run decides), per AU.
* Intervals: variant − reference on the same images, all seeds pooled, 95% percentile interval
  from resampling the scored videos (``paired_bootstrap``).

It screens the features a model would read, cheaply (a few minutes per variant on a CPU); a
variant that separates no AU better here has little to give a trained MF², and one that does is
then trained (``benchmarks/small_data.py --cache``). Writes
benchmarks/results/au_features-cpu.{json,md} (``--out`` for another stem).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small_data import sh  # noqa: E402  (the README's commands, run as a user would)

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("defaults=", "small-face=--au-regions small-face", "window0.7=--au-window 0.7",
            "window1.4=--au-window 1.4", "window0.7-samples5=--au-window 0.7 --au-samples 5",
            "size320=--image-size 320", "stride8=--au-map stride8")


# what this script sets for every variant: a variant's arguments change how the regions are
# extracted, never which faces or where they go
OWNED = ("--manifest", "--out", "--augment", "--overwrite", "--skip-bad")


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, args = text.partition("=")
    if not sep or not name or name.strip(".") == "" or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise SystemExit(f"--variant: expected NAME=EXTRACT-ARGS (NAME of letters, digits, '-', '_', '.'), got {text!r}")
    try:
        words = shlex.split(args)
    except ValueError as e:
        raise SystemExit(f"--variant {text!r}: {e}")
    owned = [w for w in words if w.split("=")[0] in OWNED]
    if owned:
        raise SystemExit(f"--variant {text!r}: {owned[0].split('=')[0]} is this script's to set (every variant reads the "
                         "same faces, without mirrored views, into --work/NAME.zarr)")
    return name, words


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def sizes_list(text: str) -> list[int]:
    return [positive(t) for t in text.split(",")]


def seeds_pooled(probes: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The seeds' probabilities, and their calls at each seed's tuned thresholds, stacked."""
    from mf2.data.labels import AUS

    probs = np.concatenate([q["au_probs"] for q in probes])
    on = np.concatenate([q["au_probs"] >= np.array([q["au_tuned"]["thresholds"][a] for a in AUS]) for q in probes])
    return probs, on


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, help="A captioned manifest (default: render SynthFACS into --work).")
    parser.add_argument("--preset", choices=["default", "hard"], default="hard")
    parser.add_argument("--images", type=int, default=1400, help="SynthFACS faces to render when there is no --manifest.")
    parser.add_argument("--variant", action="append", default=None,
                        help="NAME=EXTRACT-ARGS, repeated; the first is the reference [default: the list in VARIANTS].")
    parser.add_argument("--sizes", type=sizes_list, default="200,800", help="Training subset sizes, comma-separated.")
    parser.add_argument("--seeds", type=positive, default=3)
    parser.add_argument("--work", type=Path, default=Path("au-features-work"))
    parser.add_argument("--bootstrap", type=positive, default=1000)
    parser.add_argument("--tiny", action="store_true", help="48 hard faces, two variants, size 16, one seed.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/au_features-cpu")
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in (args.variant or VARIANTS)]
    if args.tiny:  # the first two of the default list, unless variants are given
        args.preset, args.images, args.sizes, args.seeds = "hard", 48, [16], 1
        args.bootstrap = min(args.bootstrap, 50)
        variants = variants if args.variant else variants[:2]
    if len({n for n, _ in variants}) != len(variants):
        raise SystemExit("--variant: each needs a name of its own")

    from mf2.data.labels import AUS
    from mf2.evaluation.evaluate import SELECTION_SPLIT, resolve_split
    from mf2.evaluation.metrics import au_f1, paired_bootstrap
    from mf2.evaluation.probe import au_region_probe

    if args.manifest is not None and not args.manifest.is_file():
        raise SystemExit(f"--manifest {args.manifest}: no such file")
    args.work.mkdir(parents=True, exist_ok=True)
    manifest = args.manifest
    if manifest is None:
        data = args.work / "synth"
        if not (data / "manifest.jsonl").exists():
            sh("synth", "--preset", args.preset, "--n", args.images, "--out", data, "--no-baseline")
        if not (data / "manifest.captioned.jsonl").exists():
            sh("caption", "--manifest", data / "manifest.jsonl")
        manifest = data / "manifest.captioned.jsonl"
    from mf2.features.reader import CacheReader
    from mf2.features.store import FeatureStore

    caches, sizes = {}, args.sizes
    for k, (name, extra) in enumerate(variants):
        caches[name] = args.work / f"{name}.zarr"
        sh("extract-features", "--manifest", manifest, "--out", caches[name], "--augment", "none", *extra)  # resumes
        print(f"{name}: extracted ({shlex.join(extra) or 'the defaults'})", flush=True)
        if k == 0:  # what is scored, and on how many training rows, before the other variants are extracted
            split = resolve_split(caches[name])
            if split == SELECTION_SPLIT:
                raise SystemExit(f"{manifest}: no test split to score on (the thresholds are tuned on "
                                 f"{SELECTION_SPLIT}); build it with --test-fraction")
            n_train = len(CacheReader(caches[name], "train"))
            for size in [s for s in sizes if s > n_train]:
                print(f"size {size}: the faces have only {n_train} training rows; skipped", flush=True)
            sizes = [s for s in sizes if s <= n_train]
            reference_faces = FeatureStore.open(caches[name]).signature["manifest"]
        if FeatureStore.open(caches[name]).signature["manifest"] != reference_faces:
            raise SystemExit(f"{caches[name]}: extracted from other faces than {caches[variants[0][0]]}; paired "
                             "differences need the same (another --work)")
    rows = []
    for size in sizes:
        probes = {name: [au_region_probe(cache, split, size, seed, thresholds_from=SELECTION_SPLIT, predictions=True)
                         for seed in range(args.seeds)] for name, cache in caches.items()}
        ref = probes[variants[0][0]]
        y, videos = (np.concatenate([p[k] for p in ref]) for k in ("y_aus", "videos"))
        no_emotion = (np.zeros((len(y), 1)), np.zeros(len(y), dtype=np.int64))  # AUs only
        ref_probs, ref_on = seeds_pooled(ref)
        for name, extra in variants:
            p = probes[name]
            if any(not np.array_equal(a["videos"], b["videos"]) for a, b in zip(p, ref)):
                raise SystemExit(f"{name}: its cache scores other {split} images than {variants[0][0]}'s")
            probs, on = seeds_pooled(p)
            d05 = paired_bootstrap((no_emotion[0], probs), (no_emotion[0], ref_probs), (no_emotion[1], y), videos,
                                   args.bootstrap)["au_mean_f1"]
            dtu = paired_bootstrap((no_emotion[0], on), (no_emotion[0], ref_on), (no_emotion[1], y), videos,
                                   args.bootstrap)["au_mean_f1"]
            rows.append({"variant": name, "extract_args": extra, "train_images": size, "seeds": args.seeds,
                         "au_f1": float(np.mean([q["au"]["mean"] for q in p])),
                         "au_f1_tuned": float(np.mean([q["au_tuned"]["mean"] for q in p])),
                         "minus_reference": d05, "minus_reference_tuned": dtu,
                         "per_au_tuned_seeds_pooled": au_f1(on, y)["per_au"]})
            print(f"size {size} {name}: AU F1 {rows[-1]['au_f1']:.3f} (tuned {rows[-1]['au_f1_tuned']:.3f}); − "
                  f"{variants[0][0]}: {d05['diff']:+.3f} [{d05['low']:+.3f}, {d05['high']:+.3f}], tuned "
                  f"{dtu['diff']:+.3f} [{dtu['low']:+.3f}, {dtu['high']:+.3f}]", flush=True)
    if not rows:
        raise SystemExit(f"no size to score: {manifest} has {n_train} training rows")
    result = {"manifest": str(manifest), "split": split, "reference": variants[0][0], "sizes": sizes,
              "images_scored": int(len(ref[0]["videos"])), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    (args.out.parent / f"{args.out.name}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (args.out.parent / f"{args.out.name}.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    from mf2.data.labels import AUS

    f = lambda d: f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"  # noqa: E731
    split = result["split"]
    lines = ["# AU features: each AU's own region, probed, per way of extracting it", "",
             f"Faces: `{result['manifest']}`; scored on {split} ({result['images_scored']} images); per AU a logistic "
             "regression on its own pooled region (`au_region_probe`), fitted on the training rows drawn as `pretrain "
             "--train-rows` draws them; F1 at 0.5 and at each AU's threshold tuned on val. Each cell: mean over seeds. "
             f"Δ: the variant − `{result['reference']}` in points, all seeds pooled, 95% interval from resampling {split} "
             "videos.", "",
             "| train images | variant | `extract-features` arguments | AU F1 | Δ [95%] | AU F1, tuned thresholds | Δ [95%] | "
             + " | ".join(AUS) + " |", "|---|---|---|---|---|---|---|" + "---|" * len(AUS)]
    for r in result["rows"]:
        lines.append(f"| {r['train_images']} | {r['variant']} | `{shlex.join(r['extract_args']) or '(defaults)'}` | "
                     f"{r['au_f1']:.3f} | {f(r['minus_reference'])} | {r['au_f1_tuned']:.3f} | "
                     f"{f(r['minus_reference_tuned'])} | "
                     + " | ".join(f"{100 * r['per_au_tuned_seeds_pooled'][a]:.1f}" for a in AUS) + " |")
    lines += ["", "Per-AU columns: F1 at the tuned thresholds, all seeds' predictions pooled."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
