"""Explanations measured like a captioning model (issue 24): the documented SynthFACS pipeline's
models, each explained by both decoders -- grounded in the heads (the default) and the ITG
decoder alone -- with the heads' own scores beside.

    python benchmarks/explain.py [--work DIR] [--images 1200] [--schedules 30,5] [--explain 100]
                                 [--decoding greedy] [--tiny]

* The pipeline: the README's "Defaults that learn at every size" commands in ``--work``
  (``mf2 synth --n IMAGES``, ``build-dataset``, ``caption``, ``extract-features``, then per
  schedule E ``pretrain --preset small --epochs E`` and ``finetune --dfn --epochs E``; 30 is
  the default schedule). Every step resumes: what is on disk is reused, not rebuilt.
* Each run (MF² and MF² + DFN of each schedule): ``mf2 evaluate --explain N`` on val, i.e. the
  heads' val AU mean F1 (0.5) and emotion mean accuracy, and per decoder the consistency with
  the heads, per-AU sentence correctness, sentences with a repeated 3-gram, BLEU-4, ROUGE-L and
  CIDEr-D against the split's own captions (pycocoevalcap), and explanations per second.
* The heads do not change: their scores are taken again with explanations decoded between
  the two passes, and beside the score the run logged for its checkpoint's epoch in training.
* ``--tiny``: 64 faces, 1 + 1 epoch, 8 explanations (the tests run it; its figures mean nothing).

Writes benchmarks/results/explain-synthfacs-<device>.{json,md} (``--tiny``: explain-tiny-*).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, table  # noqa: E402

import torch  # noqa: E402


def sh(*args, cwd) -> str:
    cmd = [sys.executable, "-m", "mf2.cli.main", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if done.returncode:
        raise SystemExit(f"mf2 {' '.join(map(str, args))} failed:\n{done.stderr[-2000:]}")
    return done.stdout + done.stderr


def pipeline(work: Path, images: int, schedules: list[int], tiny: bool) -> tuple[Path, list[tuple[str, Path]]]:
    """The README's commands in ``work`` (each skipped when its output is complete): the cache
    and [(name, run folder)] in the order evaluated."""
    from mf2.runs import RunFolder

    synth, mfa, cache = work / "synthfacs", work / "mfa", work / "mfa/features.zarr"
    if not (synth / "manifest.jsonl").is_file():
        sh("synth", "--n", images, "--seed", 0, "--out", synth, *(["--images-per-video", 4, "--no-baseline"] * tiny),
           cwd=work)
    if not (mfa / "manifest.jsonl").is_file():
        sh("build-dataset", "--manifest", synth / "manifest.jsonl", "--out", mfa, cwd=work)
    if not (mfa / "manifest.captioned.jsonl").is_file():
        sh("caption", "--manifest", mfa / "manifest.jsonl", cwd=work)
    sh("extract-features", "--manifest", mfa / "manifest.captioned.jsonl", "--out", cache, cwd=work)  # resumes
    small = ["--batch-size", 16] if tiny else []
    runs = []
    for epochs in schedules:
        mf2, dfn = work / f"mf2-e{epochs}", work / f"dfn-e{epochs}"
        for out, args in ((mf2, ["pretrain", "--cache", cache, "--out", mf2, "--preset", "small"]),
                          (dfn, ["finetune", "--dfn", "--from", mf2, "--cache", cache, "--out", dfn])):
            if not _finished(out, epochs):
                t0 = time.perf_counter()
                sh(*args, "--epochs", epochs, *small, "--overwrite", cwd=work)
                print(f"{out.name}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
        unit = "epoch" if epochs == 1 else "epochs"
        runs += [(f"MF², {epochs} {unit}", mf2), (f"MF² + DFN, {epochs} + {epochs} {unit}", dfn)]
    assert all(RunFolder(r).latest_checkpoint() for _, r in runs)
    return cache, runs


def _finished(run: Path, epochs: int) -> bool:
    from mf2.runs import RunFolder

    try:
        rows = RunFolder(run).log_rows()
    except Exception:  # no run there yet
        return False
    return bool(rows) and rows[-1].get("epoch") == epochs


def logged(run: Path, checkpoint: str) -> dict:
    """The validation scores the run logged at its evaluated checkpoint's epoch."""
    from mf2.runs import RunFolder

    epoch = RunFolder.checkpoint_state(Path(checkpoint)).get("epoch", -1) + 1  # the state counts from 0, the log from 1
    row = next((r for r in RunFolder(run).log_rows() if r.get("epoch") == epoch), {})
    return {"epoch": epoch, "au_f1": row.get("val_au_f1"), "emotion_mean_acc": row.get("val_emotion_mean_acc")}


