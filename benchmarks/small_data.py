"""The small-data regime: MF² with the offline defaults on training subsets of a few hundred to
a few thousand SynthFACS faces, beside the linear probe on the same cache's pooled features.

    python benchmarks/small_data.py [--cache STORE | --images 4000] [--sizes 200,800,3200]
                                    [--seeds 3] [--work DIR] [--bootstrap 1000]

* Data: ``--cache`` reuses a feature store (``mf2 extract-features`` with its defaults);
  otherwise ``--images`` SynthFACS faces are rendered, captioned and extracted into ``--work``
  with the README's commands and their defaults.
* For each size and seed: ``mf2 pretrain --preset small --train-rows SIZE --seed SEED`` with
  every other setting at its default (auto learning rate and warm-up, AU weighting, 30
  epochs), on the same fixed val split; the linear probes are fitted on the same SIZE rows
  (``pooled_feature_probe(train_rows=SIZE, seed=SEED)``).
* Scored on val: AU mean F1 at 0.5 (the paper's tables) and emotion mean accuracy, of the
  run's *last* epoch: the best-epoch choice reads val, so scoring it on val would flatter the
  model against the probe (its best epoch is reported beside, marked).
* Intervals: model − probe on the same val images, all seeds pooled, with a 95% percentile
  interval from resampling val videos (``paired_bootstrap``; a video's frames are drawn with
  all its seeds), and the seeds' range.

Runs resume: a finished run is scored again, not retrained. Writes
benchmarks/results/small_data-cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
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


def build_cache(work: Path, images: int) -> Path:
    data, cache = work / "synth", work / "features.zarr"
    if not (data / "manifest.jsonl").exists():
        sh("synth", "--n", images, "--out", data, "--no-baseline")
    if not (data / "manifest.captioned.jsonl").exists():
        sh("caption", "--manifest", data / "manifest.jsonl")
    sh("extract-features", "--manifest", data / "manifest.captioned.jsonl", "--out", cache)  # resumes
    return cache


def train(cache: Path, run: Path, size: int, seed: int) -> float:
    """Pretrain (or find finished) one run; the seconds it took (0 when already done)."""
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
    sh("pretrain", "--cache", cache, "--out", run, "--preset", "small", "--train-rows", size, "--seed", seed, *resume)
    return time.perf_counter() - t0


def predictions(run: Path, cache: Path, which: str) -> dict:
    import torch

    from mf2.evaluation.predict import predict_split
    from mf2.features.reader import CacheReader
    from mf2.features import schema
    from mf2.runs import load_model

    model, _, ckpt = load_model(run, "cpu", which)
    reader = CacheReader(cache, "val", model.cfg.emo_text)
    emo, au, y_emo, y_au = predict_split(model, reader, torch.device("cpu"))
    videos = np.array([str(v) for v in reader.store.group[schema.VIDEO][:][reader.rows].tolist()], dtype=object)
    return {"emotion": emo, "aus": au, "y_emotion": y_emo, "y_aus": y_au, "videos": videos, "checkpoint": ckpt.name}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, help="An existing feature store (default: build one in --work).")
    parser.add_argument("--images", type=int, default=4000, help="SynthFACS faces to render when there is no --cache.")
    parser.add_argument("--sizes", default="200,800,3200", help="Training subset sizes, comma-separated.")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds per size (subset draw and initialisation).")
    parser.add_argument("--work", type=Path, default=Path("small-data-work"), help="Where data and runs go.")
    parser.add_argument("--bootstrap", type=int, default=1000, help="Resamples of the val videos for the intervals.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/small_data-cpu")
    args = parser.parse_args(argv)

    from mf2.evaluation.metrics import au_f1, emotion_scores, paired_bootstrap
    from mf2.evaluation.probe import pooled_feature_probe
    from mf2.features.reader import CacheReader

    args.work.mkdir(parents=True, exist_ok=True)
    cache = args.cache or build_cache(args.work, args.images)
    n_train = len(CacheReader(cache, "train"))
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for size in sizes:
        if size > n_train:
            print(f"size {size}: the cache has only {n_train} training rows; skipped", flush=True)
            continue
        model_stack, probe_stack, per_seed = [], [], []
        for seed in range(args.seeds):
            run = args.work / "runs" / f"n{size}_seed{seed}"
            seconds = train(cache, run, size, seed)
            last, best = predictions(run, cache, "latest"), predictions(run, cache, "best")
            probe = pooled_feature_probe(cache, "val", train_rows=size, seed=seed, predictions=True)
            m_au, m_emo = au_f1(last["aus"], last["y_aus"])["mean"], \
                emotion_scores(last["emotion"], last["y_emotion"])["mean_accuracy"]
            per_seed.append({"seed": seed, "train_seconds": round(seconds, 1),
                             "model_au_f1": m_au, "model_emotion_mean_acc": m_emo,
                             "best_epoch_au_f1": au_f1(best["aus"], best["y_aus"])["mean"],
                             "best_epoch_emotion_mean_acc": emotion_scores(best["emotion"], best["y_emotion"])["mean_accuracy"],
                             "probe_au_f1": probe["au"]["mean"], "probe_emotion_mean_acc": probe["emotion"]["mean_accuracy"]})
            print(f"size {size} seed {seed}: MF² AU F1 {m_au:.3f} emotion {m_emo:.3f} | probe AU F1 "
                  f"{probe['au']['mean']:.3f} emotion {probe['emotion']['mean_accuracy']:.3f} ({seconds:.0f} s)", flush=True)
            model_stack.append(last)
            probe_stack.append((probe["emotion_probs"], probe["au_probs"]))
        cat = lambda key: np.concatenate([m[key] for m in model_stack])  # noqa: E731
        paired = paired_bootstrap((cat("emotion"), cat("aus")),
                                  (np.concatenate([p[0] for p in probe_stack]), np.concatenate([p[1] for p in probe_stack])),
                                  (cat("y_emotion"), cat("y_aus")), cat("videos"), args.bootstrap)
        rows.append({"train_images": size, "seeds": args.seeds, "val_images": int(len(model_stack[0]["y_emotion"])),
                     "per_seed": per_seed, "model_minus_probe": paired})
    result = {"cache": str(cache), "train_rows_in_cache": n_train, "settings": "mf2 pretrain --preset small defaults "
              "(auto lr and warm-up, AU frequency weighting, 30 epochs); scored at the last epoch", "sizes": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    def mean(row, key):
        return np.mean([s[key] for s in row["per_seed"]])

    def spread(row, key):
        values = [s[key] for s in row["per_seed"]]
        return f"{np.mean(values):.3f} [{min(values):.3f}, {max(values):.3f}]"

    lines = ["# Small data: MF² (offline defaults) vs the linear probe, SynthFACS", "",
             f"Cache: `{result['cache']}` ({result['train_rows_in_cache']} training rows); {result['settings']}.",
             "Each cell: mean over seeds [min, max]. Δ: MF² − probe on the same val images, all seeds pooled, "
             "95% interval from resampling val videos.", "",
             "| train images | seeds | MF² AU F1 | probe AU F1 | Δ AU F1 [95%] | MF² emotion acc | probe emotion acc "
             "| Δ emotion acc [95%] | MF² best epoch (reads val): AU F1 / emotion |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in result["sizes"]:
        d_au, d_emo = row["model_minus_probe"]["au_mean_f1"], row["model_minus_probe"]["emotion_mean_accuracy"]
        lines.append(f"| {row['train_images']} | {row['seeds']} | {spread(row, 'model_au_f1')} | "
                     f"{spread(row, 'probe_au_f1')} | {d_au['diff']:+.3f} [{d_au['low']:+.3f}, {d_au['high']:+.3f}] | "
                     f"{spread(row, 'model_emotion_mean_acc')} | {spread(row, 'probe_emotion_mean_acc')} | "
                     f"{d_emo['diff']:+.3f} [{d_emo['low']:+.3f}, {d_emo['high']:+.3f}] | "
                     f"{mean(row, 'best_epoch_au_f1'):.3f} / {mean(row, 'best_epoch_emotion_mean_acc'):.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
