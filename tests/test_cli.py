"""The ``mf2`` command: ``mf2 info`` reports the native build, and the package still works on
the reference path when the extension is switched off."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mf2.cli.main import main
from mf2.ops import _native


def test_info_reports_the_native_build():
    result = CliRunner().invoke(main, ["info", "--json"])
    assert result.exit_code == 0, result.output
    env = json.loads(result.output)
    assert env["native_extension"]["built"] == _native.available()
    assert env["cuda"]["compiled"] == _native.cuda_compiled()
    if env["cuda"]["compiled"]:
        assert env["cuda"]["architectures"] == ["sm_80", "sm_90"]
    text = CliRunner().invoke(main, ["info"]).output
    assert "native_extension:" in text and "active_path:" in text


def test_help_lists_the_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == {"quickstart", "synth", "build-dataset", "caption", "extract-features", "pretrain", "finetune",
                      "evaluate", "predict", "export", "info"}  # SPEC §2, and §13's mf2 export


def test_reference_path_when_native_is_disabled(tmp_path):
    """MF2_DISABLE_NATIVE=1: the ops run on the PyTorch reference and `mf2 info` says so."""
    code = (
        "import json, torch; from mf2.ops import au_region_pool, dfn_pathway, backend;"
        "out = au_region_pool(torch.randn(1, 2, 3, 3), torch.rand(1, 4, 2), 0.1);"
        "print(json.dumps({'shape': list(out.shape), 'active': backend()['active']}))"
    )
    env = {**os.environ, "MF2_DISABLE_NATIVE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"shape": [1, 4, 9, 2], "active": "reference"}
    proc = subprocess.run([sys.executable, "-m", "mf2.cli.main", "info"], env=env, capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "active_path: reference (PyTorch)" in proc.stdout and "disabled by MF2_DISABLE_NATIVE" in proc.stdout


def test_quickstart_runs_the_whole_pipeline(tmp_path):
    result = CliRunner().invoke(main, ["quickstart", "--out", str(tmp_path / "qs"), "--n", "96", "--epochs", "1",
                                       "--dfn-epochs", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "qs/summary.json").read_text())
    assert set(summary["seconds"]) == {"synth", "caption", "extract-features", "pretrain", "finetune", "evaluate",
                                       "predict"}
    report = tmp_path / "qs/report"
    assert {"tables.md", "metrics.json", "au_f1.png", "confusion.png", "curves.png", "commands.sh", "summary.json",
            "predictions-synthfacs.csv", "predictions-astronaut.json"} <= {p.name for p in report.iterdir()}
    assert len((report / "predictions-synthfacs.csv").read_text().splitlines()) == 5  # header + 4 images
    assert [f["status"] for f in summary["astronaut"]] == ["ok"] and summary["astronaut"][0]["explanation"]
    assert len(list((report / "annotated").iterdir())) == 5
    commands = (tmp_path / "qs/commands.sh").read_text().splitlines()
    assert commands[0].startswith("python -c ") and commands[1].startswith("mf2 synth --n 96")
    assert "quickstart done in" in result.output
    diff = summary["dfn_minus_pretrained"]["au_mean_f1"]
    assert diff["diff"] == pytest.approx(summary["dfn"]["au_mean_f1"] - summary["pretrained"]["au_mean_f1"])
    assert "DFN − MF² on the same val images (95% interval over" in result.output
