"""Every script in benchmarks/ runs, in a tiny mode, as a user would type it (issue 21: the README's
``python benchmarks/epoch_time.py`` crashed at the landed head and no test ran it). The figures
of a tiny run mean nothing; what is checked is that the script runs to the end and writes its
results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args, cwd, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_epoch_time_runs_for_both_presets(preset, tmp_path):
    run_script("epoch_time.py", "--preset", preset, "--toy", "--steps", "1", "--out", tmp_path, cwd=tmp_path)
    result = json.loads((tmp_path / f"epoch_time-{preset}-cpu-toy.json").read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"MF2 pretraining", "MF2 (Fine-Tuning, DFN)", "w/o DFN", "w/o Emo-VL", "w/o AU-VL"}
    for row in rows.values():
        assert row["tt_min_epoch"] > 0 and row["it_min_epoch"] > 0 and row["tp"] > 0
    assert (tmp_path / f"epoch_time-{preset}-cpu-toy.md").read_text().startswith("# Table IV")
    if preset == "small":  # the cached-vs-uncached rows run the real frozen backbones
        assert len(result["cached_vs_uncached"]) == 3


def test_an_unresolved_learning_rate_is_refused_by_the_optimizer():
    import torch

    from mf2.training.loop import TrainConfig, make_optimizer

    with pytest.raises(ValueError, match="still 'auto'"):
        make_optimizer(torch.nn.Linear(2, 2), TrainConfig())
    make_optimizer(torch.nn.Linear(2, 2), TrainConfig().resolved("small", 10))


def test_small_data_runs_on_the_hard_preset_and_scores_the_test_split(tmp_path):
    """The tiny mode renders SynthFACS-hard (with its test split), trains, and scores the best epoch
    (chosen on val) on test beside the probe, per AU; then evaluate on that cache scores test too,
    says which split chose what, and --tta flip reports the run with and without the mirrored views."""
    run_script("small_data.py", "--tiny", "--work", tmp_path / "w", "--out", tmp_path / "sd", cwd=tmp_path, timeout=1500)
    result = json.loads((tmp_path / "sd.json").read_text())
    assert result["split"] == "test" and result["checkpoint"] == "best"
    row = result["sizes"][0]
    assert row["train_images"] == 16 and set(row["per_au_seeds_pooled"]["model"]) == {
        "AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26"}
    assert -1 <= row["model_minus_probe"]["au_mean_f1"]["diff"] <= 1
    assert 0 <= row["per_seed"][0]["region_probe_au_f1"] <= 1  # each AU's own region, probed
    md = (tmp_path / "sd.md").read_text()
    assert "on the same test images" in md and "real posed faces" in md and "Per-AU F1 on test" in md
    from mf2.cli.main import main

    run, cache = tmp_path / "w/runs/n16_seed0", tmp_path / "w/features.zarr"
    out = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(run), "--cache", str(cache), "--tta", "flip",
                                    "--bootstrap", "20"])
    assert out.exit_code == 0, out.output
    assert "Scored on the test split; the run's best epoch and its per-AU thresholds were chosen on the val split" \
        in out.output
    metrics = json.loads((run / "eval_test_tta_flip/metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["tta"] == "flip" and metrics["selection"]["best_epoch"] == "val"
    assert "n16_seed0 without --tta" in metrics["beside"]
    out = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(run), "--cache", str(cache), "--split", "val",
                                    "--bootstrap", "0"])
    assert out.exit_code == 0 and "optimistic" in out.output
