"""The small-data regime: MF² with the offline defaults on training subsets of a few hundred to
a few thousand SynthFACS faces, beside the linear probe on the same cache's pooled features.

    python benchmarks/small_data.py [--cache STORE | --preset default|hard --images N] [--sizes 200,800]
                                    [--seeds 3] [--work DIR] [--bootstrap 1000] [--tiny]
                                    [--pretrain-args "ARGS" --beside OTHER_WORK]

* Data: ``--cache`` reuses a feature store (``mf2 extract-features`` with its defaults);
  otherwise ``--images`` SynthFACS faces of ``--preset`` (``hard``: SynthFACS-hard, with its
  test split) are rendered, captioned and extracted into ``--work`` with the README's commands
  and their defaults.
* For each size and seed: ``mf2 pretrain --preset small --train-rows SIZE --seed SEED`` with
  every other setting at its default (auto learning rate and warm-up, AU weighting, 30
  epochs), on the same fixed val split; the linear probes are fitted on the same SIZE rows
  (``pooled_feature_probe(train_rows=SIZE, seed=SEED)``).
* Scored on the cache's test split when it has one: AU mean F1 at 0.5 (the paper's tables),
  emotion mean accuracy, and per-AU F1, of the run's *best* epoch (chosen on val, as ``mf2
  evaluate`` uses it; test was read by nothing). A cache without a test split is scored on val
  at the run's *last* epoch: the best-epoch choice reads val, so scoring it on val would
  flatter the model against the probe (the best epoch is reported beside, marked).
* Intervals: model − probe on the same scored images, all seeds pooled, with a 95% percentile
  interval from resampling the split's videos (``paired_bootstrap``; a video's frames are drawn
  with all its seeds), and the seeds' range.
* ``--pretrain-args``: more ``mf2 pretrain`` arguments for every run (a regulariser, a schedule),
  in a ``--work`` of their own; with ``--beside`` the defaults' ``--work``, each setting is
  scored against the defaults' runs paired image by image (how a default change is shown
  winning, or not, with an interval).
* ``--tta flip``: MF²'s predictions average the mirrored view in (``evaluate --tta flip``; a cache
  extracted with ``--augment flip``); the probes keep to the original views.
* ``--tiny``: a few dozen faces, one seed, one epoch: that the script runs end to end (the
  figures mean nothing).

Runs resume: a finished run is scored again, not retrained. Writes
benchmarks/results/small_data-cpu.{json,md} (``--out`` for another name).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def sh(*args, cwd=None) -> str:
    cmd = [sys.executable, "-m", "mf2.cli.main", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd[2:])} failed:\n{done.stderr[-2000:]}")
    return done.stdout + done.stderr


# The issue-25 report on about 1,000 real posed faces (48-px grey crops, about 120 people; 780
# train / 201 val; its figures read val, which also chose the epoch): MF² + DFN with the documented
# defaults beside a linear probe on the same frozen features, in points.
REAL_FACES = {"source": "issue 25 (a held-out set of ~1,000 real posed faces; val, which chose the epoch)",
              "model": {"au_mean_f1": 62.3, "emotion_mean_recall": 80.2},
              "probe": {"au_mean_f1": 60.1, "emotion_mean_recall": 72.1}}


def build_cache(work: Path, images: int, preset: str = "default", augment: str = "none") -> Path:
    data, cache = work / "synth", work / "features.zarr"
    if not (data / "manifest.jsonl").exists():
        sh("synth", "--preset", preset, "--n", images, "--out", data, "--no-baseline")
    if not (data / "manifest.captioned.jsonl").exists():
        sh("caption", "--manifest", data / "manifest.jsonl")
    sh("extract-features", "--manifest", data / "manifest.captioned.jsonl", "--out", cache, "--augment", augment)  # resumes
    return cache


def train(cache: Path, run: Path, size: int, seed: int, epochs: int | None = None, extra: tuple = ()) -> float:
    """Pretrain (or find finished) one run, with ``extra`` pretrain arguments after the
    defaults; the seconds it took (0 when already done)."""
    from mf2.runs import RunFolder

    folder = RunFolder(run)
    if folder.exists() and folder.latest_checkpoint() is not None:
        done = folder.checkpoint_state(folder.latest_checkpoint())["epoch"] + 1
        if done >= folder.config()["train"]["epochs"]:
            return 0.0
        resume = ["--resume"]
    else:
        resume = []
    t0 = time.perf_counter()
    sh("pretrain", "--cache", cache, "--out", run, "--preset", "small", "--train-rows", size, "--seed", seed, *resume,
       *(["--epochs", epochs] if epochs else []), *extra)
    return time.perf_counter() - t0


def predictions(run: Path, cache: Path, which: str, split: str, tta: str | None = None) -> dict:
    import torch

    from mf2.evaluation.cache_predictions import predict_split
    from mf2.features.reader import CacheReader
    from mf2.features import schema
    from mf2.runs import RunFolder, load_model

    model, _, ckpt = load_model(run, "cpu", which)
    thresholds = RunFolder.checkpoint_state(ckpt).get("au_thresholds")  # chosen on val with the epoch
    reader = CacheReader(cache, split, model.cfg.emo_text)
    emo, au, y_emo, y_au = predict_split(model, reader, torch.device("cpu"), tta=tta)
    videos = np.array([str(v) for v in reader.store.group[schema.VIDEO][:][reader.rows].tolist()], dtype=object)
    ids = [str(v) for v in reader.store.group[schema.IDS][:][reader.rows].tolist()]
    return {"emotion": emo, "aus": au, "y_emotion": y_emo, "y_aus": y_au, "videos": videos, "checkpoint": ckpt.name,
            "ids": ids,
            "thresholds": np.asarray(thresholds if thresholds else [0.5] * au.shape[1])}


def _check_mirrored(cache: Path) -> None:
    from mf2.features import schema
    from mf2.features.store import FeatureStore

    if schema.flipped(schema.TOKENS) not in FeatureStore.open(cache).group:
        raise SystemExit(f"--tta flip: {cache} holds no mirrored views (extract it with --augment flip, or pass "
                         "--augment flip when this script builds the cache)")


def minus_beside(work: Path, size: int, seeds: int, scored: str, split: str, model_stack: list, resamples: int) -> dict:
    """This setting's runs − the same sizes' and seeds' runs in ``work`` (each scored on its own
    cache, whose scored images must be these), all seeds pooled and paired image by image: at 0.5
    and at each run's AU thresholds chosen on val. The other runs are scored as trained, without
    test-time views (this setting's ``--tta`` is part of what is measured against them)."""
    from mf2.evaluation.metrics import au_f1, emotion_scores, paired_bootstrap
    from mf2.runs import RunFolder

    other = []
    for seed in range(seeds):
        run = work / "runs" / f"n{size}_seed{seed}"
        if not RunFolder(run).exists() or RunFolder(run).best_checkpoint() is None:
            raise SystemExit(f"--beside: {run} is not a trained run (train it with the same sizes and seeds first)")
        o = predictions(run, Path(RunFolder(run).config()["cache"]), scored, split)
        if o["ids"] != model_stack[seed]["ids"]:
            raise SystemExit(f"--beside: {run}'s cache scores other {split} images; paired differences need the same")
        other.append(o)
    cat = lambda stack, key: np.concatenate([m[key] for m in stack])  # noqa: E731
    mine, theirs = (cat(model_stack, "emotion"), cat(model_stack, "aus")), (cat(other, "emotion"), cat(other, "aus"))
    labels, videos = (cat(model_stack, "y_emotion"), cat(model_stack, "y_aus")), cat(model_stack, "videos")
    on = lambda stack: np.concatenate([m["aus"] >= m["thresholds"] for m in stack])  # noqa: E731
    return {"work": str(work), "beside_au_f1": [au_f1(o["aus"], o["y_aus"])["mean"] for o in other],
            "beside_emotion_mean_acc": [emotion_scores(o["emotion"], o["y_emotion"])["mean_accuracy"] for o in other],
            "paired": paired_bootstrap(mine, theirs, labels, videos, resamples),
            "paired_tuned": paired_bootstrap((mine[0], on(model_stack)), (theirs[0], on(other)), labels, videos, resamples),
            "beside_per_au": au_f1(theirs[1], labels[1])["per_au"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, help="An existing feature store (default: build one in --work).")
    parser.add_argument("--preset", choices=["default", "hard"], default="default",
                        help="The SynthFACS preset to render when there is no --cache (hard: SynthFACS-hard).")
    parser.add_argument("--images", type=int, default=None,
                        help="SynthFACS faces to render when there is no --cache [default 4000; hard 1400].")
    parser.add_argument("--augment", choices=["none", "flip", "auto"], default="none",
                        help="extract-features --augment for the cache it builds (flip: mirrored views, for --tta flip).")
    parser.add_argument("--sizes", default="200,800,3200", help="Training subset sizes, comma-separated.")
    parser.add_argument("--epochs", type=int, default=None, help="Pretraining epochs [default: pretrain's, 30].")
    parser.add_argument("--tiny", action="store_true",
                        help="A tiny run (48 hard faces, size 16, one seed, one epoch): the script end to end.")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds per size (subset draw and initialisation).")
    parser.add_argument("--work", type=Path, default=Path("small-data-work"), help="Where data and runs go.")
    parser.add_argument("--bootstrap", type=int, default=1000, help="Resamples of the val videos for the intervals.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/small_data-cpu")
    parser.add_argument("--pretrain-args", default="",
                        help="More mf2 pretrain arguments for every run (quoted, e.g. '--head-mixup 0.2'): a setting "
                             "measured against the defaults' runs with --beside. Recorded in --work; a --work whose "
                             "runs had other arguments is refused.")
    parser.add_argument("--tta", choices=["none", "flip"], default="none",
                        help="Test-time views for MF²'s predictions (flip: the mirrored view averaged in, as evaluate "
                             "--tta flip; the cache needs --augment flip). The probes read the original views.")
    parser.add_argument("--beside", type=Path, default=None,
                        help="Another --work folder whose runs (same sizes and seeds, on a cache of the same scored "
                             "images: another setting, map or region table) are scored beside: this − that, paired.")
    args = parser.parse_args(argv)
    args.tta = None if args.tta == "none" else args.tta
    if args.seeds < 1 or args.bootstrap < 1:
        parser.error("--seeds and --bootstrap: expected at least 1")
    if args.tiny:
        args.preset, args.images, args.sizes, args.seeds, args.epochs = "hard", 48, "16", 1, 1
        args.bootstrap = min(args.bootstrap, 50)

    from mf2.evaluation.evaluate import SELECTION_SPLIT, resolve_split
    from mf2.evaluation.metrics import au_f1, emotion_scores, paired_bootstrap
    from mf2.data.labels import AUS
    from mf2.evaluation.probe import au_region_probe, pooled_feature_probe
    from mf2.features.reader import CacheReader

    args.work.mkdir(parents=True, exist_ok=True)
    extra = tuple(shlex.split(args.pretrain_args))
    recorded = args.work / "pretrain_args.json"
    if recorded.exists() and tuple(json.loads(recorded.read_text())) != extra:
        raise SystemExit(f"--work {args.work}: its runs were trained with pretrain arguments "
                         f"{json.loads(recorded.read_text())!r}, not {list(extra)!r}: use another --work")
    recorded.write_text(json.dumps(list(extra)) + "\n")
    images = args.images or (1400 if args.preset == "hard" else 4000)
    cache = args.cache or build_cache(args.work, images, args.preset, args.augment)
    if args.tta == "flip":  # refused before anything is trained
        _check_mirrored(cache)
    split = resolve_split(cache)  # test when the cache holds one
    scored = "best" if split != SELECTION_SPLIT else "latest"
    n_train = len(CacheReader(cache, "train"))
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for size in sizes:
        if size > n_train:
            print(f"size {size}: the cache has only {n_train} training rows; skipped", flush=True)
            continue
        model_stack, probe_stack, per_seed, tuned_stack = [], [], [], []
        for seed in range(args.seeds):
            run = args.work / "runs" / f"n{size}_seed{seed}"
            seconds = train(cache, run, size, seed, args.epochs, extra)
            last, other = predictions(run, cache, scored, split, args.tta), \
                predictions(run, cache, "latest" if scored == "best" else "best", split, args.tta)
            # the probe's AU thresholds tuned on val as the run's are (on a cache without a test
            # split, val is what is scored: no tuned figures then, they would read their own labels)
            tuned = split != SELECTION_SPLIT
            probe = pooled_feature_probe(cache, split, train_rows=size, seed=seed, predictions=True,
                                         thresholds_from=SELECTION_SPLIT if tuned else None)
            regions = au_region_probe(cache, split, train_rows=size, seed=seed)
            m_au_all = au_f1(last["aus"], last["y_aus"])
            m_au, m_emo = m_au_all["mean"], emotion_scores(last["emotion"], last["y_emotion"])["mean_accuracy"]
            per_seed.append({"seed": seed, "train_seconds": round(seconds, 1), "checkpoint": last["checkpoint"],
                             "model_au_f1": m_au, "model_emotion_mean_acc": m_emo, "model_per_au": m_au_all["per_au"],
                             f"{'last' if scored == 'best' else 'best'}_epoch_au_f1": au_f1(other["aus"], other["y_aus"])["mean"],
                             f"{'last' if scored == 'best' else 'best'}_epoch_emotion_mean_acc":
                                 emotion_scores(other["emotion"], other["y_emotion"])["mean_accuracy"],
                             "probe_au_f1": probe["au"]["mean"], "probe_emotion_mean_acc": probe["emotion"]["mean_accuracy"],
                             "probe_per_au": probe["au"]["per_au"], "region_probe_au_f1": regions["au"]["mean"],
                             "region_probe_per_au": regions["au"]["per_au"],
                             **({"model_au_f1_tuned": au_f1(last["aus"], last["y_aus"], last["thresholds"])["mean"],
                                 "probe_au_f1_tuned": probe["au_tuned"]["mean"]} if tuned else {})})
            if tuned:
                probe_thresholds = np.array([probe["au_tuned"]["thresholds"][a] for a in AUS])
                tuned_stack.append((last["aus"] >= last["thresholds"], probe["au_probs"] >= probe_thresholds))
            print(f"size {size} seed {seed}: MF² AU F1 {m_au:.3f} emotion {m_emo:.3f} | probe AU F1 "
                  f"{probe['au']['mean']:.3f} emotion {probe['emotion']['mean_accuracy']:.3f} ({seconds:.0f} s)", flush=True)
            model_stack.append(last)
            probe_stack.append((probe["emotion_probs"], probe["au_probs"]))
        cat = lambda key: np.concatenate([m[key] for m in model_stack])  # noqa: E731
        paired = paired_bootstrap((cat("emotion"), cat("aus")),
                                  (np.concatenate([p[0] for p in probe_stack]), np.concatenate([p[1] for p in probe_stack])),
                                  (cat("y_emotion"), cat("y_aus")), cat("videos"), args.bootstrap)
        pooled_au = au_f1(cat("aus"), cat("y_aus"))["per_au"]
        pooled_probe = au_f1(np.concatenate([p[1] for p in probe_stack]), cat("y_aus"))["per_au"]
        rows.append({"train_images": size, "seeds": args.seeds, "scored_images": int(len(model_stack[0]["y_emotion"])),
                     "per_seed": per_seed, "model_minus_probe": paired,
                     "per_au_seeds_pooled": {"model": pooled_au, "probe": pooled_probe}})
        if args.beside is not None:
            rows[-1]["minus_beside"] = minus_beside(args.beside, size, args.seeds, scored, split, model_stack,
                                                    args.bootstrap)
        if tuned_stack:  # the same, each at its AU thresholds chosen on val
            model_on, probe_on = (np.concatenate([t[i] for t in tuned_stack]) for i in (0, 1))
            rows[-1]["model_minus_probe_tuned"] = paired_bootstrap(
                (cat("emotion"), model_on), (np.concatenate([p[0] for p in probe_stack]), probe_on),
                (cat("y_emotion"), cat("y_aus")), cat("videos"), args.bootstrap)
            rows[-1]["per_au_tuned_seeds_pooled"] = {"model": au_f1(model_on, cat("y_aus"))["per_au"],
                                                     "probe": au_f1(probe_on, cat("y_aus"))["per_au"]}
    epochs = args.epochs or 30
    from mf2.runs import RunFolder  # the weighting the runs trained with, as they recorded it
    weighting = RunFolder(args.work / "runs" / f"n{rows[0]['train_images']}_seed0").config()["train"]["au_weighting"] \
        if rows else "frequency"
    result = {**({"beside": str(args.beside)} if args.beside is not None else {}),"cache": str(cache), "train_rows_in_cache": n_train, "split": split, "checkpoint": scored,
              "pretrain_args": list(extra),
              "settings": f"mf2 pretrain --preset small{' ' + shlex.join(extra) if extra else ''}, every other setting at "
                          f"its default (auto lr and warm-up, AU {weighting} weighting, {epochs} epochs); scored on {split} at the {'best epoch (chosen on val)' if scored == 'best' else 'last epoch'}"
                          + (f", MF² with --tta {args.tta} (the probes on the original views)" if args.tta else ""),
              "tta": args.tta,
              "real_faces": REAL_FACES, "sizes": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # --out names a stem: '.json' and '.md' are added to it (a dot in it is part of the name)
    (args.out.parent / f"{args.out.name}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (args.out.parent / f"{args.out.name}.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    from mf2.data.labels import AUS

    def mean(row, key):
        return np.mean([s[key] for s in row["per_seed"]])

    def spread(row, key):
        values = [s[key] for s in row["per_seed"]]
        return f"{np.mean(values):.3f} [{min(values):.3f}, {max(values):.3f}]"

    split = result.get("split", "val")
    other = "last" if result.get("checkpoint") == "best" else "best"
    lines = ["# Small data: MF² (" + (f"`{shlex.join(result['pretrain_args'])}`" if result.get("pretrain_args")
                                      else "offline defaults") + ") vs the linear probe, SynthFACS", "",
             f"Cache: `{result['cache']}` ({result['train_rows_in_cache']} training rows); {result['settings']}.",
             f"Each cell: mean over seeds [min, max]. Δ: MF² − probe on the same {split} images, all seeds pooled, "
             f"95% interval from resampling {split} videos. The probe reads the pooled global token; the AU-region "
             "probe fits each AU on its own pooled region (what the AU features hold before training).", "",
             "| train images | seeds | MF² AU F1 | probe AU F1 | Δ AU F1 [95%] | MF² emotion acc | probe emotion acc "
             f"| Δ emotion acc [95%] | MF² {other} epoch: AU F1 / emotion | AU-region probe AU F1 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["sizes"]:
        d_au, d_emo = row["model_minus_probe"]["au_mean_f1"], row["model_minus_probe"]["emotion_mean_accuracy"]
        lines.append(f"| {row['train_images']} | {row['seeds']} | {spread(row, 'model_au_f1')} | "
                     f"{spread(row, 'probe_au_f1')} | {d_au['diff']:+.3f} [{d_au['low']:+.3f}, {d_au['high']:+.3f}] | "
                     f"{spread(row, 'model_emotion_mean_acc')} | {spread(row, 'probe_emotion_mean_acc')} | "
                     f"{d_emo['diff']:+.3f} [{d_emo['low']:+.3f}, {d_emo['high']:+.3f}] | "
                     f"{mean(row, f'{other}_epoch_au_f1'):.3f} / {mean(row, f'{other}_epoch_emotion_mean_acc'):.3f} | "
                     + (spread(row, "region_probe_au_f1") if "region_probe_au_f1" in row["per_seed"][0] else "–") + " |")
    if result["sizes"] and "per_au_seeds_pooled" in result["sizes"][0]:
        lines += ["", f"Per-AU F1 on {split} (all seeds' predictions pooled), MF² / probe:", "",
                  "| train images | " + " | ".join(AUS) + " |", "|---|" + "---|" * len(AUS)]
        for row in result["sizes"]:
            p = row["per_au_seeds_pooled"]
            lines.append(f"| {row['train_images']} | " + " | ".join(
                f"{100 * p['model'][a]:.1f} / {100 * p['probe'][a]:.1f}" for a in AUS) + " |")
    if result["sizes"] and "model_minus_probe_tuned" in result["sizes"][0]:
        lines += ["", f"AU F1 on {split} at each AU's threshold chosen on val (the run's own, kept with its checkpoint: "
                  "what `mf2 predict` and `active_aus()` decide with; the probe's tuned on val the same way), MF² / "
                  "probe; Δ as above:", "",
                  "| train images | MF² AU F1 | probe AU F1 | Δ AU F1 [95%] | " + " | ".join(AUS) + " |",
                  "|---|---|---|---|" + "---|" * len(AUS)]
        for row in result["sizes"]:
            d, p = row["model_minus_probe_tuned"]["au_mean_f1"], row["per_au_tuned_seeds_pooled"]
            lines.append(f"| {row['train_images']} | {spread(row, 'model_au_f1_tuned')} | {spread(row, 'probe_au_f1_tuned')}"
                         f" | {d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | " + " | ".join(
                             f"{100 * p['model'][a]:.1f} / {100 * p['probe'][a]:.1f}" for a in AUS) + " |")
    if result["sizes"] and "minus_beside" in result["sizes"][0]:
        lines += ["", f"This setting − the runs of `{result['beside']}` (same sizes, seeds and {split} images; paired, all "
                  f"seeds pooled, 95% interval from resampling {split} videos):", "",
                  "| train images | their AU F1 | Δ AU F1 [95%] | Δ AU F1 at val-chosen thresholds [95%] | their emotion acc "
                  "| Δ emotion acc [95%] |", "|---|---|---|---|---|---|"]
        for row in result["sizes"]:
            b = row["minus_beside"]
            f = lambda d: f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"  # noqa: E731
            lines.append(f"| {row['train_images']} | {np.mean(b['beside_au_f1']):.3f} | {f(b['paired']['au_mean_f1'])} | "
                         f"{f(b['paired_tuned']['au_mean_f1'])} | {np.mean(b['beside_emotion_mean_acc']):.3f} | "
                         f"{f(b['paired']['emotion_mean_accuracy'])} |")
    real = result.get("real_faces")
    if real and result["sizes"]:
        m, p = real["model"], real["probe"]
        lines += ["", f"Gap to the probe, in points, beside the real-face report ({real['source']}):", "",
                  "| data | AU mean F1: model − probe | emotion mean accuracy: model − probe |", "|---|---|---|",
                  f"| real posed faces, MF² + DFN defaults | {m['au_mean_f1'] - p['au_mean_f1']:+.1f} | "
                  f"{m['emotion_mean_recall'] - p['emotion_mean_recall']:+.1f} |"]
        for row in result["sizes"]:
            d = row["model_minus_probe"]
            lines.append(f"| this cache, {row['train_images']} training images | "
                         f"{100 * d['au_mean_f1']['diff']:+.1f} [{100 * d['au_mean_f1']['low']:+.1f}, "
                         f"{100 * d['au_mean_f1']['high']:+.1f}] | {100 * d['emotion_mean_accuracy']['diff']:+.1f} "
                         f"[{100 * d['emotion_mean_accuracy']['low']:+.1f}, {100 * d['emotion_mean_accuracy']['high']:+.1f}] |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
