"""``mf2 quickstart``: the whole pipeline on built-in SynthFACS data, offline, on a CPU.

synth -> caption (template) -> extract-features -> pretrain -> finetune --dfn -> evaluate, into
one folder, with a report: the Table II/III-style tables of the pretrained and the DFN model
beside the paper's rows, the plots, and the equivalent commands (``commands.sh``).
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

from mf2.data.manifest import atomic_write_text


def quickstart(out, n: int = 1600, epochs: int = 6, dfn_epochs: int = 4, batch_size: int = 32, seed: int = 0,
               log=print) -> dict:
    from click.testing import CliRunner

    from mf2.cli.main import main

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data, cache, run, dfn = out / "synthfacs", out / "synthfacs/features.zarr", out / "mf2", out / "mf2-dfn"
    steps = [
        ["synth", "--n", str(n), "--size", "112", "--seed", str(seed), "--out", str(data)],
        ["caption", "--manifest", str(data / "manifest.jsonl")],
        ["extract-features", "--manifest", str(data / "manifest.jsonl"), "--out", str(cache)],
        ["pretrain", "--cache", str(cache), "--out", str(run), "--preset", "small", "--epochs", str(epochs),
         "--batch-size", str(batch_size), "--lr", "5e-4", "--warmup-steps", "50", "--seed", str(seed), "--overwrite"],
        ["finetune", "--dfn", "--from", str(run), "--cache", str(cache), "--out", str(dfn), "--epochs", str(dfn_epochs),
         "--batch-size", str(batch_size), "--lr", "1e-3", "--warmup-steps", "50", "--overwrite"],
        ["evaluate", "--checkpoint", str(dfn), "--cache", str(cache), "--beside", str(run), "--probe"],
    ]
    atomic_write_text(out / "commands.sh", "".join("mf2 " + shlex.join(s) + "\n" for s in steps))
    timings = {}
    runner = CliRunner()
    for step in steps:
        t0 = time.perf_counter()
        log(f"$ mf2 {shlex.join(step)}")
        result = runner.invoke(main, step, catch_exceptions=False)
        log(result.output.rstrip())
        if result.exit_code != 0:
            raise RuntimeError(f"quickstart: 'mf2 {step[0]}' failed: {result.output.strip().splitlines()[-1]}")
        timings[step[0]] = round(time.perf_counter() - t0, 1)
    metrics = json.loads((dfn / "eval_val/metrics.json").read_text())
    summary = {"folder": str(out), "seconds": timings, "dfn": {"au_mean_f1": metrics["au"]["mean"],
               "emotion_mean_accuracy": metrics["emotion"]["mean_accuracy"]},
               "pretrained": {"au_mean_f1": metrics["beside"][run.name]["au"]["mean"],
                              "emotion_mean_accuracy": metrics["beside"][run.name]["emotion"]["mean_accuracy"]},
               "report": str(dfn / "eval_val")}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
