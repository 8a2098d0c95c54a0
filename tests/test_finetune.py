"""DFN fine-tuning: MF² stays bit-identical, the cached block outputs are the live frozen forward,
gate and λ behave as specified, --full trains everything, and evaluate reads DFN runs. The
``pretrained`` fixture (a small synth -> caption -> extract -> pretrain run) is in conftest."""

import json

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner
from safetensors.torch import load_file

from mf2.cli.main import main
from mf2.features.reader import CacheReader, to_device
from mf2.models.config import DFNConfig
from mf2.models.dfn import Pathway, vision_block_outputs
from mf2.runs import load_model


def _finetune(root, out, *extra):
    result = CliRunner().invoke(main, ["finetune", "--from", str(root / "run"), "--cache", str(root / "f.zarr"),
                                       "--out", str(out), "--epochs", "2", "--batch-size", "8", "--lr", "1e-3",
                                       "--warmup-steps", "5", *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_dfn_leaves_every_mf2_weight_bit_identical(pretrained, tmp_path):
    before = {k: v.clone() for k, v in load_file(str(pretrained / "run/checkpoints/epoch_0000/model.safetensors")).items()}
    output = _finetune(pretrained, tmp_path / "dfn", "--dfn")
    assert "trainable parameters: DFN" in output and "(paper 52.88M)" in output
    after = load_file(str(pretrained / "run/checkpoints/epoch_0000/model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    model, config, _ = load_model(tmp_path / "dfn")  # the DFN run's own model holds the same frozen MF²
    assert all(torch.equal(model.mf2.state_dict()[k], before[k]) for k in before)
    dfn_state = load_file(str(next((tmp_path / "dfn/checkpoints").glob("epoch_*")) / "model.safetensors"))
    # a DFN checkpoint holds the pathways and heads only, never MF²'s Q-Former
    assert any(k.startswith("emo_vision.w_down") for k in dfn_state) and not any("qformer" in k for k in dfn_state)
    assert config["kind"] == "dfn"
    ev = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "dfn"), "--cache", str(pretrained / "f.zarr")])
    assert ev.exit_code == 0, ev.output


def test_a_dfn_run_finds_its_base_run_after_the_folders_move(pretrained, tmp_path):
    import shutil

    _finetune(pretrained, tmp_path / "dfn", "--dfn", "--epochs", "1")
    assert json.loads((tmp_path / "dfn/config.json").read_text())["base_run"] == str((pretrained / "run").resolve())
    shutil.copytree(pretrained / "run", tmp_path / "moved/run")
    shutil.copytree(tmp_path / "dfn", tmp_path / "moved/dfn")
    config_path = tmp_path / "moved/dfn/config.json"
    config = json.loads(config_path.read_text())
    expected = load_model(tmp_path / "dfn")[0].mf2.state_dict()
    for saved in ("/gone/elsewhere/run", "run"):  # moved absolute path; an older run's relative one
        config_path.write_text(json.dumps({**config, "base_run": saved}))
        model = load_model(tmp_path / "moved/dfn")[0]
        assert all(torch.equal(model.mf2.state_dict()[k], v) for k, v in expected.items())
    shutil.rmtree(tmp_path / "moved/run")
    with pytest.raises(ValueError, match="base MF² run run is not there"):
        load_model(tmp_path / "moved/dfn")


def test_cached_block_outputs_equal_the_live_frozen_forward(pretrained, tmp_path):
    _finetune(pretrained, tmp_path / "dfn", "--dfn")
    cache = zarr.open_group(str(tmp_path / "dfn/dfn_cache.zarr"), mode="r")
    mf2, _, _ = load_model(pretrained / "run")
    reader = CacheReader(pretrained / "f.zarr", "val")
    batch = to_device(next(reader.batches(1000, shuffle=False, drop_last=False)), "cpu")  # float16 as stored -> float32
    live = vision_block_outputs(mf2, batch["tokens"], batch["au_tokens"])
    for key in ("emo_v_start", "emo_v_h", "au_v_start", "au_v_h"):
        np.testing.assert_allclose(cache[f"val/{key}"][:], getattr(live, key).numpy(), rtol=1e-5, atol=1e-5, err_msg=key)
    assert cache["val/emo_v_h"].shape[1] == mf2.cfg.layers  # one pooled output per MF² block


def test_gate_and_lambda_semantics():
    """λ = 0 and g = 0 reduce a pathway to the frozen outputs; g = 1 keeps the side state."""
    torch.manual_seed(0)
    p = Pathway(5, 8, 3, DFNConfig(lam=0.0))
    start, h = torch.randn(4, 5), torch.randn(3, 4, 8)
    with torch.no_grad():
        p.alpha.fill_(-float("inf"))
        assert torch.equal(p(start, h), h[-1])
        p.alpha.fill_(float("inf"))
        p.b_up.zero_()
        torch.testing.assert_close(p(start, h), p.start(start))


def test_block_selection_reading_of_the_papers_seven_layers():
    assert DFNConfig(blocks="all").block_indices(12) == list(range(12))
    assert DFNConfig(blocks=7).block_indices(12) == [0, 2, 4, 6, 7, 9, 11]
    assert DFNConfig(blocks=1).block_indices(12) == [11]
    with pytest.raises(ValueError, match="blocks: expected 'all' or 1..12"):
        DFNConfig(blocks=13).block_indices(12)


def test_full_finetuning_trains_every_weight(pretrained, tmp_path):
    output = _finetune(pretrained, tmp_path / "full", "--full")
    assert "trainable parameters: all of MF²" in output and "(paper w/o DFN: 373.4M)" in output
    before = load_file(str(pretrained / "run/checkpoints/epoch_0000/model.safetensors"))
    after = load_file(str(tmp_path / "full/checkpoints/epoch_0001/model.safetensors"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("qformer.layers" in k for k in changed) and any("head" in k for k in changed)
    assert json.loads((tmp_path / "full/config.json").read_text())["align"] is False


def test_dfn_resume_equals_a_straight_run(pretrained, tmp_path):
    from mf2.models.config import DFNConfig
    from mf2.training.finetune import finetune_dfn
    from mf2.training.loop import TrainConfig

    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-3, warmup_steps=5)
    quiet = lambda *_: None  # noqa: E731
    straight = finetune_dfn(pretrained / "run", pretrained / "f.zarr", tmp_path / "a", DFNConfig(), cfg, log=quiet)
    finetune_dfn(pretrained / "run", pretrained / "f.zarr", tmp_path / "b", DFNConfig(), cfg, log=quiet,
                 max_epochs_this_run=1)
    resumed = finetune_dfn(pretrained / "run", pretrained / "f.zarr", tmp_path / "b", DFNConfig(), cfg, log=quiet,
                           resume=True)
    for key in ("epoch", "step", "train_loss", "val_au_f1", "val_emotion_mean_acc"):
        assert straight[key] == resumed[key], key


def test_dfn_under_torchrun(pretrained, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun not installed")
    mf2_cmd = os.path.join(os.path.dirname(sys.executable), "mf2")
    env = {**os.environ, "MF2_DIST_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "--no-python", mf2_cmd, "finetune",
                             "--dfn", "--from", str(pretrained / "run"), "--cache", str(pretrained / "f.zarr"), "--out",
                             str(tmp_path / "ddp"), "--epochs", "1", "--batch-size", "4", "--warmup-steps", "5"],
                            env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "ddp/log.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["rank"] == 0 and "val_au_f1" in rows[0]
    assert result.stdout.count("trainable parameters: DFN") == 1  # rank 0 alone reports


def test_evaluate_beside_another_run_gives_table_v(pretrained, tmp_path):
    _finetune(pretrained, tmp_path / "dfn", "--dfn", "--tasks", "emotion")
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "dfn"), "--cache",
                                       str(pretrained / "f.zarr"), "--beside", str(pretrained / "run"), "--transition"])
    assert result.exit_code == 0, result.output
    assert "(cf. paper Table V)" in result.output and "| paper: MF2 (Intern-VL) | 80.07 |" in result.output
    assert "| **ours: dfn** |" in result.output and "| ours: run |" in result.output
    # the paired difference dfn − run on the same images, with its interval over the val videos
    metrics = json.loads((tmp_path / "dfn/eval_val/metrics.json").read_text())
    paired, ours, theirs = metrics["beside"]["run"]["paired"], metrics["emotion"], metrics["beside"]["run"]["emotion"]
    assert paired["emotion_mean_accuracy"]["diff"] == pytest.approx(ours["mean_accuracy"] - theirs["mean_accuracy"])
    assert paired["groups"] < paired["images"] and paired["resamples"] == 1000
    row = next(line for line in result.output.splitlines() if line.startswith("| run | "))
    assert row.endswith(f"| 1000 x {paired['groups']} videos |")
    quiet = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "dfn"), "--cache", str(pretrained / "f.zarr"),
                                      "--beside", str(pretrained / "run"), "--bootstrap", "0"])
    assert quiet.exit_code == 0 and "bootstrap interval" not in quiet.output
    (tmp_path / "a-file").write_text("")
    refused = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "dfn"), "--cache",
                                        str(pretrained / "f.zarr"), "--out", str(tmp_path / "a-file")])
    assert refused.exit_code == 2 and "is a file" in refused.output


