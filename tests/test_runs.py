"""The run folder (``mf2.runs``): one reader and writer of config, params, logs and checkpoints,
runs written before ``kind`` was recorded, and the guard every trainer passes."""

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from mf2.cli.main import main
from mf2.models.mf2 import MF2
from mf2.runs import RunError, RunFolder, load_model


def test_new_runs_record_their_kind(pretrained):
    run = RunFolder(pretrained / "run")
    saved = json.loads((run.path / "config.json").read_text())
    assert saved["kind"] == "mf2" and list(saved)[0] == "kind"
    assert run.params()["ours"]["mf2"] > 0
    rows = run.log_rows()
    assert [r["epoch"] for r in rows] == [1] and "val_au_f1" in rows[0]
    assert run.latest_checkpoint().name == "epoch_0000"


def test_a_run_written_without_kind_still_loads_and_evaluates(pretrained, tmp_path):
    """The layout of runs written before this release: MF² runs carried no ``kind``."""
    shutil.copytree(pretrained / "run", tmp_path / "old")
    config_path = tmp_path / "old/config.json"
    config = json.loads(config_path.read_text())
    del config["kind"]
    config_path.write_text(json.dumps(config, indent=2))
    model, loaded, ckpt = load_model(tmp_path / "old")
    assert isinstance(model, MF2) and loaded["kind"] == "mf2" and ckpt.name == "epoch_0000"
    fresh, _, _ = load_model(pretrained / "run")
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "old"), "--cache",
                                       str(pretrained / "f.zarr"), "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    assert RunFolder(tmp_path / "old").eval_metrics("val")["images"] > 0


def test_unknown_kind_and_missing_runs_are_one_line_errors(pretrained, tmp_path):
    with pytest.raises(RunError, match="not a run folder"):
        load_model(tmp_path)
    shutil.copytree(pretrained / "run", tmp_path / "odd")
    config = json.loads((tmp_path / "odd/config.json").read_text())
    (tmp_path / "odd/config.json").write_text(json.dumps({**config, "kind": "lora"}))
    with pytest.raises(RunError, match="unknown run kind 'lora'"):
        load_model(tmp_path / "odd")
    shutil.rmtree(tmp_path / "odd/checkpoints")
    (tmp_path / "odd/config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="no checkpoint yet"):
        load_model(tmp_path / "odd")


def test_the_guard_keeps_earlier_runs(tmp_path):
    run = RunFolder(tmp_path / "r")
    run.prepare(resume=False, overwrite=False)
    with pytest.raises(RunError, match="nothing to resume"):
        run.prepare(resume=True, overwrite=False)
    run.write_config("mf2", model={}, train={})
    with pytest.raises(RunError, match="holds an earlier run; pass --resume"):
        run.prepare(resume=False, overwrite=False)
    (run.path / "keep.txt").write_text("x")
    run.prepare(resume=True, overwrite=False)  # resuming touches nothing
    assert (run.path / "keep.txt").is_file()
    run.prepare(resume=False, overwrite=True)
    assert run.path.is_dir() and not (run.path / "keep.txt").exists()
    with pytest.raises(ValueError, match="kind"):
        run.write_config("other")