def measure(name: str, run: Path, cache: Path, n: int, decoding: str, device: str, out: Path) -> dict:
    from mf2.evaluation.evaluate import evaluate
    from mf2.evaluation.cache_predictions import open_run, run_predictions

    result = evaluate(run, cache, "val", device, explain=n, decoding=decoding, bootstrap=0, folder=out, precision="fp32")
    again = run_predictions(run, cache, "val", device, "fp32", open_run(run, cache, "val", device))
    heads = {"au_f1": result["au"]["mean"], "emotion_mean_acc": result["emotion"]["mean_accuracy"]}
    unchanged = again["au"]["mean"] == heads["au_f1"] and again["emo"]["mean_accuracy"] == heads["emotion_mean_acc"]
    return {"run": name, "folder": str(run), "heads": heads, "heads_unchanged_by_explaining": unchanged,
            "logged": logged(run, result["checkpoint"]), "explanations": result["explanations"]}


def rows_of(measured: list[dict]) -> list[dict]:
    rows = []
    for m in measured:
        for g, d in m["explanations"]["decoders"].items():
            rows.append({"run": m["run"], "decoder": {"heads": "grounded (heads)", "none": "decoder alone"}[g],
                         "AU F1": m["heads"]["au_f1"], "emotion acc.": m["heads"]["emotion_mean_acc"],
                         "consistent": d["consistent"], "emotion named": d["emotion"], "only active AUs": d["cues"],
                         "no active AU at rest": d["au_sentences"],
                         "AU sentences correct": d["au_sentences_correct"], "repeated 3-grams": d["repeated_ngrams"],
                         "BLEU-4": d["bleu4"], "ROUGE-L": d["rouge_l"], "CIDEr": d["cider"],
                         "explanations/s": d["explanations_per_s"]})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="pipeline folder (reused; default: a temporary folder)")
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--schedules", default="30,5", help="epochs of pretraining and of DFN fine-tuning, per run pair")
    parser.add_argument("--explain", type=int, default=100, help="val faces explained per run")
    parser.add_argument("--decoding", choices=["greedy", "beam"], default="greedy")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny", action="store_true", help="64 faces, 1 + 1 epoch, 8 explanations (for the tests)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    if args.tiny:
        args.images, args.schedules, args.explain = 64, "1", 8
    schedules = [int(s) for s in args.schedules.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        cache, runs = pipeline(work, args.images, schedules, args.tiny)
        measured = []
        for name, run in runs:
            t0 = time.perf_counter()
            measured.append(measure(name, run, cache, args.explain, args.decoding, args.device,
                                    work / "eval" / run.name))
            print(json.dumps({k: v for k, v in measured[-1].items() if k != "explanations"}),
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = rows_of(measured)
    tag = "tiny" if args.tiny else "synthfacs"
    result = {"machine": {**machine(torch.device(args.device)), "cores": os.cpu_count(),
                          "load_avg": round(os.getloadavg()[0], 2)},
              "pipeline": {"images": args.images, "schedules": schedules, "explained": args.explain,
                           "decoding": args.decoding}, "runs": measured}
    columns = list(rows[0])
    examples = [f"- {m['run']}, {g}: \"{m['explanations']['decoders'][g]['examples'][0]['text']}\" "
                f"(consistent: {m['explanations']['decoders'][g]['examples'][0]['consistent']})"
                for m in measured for g in m["explanations"]["decoders"]]
    md = "\n\n".join([
        f"# Explanations on SynthFACS ({args.images} faces; {args.explain} val faces explained per run, "
        f"{args.decoding} decoding; {args.device}, {os.cpu_count()} cores)",
        "Per run, the heads' val scores (AU mean F1 at 0.5, emotion mean accuracy) and per decoder: consistent "
        "with the heads (emotion named = the head's, AUs named ⊆ active, no active AU called at rest), each part, "
        "per-AU sentence correctness (the AU's own description of its state), sentences with a repeated word "
        "3-gram, BLEU-4 / ROUGE-L / CIDEr-D against the split's own captions (pycocoevalcap), explanations/s "
        "(decoding alone, on a shared machine: a lower bound).",
        table(rows, columns),
        "The heads: " + "; ".join(
            f"{m['run']}: AU F1 {m['heads']['au_f1']:.4f}, emotion {m['heads']['emotion_mean_acc']:.4f} "
            f"(logged at epoch {m['logged']['epoch']}: {m['logged']['au_f1']}, {m['logged']['emotion_mean_acc']}; "
            f"unchanged after explaining: {m['heads_unchanged_by_explaining']})" for m in measured) + ".",
        "First explanation of each:\n\n" + "\n".join(examples)])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"explain-{tag}-{args.device}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"explain-{tag}-{args.device}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