@pytest.mark.parametrize("mode", ["--dfn", "--full"])
def test_finetune_takes_the_training_options_pretrain_has(pretrained, tmp_path, mode):
    """--weight-decay, --au-weighting (with --au-f1-target) and --train-rows (once pretrain's only)
    reach the run and act."""
    weighting = ["--au-weighting", "none"] if mode == "--dfn" else ["--au-weighting", "f1", "--au-f1-target", "0.8"]
    output = _finetune(pretrained, tmp_path / "r", mode, "--weight-decay", "0.01", *weighting,
                       "--train-rows", "16", "--seed", "2")
    config = json.loads((tmp_path / "r/config.json").read_text())
    assert config["train"]["weight_decay"] == 0.01 and config["train"]["au_weighting"] == weighting[1]
    assert config["train"]["train_rows"] == 16
    if mode == "--dfn":
        assert config["au_pos_weight"] == [1.0] * 12 and "AU loss: plain BCE" in output
    else:  # 2 / 0.8 - 1 for every AU
        assert config["au_pos_weight"] == [pytest.approx(1.5)] * 12 and config["train"]["au_f1_target"] == 0.8
        assert "AU loss: every AU's positives weigh 1.5" in output
    assert "2 epochs of 2 steps (batch 8)" in output  # 16 rows at batch 8
