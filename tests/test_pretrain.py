"""MF² pretraining: ITG causality, ITC by hand, masked labels, resume == straight run,
2-process torchrun with gathered negatives, checkpoints without pickle, and learning."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import load_file

from mf2.cli.main import main
from mf2.evaluation.metrics import au_f1, emotion_scores
from mf2.models.config import MF2Config
from mf2.models.mf2 import MF2
from mf2.models.qformer import BOS
from mf2.training.loop import TrainConfig
from mf2.training.pretrain import pretrain


def tiny_model(**kw):
    torch.manual_seed(0)
    cfg = MF2Config.from_preset("small", vision_dim=24, text_dim=16, vocab=[0, -1, -2] + list(range(3, 60)),
                                dropout=0.0, **kw)
    return MF2(cfg).eval()


def test_the_emotion_head_reads_the_au_sequences_only_when_told():
    """emotion_reads="global+au" (the default): emotion from Emo-VL's pooled queries beside each AU
    sequence's, in MF² and in DFN; "global" (every run saved before the field): Emo-VL alone."""
    from mf2.models.config import DFNConfig
    from mf2.models.dfn import DFN
    from mf2.models.outputs import BlockOutputs

    tokens, au_tokens = torch.randn(3, 5, 24), torch.randn(3, 12, 4, 24)
    moved = au_tokens.clone()
    moved[:, 4] = torch.randn(3, 4, 24)  # only AU7's region changes
    for reads, follows in (("global", False), ("global+au", True)):
        model = tiny_model(emotion_reads=reads)
        H = model.cfg.hidden
        assert model.emotion_head.in_features == (13 * H if follows else H) == model.cfg.emotion_input_dim()
        emotion, au = model.predict(tokens, au_tokens)
        emotion2, au2 = model.predict(tokens, moved)
        assert emotion.shape == (3, 8) and au.shape == (3, 12) and not torch.equal(au, au2)
        assert torch.equal(emotion, emotion2) is not follows
        dfn = DFN(model.cfg, DFNConfig())
        dfn.init_heads_from(model)
        x = BlockOutputs(emo_v_start=torch.randn(3, 24), emo_v_h=torch.randn(3, 2, H),
                         au_v_start=torch.randn(3, 12, 24), au_v_h=torch.randn(3, 12, 2, H))
        e, a, _ = dfn.heads(x)
        x.au_v_h = torch.randn_like(x.au_v_h)
        assert e.shape == (3, 8) and a.shape == (3, 12) and torch.equal(e, dfn.heads(x)[0]) is not follows
    from mf2.runs import model_config

    assert MF2Config().emotion_reads == "global+au"
    saved = {k: v for k, v in tiny_model().cfg.to_dict().items() if k != "emotion_reads"}
    assert model_config({"model": saved}).emotion_reads == "global"  # saved before the field: as trained
    assert tiny_model(emotion_reads="global+au", au_vl=False).emotion_head.in_features == 128  # ablation: no AUs
    with pytest.raises(ValueError, match="model.emotion_reads: expected global or global\\+au, got 'local'"):
        MF2Config(emotion_reads="local")


def test_itg_is_causal():
    """Changing a later token never changes the logits at earlier positions."""
    branch = tiny_model().emo_vl
    vision = torch.randn(2, 5, 128)
    ids = torch.randint(3, 60, (2, 9))
    ids[:, 0] = BOS
    mask = torch.ones(2, 9, dtype=torch.bool)
    base = branch.lm_head(branch.qformer.decode(vision, ids, mask))
    for t in range(1, 9):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 7) % 57 + 3
        out = branch.lm_head(branch.qformer.decode(vision, changed, mask))
        torch.testing.assert_close(out[:, :t], base[:, :t])
        assert not torch.allclose(out[:, t:], base[:, t:])


def test_itc_equals_a_direct_computation():
    model = tiny_model()
    branch = model.emo_vl
    B = 4
    tokens = torch.randn(B, 6, 24)
    states, mask = torch.randn(B, 7, 16), torch.ones(B, 7, dtype=torch.bool)
    ids = torch.stack([torch.arange(3, 10) + 5 * i for i in range(B)])  # four different texts
    vision, q = branch.image(tokens)
    losses, n = branch.losses(vision, q, states, mask, ids)
    img = F.normalize(branch.vision_proj(q), dim=-1)
    txt = F.normalize(branch.text_proj(branch.qformer.text(states, mask)[:, 0]), dim=-1)
    sim = torch.stack([torch.stack([(img[i] @ txt[j]).max() for j in range(B)]) for i in range(B)]) / branch.temp
    eps, target = 0.1, torch.arange(B)

    def smoothed(logits):
        logp = logits.log_softmax(1)
        return ((1 - eps) * -logp[target, target] + eps * -logp.mean(1)).mean()

    torch.testing.assert_close(losses["itc"], (smoothed(sim) + smoothed(sim.T)) / 2)
    assert n == B


def test_missing_labels_do_not_count():
    model = tiny_model()
    batch = {"tokens": torch.randn(3, 6, 24), "au_tokens": torch.randn(3, 12, 8, 24),
             "emotion": torch.tensor([2, -1, 5]), "aus": torch.randint(0, 2, (3, 12))}
    batch["aus"][1, 4] = -1
    out = model(batch)
    emo_logits, au_logits = out.emotion_logits, out.au_logits
    expected_emo = F.cross_entropy(emo_logits[[0, 2]], torch.tensor([2, 5]))
    keep = batch["aus"] >= 0
    expected_au = F.binary_cross_entropy_with_logits(au_logits[keep], batch["aus"][keep].float())
    torch.testing.assert_close(out.logs["emo_cls"], expected_emo)
    torch.testing.assert_close(out.logs["au_cls"], expected_au)
    # metrics: a -1 row or entry is the same as leaving it out
    y = np.array([[1, 0, -1] + [0] * 9, [1, 1, 1] + [0] * 9, [0, 1, 0] + [1] * 9])
    p = np.array([[1, 0, 1] + [0] * 9, [1, 0, 1] + [0] * 9, [0, 1, 1] + [1] * 9])
    assert au_f1(p, y)["per_au"]["AU4"] == au_f1(p[1:], y[1:])["per_au"]["AU4"]
    e = emotion_scores(np.array([0, 3, 3, 1]), np.array([0, -1, 3, 2]))
    assert json.dumps(e) == json.dumps(emotion_scores(np.array([0, 3, 1]), np.array([0, 3, 2])))  # NaN-safe


def test_head_regularisers_mix_labels_like_their_inputs_and_are_off_by_default():
    """Feature mixup mixes the heads' inputs and labels with the same partner and share (a
    partner without a label leaves a row's own); label smoothing is F.cross_entropy's; dropout acts
    only in training; with nothing asked, the losses are the plain ones."""
    from mf2.models.mf2 import HeadRegularisation, task_losses
    from mf2.training.loop import head_regularisation

    assert head_regularisation(TrainConfig()) is None
    torch.manual_seed(1)
    emo, au = torch.randn(4, 8), torch.randn(4, 12)
    y_emo, y_au = torch.tensor([1, 2, -1, 5]), torch.randint(0, 2, (4, 12))
    y_au[3, 2] = -1
    plain = task_losses(emo, au, y_emo, y_au)
    assert torch.equal(plain["emo_cls"], task_losses(emo, au, y_emo, y_au, emotion_smoothing=0.0, mix=None)["emo_cls"])
    smooth = task_losses(emo, au, y_emo, y_au, emotion_smoothing=0.1)["emo_cls"]
    torch.testing.assert_close(smooth, F.cross_entropy(emo[[0, 1, 3]], y_emo[[0, 1, 3]], label_smoothing=0.1))
    perm, share = torch.tensor([1, 0, 3, 2]), torch.tensor([0.3, 0.1, 0.2, 0.4])
    mixed = task_losses(emo, au, y_emo, y_au, mix=(perm, share))
    ce = F.cross_entropy(emo, y_emo.clamp(min=0), reduction="none")
    ce_p = F.cross_entropy(emo, y_emo.clamp(min=0)[perm], reduction="none")
    w = share * (y_emo[perm] >= 0)  # row 3's partner (row 2) has no emotion: row 3 keeps its own
    expected = (((1 - w) * ce + w * ce_p) * (y_emo >= 0)).sum() / 3
    torch.testing.assert_close(mixed["emo_cls"], expected)
    target = (1 - share[:, None] * (y_au[perm] >= 0)) * y_au.clamp(min=0) + \
        share[:, None] * (y_au[perm] >= 0) * y_au[perm].clamp(min=0)
    keep = y_au >= 0
    torch.testing.assert_close(mixed["au_cls"], F.binary_cross_entropy_with_logits(au[keep], target[keep]))
    # in the model: mixup draws from the generator, and evaluation never regularises
    model = tiny_model()
    batch = {"tokens": torch.randn(4, 6, 24), "au_tokens": torch.randn(4, 12, 8, 24), "emotion": y_emo, "aus": y_au}
    model.eval()  # no mixing, no dropout outside training
    reg = HeadRegularisation(dropout=0.5, mixup=0.4)
    assert torch.equal(model(batch, align=False, regularisation=reg).loss, model(batch, align=False).loss)
    model.train()
    a = model(batch, align=False, generator=torch.Generator().manual_seed(3), regularisation=HeadRegularisation(mixup=0.4))
    b = model(batch, align=False, generator=torch.Generator().manual_seed(3), regularisation=HeadRegularisation(mixup=0.4))
    torch.testing.assert_close(a.loss, b.loss)
    assert not torch.allclose(a.loss, model(batch, align=False).loss)
    with pytest.raises(ValueError, match="train.head_mixup"):
        TrainConfig(head_mixup=1.5)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    runner = CliRunner()
    for args in (["synth", "--n", "96", "--out", str(root / "d"), "--images-per-video", "4", "--no-baseline"],
                 ["caption", "--manifest", str(root / "d/manifest.jsonl")],
                 ["extract-features", "--manifest", str(root / "d/manifest.captioned.jsonl"), "--out", str(root / "f.zarr")]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
    return root / "f.zarr"


def _run(cache, out, **kw):
    cfg = TrainConfig(epochs=2, batch_size=8, lr=5e-4, warmup_steps=5, deterministic=True)
    return pretrain(cache, out, MF2Config.from_preset("small"), cfg, log=lambda *_: None, **kw)


def test_two_epochs_equal_one_plus_resume(cache, tmp_path):
    straight = _run(cache, tmp_path / "a")
    first = _run(cache, tmp_path / "b", max_epochs_this_run=1)
    assert first["epoch"] == 1
    resumed = _run(cache, tmp_path / "b", resume=True)
    for key in ("epoch", "step", "train_loss", "val_au_f1", "val_emotion_mean_acc"):
        assert straight[key] == resumed[key], key
    a = load_file(str(tmp_path / "a/checkpoints/epoch_0001/model.safetensors"))
    b = load_file(str(tmp_path / "b/checkpoints/epoch_0001/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logged = [json.loads(line) for line in (tmp_path / "b/log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1, 2]
    assert (tmp_path / "a/log.csv").read_text().splitlines()[0].startswith("epoch,")


def test_weight_average_is_the_debiased_ema_leaves_training_alone_and_resumes(cache, tmp_path):
    from mf2.training.averaging import RAW_PREFIX, WeightAverage, decay_for

    # the average by hand: sum_i d^(t-i) (1-d) w_i / (1 - d^t); the first step's is that step's weights
    lin = torch.nn.Linear(3, 2)
    lin.bias.requires_grad_(False)  # frozen weights are the model's own
    avg, d, seen = WeightAverage(lin, 0.8), 0.8, []
    for t in range(1, 6):
        with torch.no_grad():
            lin.weight.add_(torch.randn(2, 3))
        seen.append(lin.weight.detach().clone())
        avg.update()
        want = sum(d ** (t - i) * (1 - d) * w for i, w in enumerate(seen, 1)) / (1 - d ** t)
        torch.testing.assert_close(avg.shadow[0], want)
    assert avg.names == ["weight"] and abs(decay_for(2, 10) - np.exp(-1 / 20)) < 1e-12
    trained = lin.weight.detach().clone()
    with avg.applied():
        assert torch.equal(lin.weight, avg.shadow[0]) and torch.equal(avg.raw()[RAW_PREFIX + "weight"], trained)
    assert torch.equal(lin.weight, trained)

    # in a run: the trained weights are those of a run without the average, bit for bit; the
    # checkpoint's model is the average; a kill and --resume continues both exactly
    plain = _run(cache, tmp_path / "plain")
    cfg = dict(epochs=2, batch_size=8, lr=5e-4, warmup_steps=5, deterministic=True, average_epochs=1.0)
    run = lambda out, **kw: pretrain(cache, out, MF2Config.from_preset("small"), TrainConfig(**cfg),  # noqa: E731
                                     log=lambda *_: None, **kw)
    straight = run(tmp_path / "a")
    run(tmp_path / "b", max_epochs_this_run=1)
    resumed = run(tmp_path / "b", resume=True)
    assert straight["train_loss"] == plain["train_loss"]  # the average does not touch the training
    for key in ("epoch", "step", "train_loss", "val_au_f1", "val_emotion_mean_acc"):
        assert straight[key] == resumed[key], key
    last = lambda root, name: load_file(str(root / "checkpoints/epoch_0001" / name))  # noqa: E731
    p, a, b = last(tmp_path / "plain", "model.safetensors"), last(tmp_path / "a", "model.safetensors"), \
        last(tmp_path / "b", "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    raw = {k[len(RAW_PREFIX):]: v for k, v in last(tmp_path / "a", "optim.safetensors").items() if k.startswith(RAW_PREFIX)}
    assert raw and all(torch.equal(raw[k], p[k]) for k in raw)  # the trained weights beside it
    assert any(not torch.equal(a[k], p[k]) for k in raw)  # and the model is their average, not them
    state = json.loads((tmp_path / "a/checkpoints/epoch_0001/state.json").read_text())
    assert state["weight_average"]["updates"] == state["step"]
    # a run kept without an average cannot be resumed as one with it (one line, never other weights)
    config = json.loads((tmp_path / "plain/config.json").read_text())
    config["train"]["average_epochs"] = 1.0
    config["train"]["epochs"] = 3
    (tmp_path / "plain/config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="holds no trained weights beside the average"):
        _run(cache, tmp_path / "plain", resume=True)
    # runs written before the field kept the weights as trained
    from mf2.runs.migrate import migrate_config
    assert migrate_config({"train": {"epochs": 2}})["train"]["average_epochs"] == 0.0
    with pytest.raises(ValueError, match="train.average_epochs"):
        TrainConfig(average_epochs=-1)


def test_what_resuming_reads_is_checked_and_a_diverged_run_stops_unsaved(cache, tmp_path, monkeypatch):
    from mf2.training import loop
    from mf2.training.averaging import RAW_PREFIX, WeightAverage, decay_for

    lin = torch.nn.Linear(3, 2)
    good = {RAW_PREFIX + "weight": torch.zeros(2, 3), RAW_PREFIX + "bias": torch.zeros(2)}
    state = lambda **kw: {"weight_average": {"updates": 3, "decay": 0.5, **kw}}  # noqa: E731
    WeightAverage(lin, 0.5).restore(good, state(), "ckpt")  # fits
    for tensors, saved, message in [
            (good, state(updates=-1), "updates should be a count >= 0"),
            (good, state(updates=None), "updates should be a count >= 0"),
            (good, state(updates="x"), "updates should be a count >= 0"),
            (good, state(decay=0.9), "its steps per epoch changed"),
            ({**good, RAW_PREFIX + "bias": torch.zeros(2, dtype=torch.float16)}, state(), "float16"),
            ({**good, RAW_PREFIX + "weight": torch.full((2, 3), float("nan"))}, state(), "NaN or infinite")]:
        before = lin.weight.detach().clone()
        with pytest.raises(ValueError, match=message):
            WeightAverage(lin, 0.5).restore(tensors, saved, "ckpt")
        assert torch.equal(lin.weight, before)  # nothing half-restored
    with pytest.raises(ValueError, match="train.average_epochs: 1e.17 epochs of 10 steps is too long"):
        decay_for(1e17, 10)
    with pytest.raises(ValueError, match=r"train.average_epochs: expected .*got 1000000.*\.\.\.$"):
        TrainConfig(average_epochs=10 ** 400)  # too large for a float: refused, not an OverflowError

    # a loss that is not finite stops the run before anything of that epoch is written
    real = loop.train_epoch

    def diverging(*a, **k):
        step, stats = real(*a, **k)
        return step, {**stats, "train": {**stats["train"], "train_loss": float("nan")}}

    _run(cache, tmp_path / "d", max_epochs_this_run=1)
    # the AU loss's weights are computed again from the labels: other ones than the run's are refused
    config_file = tmp_path / "d/config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "au_pos_weight": [w + 1 for w in config["au_pos_weight"]]}))
    with pytest.raises(ValueError, match="the AU loss weights would be .* not the run's recorded"):
        _run(cache, tmp_path / "d", resume=True)
    config_file.write_text(json.dumps(config))
    monkeypatch.setattr(loop, "train_epoch", diverging)
    with pytest.raises(ValueError, match="training diverged in epoch 2 .*the last checkpoint is epoch_0000"):
        _run(cache, tmp_path / "d", resume=True)
    assert [p.name for p in (tmp_path / "d/checkpoints").glob("epoch_*")] == ["epoch_0000"]
    assert len((tmp_path / "d/log.jsonl").read_text().splitlines()) == 1
    # weights that are not finite are refused when read (predict, evaluate, export, resume)
    from mf2.io import save_tensors, write_checksums

    folder = tmp_path / "d/checkpoints/epoch_0000"
    tensors = load_file(str(folder / "model.safetensors"))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("inf"))
    save_tensors(tensors, folder / "model.safetensors")
    write_checksums(folder, ["model.safetensors", "optim.safetensors", "state.json"])
    from mf2.runs import load_model

    with pytest.raises(ValueError, match=f"tensor {name} holds NaN or infinite values"):
        load_model(tmp_path / "d", "cpu", "latest")


def test_run_folder_rules_and_paper_preset(cache, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["pretrain", "--cache", str(cache), "--out", str(tmp_path / "r"), "--epochs", "1",
                                  "--batch-size", "8", "--warmup-steps", "5"])
    assert result.exit_code == 0, result.output
    assert "trainable parameters: Emo-VL" in result.output and "(paper 186.7M)" in result.output
    again = runner.invoke(main, ["pretrain", "--cache", str(cache), "--out", str(tmp_path / "r")])
    assert again.exit_code == 1 and "holds an earlier run; pass --resume" in again.output
    config = json.loads((tmp_path / "r/config.json").read_text())
    assert config["train"]["weight_decay"] == 0.05 and config["model"]["temperature"] == 0.07
    ckpt = tmp_path / "r/checkpoints/epoch_0000"
    assert sorted(p.name for p in ckpt.iterdir()) == ["SHA256SUMS", "model.safetensors", "optim.safetensors", "state.json"]
    paper = runner.invoke(main, ["pretrain", "--preset", "paper", "--params-only"])
    assert paper.exit_code == 0 and "Emo-VL 162.1M (paper 186.7M)" in paper.output
    ev = runner.invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "r"), "--cache", str(cache)])
    assert ev.exit_code == 0, ev.output
    assert "| paper: MF2 (Pre-Train) | 50.17" in ev.output and "**ours: r**" in ev.output
    folder = tmp_path / "r/eval_val"
    assert {"metrics.json", "tables.md", "au_f1.png", "confusion.png", "curves.png"} <= {p.name for p in folder.iterdir()}


def test_ablation_switches_keep_both_tasks(cache, tmp_path):
    for flag, present in (("--no-emo-vl", "au_vl"), ("--no-au-vl", "emo_vl")):
        out = tmp_path / flag
        result = CliRunner().invoke(main, ["pretrain", "--cache", str(cache), "--out", str(out), "--epochs", "1",
                                           "--batch-size", "8", flag])
        assert result.exit_code == 0, result.output
        params = json.loads((out / "params.json").read_text())["ours"]
        assert params[present] > 0 and params[{"au_vl": "emo_vl", "emo_vl": "au_vl"}[present]] == 0
        row = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
        assert "val_au_f1" in row and "val_emotion_mean_acc" in row


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun not installed")
def test_torchrun_two_processes_gather_negatives(cache, tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    mf2_cmd = os.path.join(os.path.dirname(sys.executable), "mf2")
    env = {**os.environ, "MF2_DIST_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "--no-python", mf2_cmd, "pretrain",
                             "--cache", str(cache), "--out", str(tmp_path / "ddp"), "--epochs", "1", "--batch-size", "8",
                             "--warmup-steps", "5"], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads((tmp_path / "ddp/log.jsonl").read_text().splitlines()[-1])
    assert row["train_emo_itc_candidates"] == 16  # 8 per rank, gathered from both
    assert row["train_au_itc_candidates"] > 8 * 3  # AU sequences of both ranks
    assert json.loads((tmp_path / "ddp/config.json").read_text())["world_size"] == 2


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun not installed")
def test_torchrun_resume_continues_every_process_exactly_and_refuses_another_count(cache, tmp_path):
    """Each process seeds its own generators (dropout, ITM negatives), so a checkpoint keeps every
    process's random states and each resumes its own: two processes stopped after epoch 1 and
    resumed end bit-identical to two that ran straight; one process cannot resume their run."""
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    mf2_cmd = os.path.join(os.path.dirname(sys.executable), "mf2")
    env = {**os.environ, "MF2_DIST_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    args = ["--cache", str(cache), "--epochs", "2", "--batch-size", "8", "--warmup-steps", "5", "--average-epochs", "1"]
    two = [torchrun, "--standalone", "--nproc_per_node", "2"]
    straight = subprocess.run([*two, "--no-python", mf2_cmd, "pretrain", "--out", str(tmp_path / "a"), *args],
                              env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = tmp_path / "first_epoch.py"  # the same command, stopped after its first epoch (as a kill would)
    first.write_text("import sys\nfrom mf2.cli.main import main\nimport mf2.training.pretrain as p\n"
                     "train = p.train\np.train = lambda *a, **k: train(*a, **{**k, 'max_epochs_this_run': 1})\n"
                     "main(sys.argv[1:])\n")
    for command in ([*two, str(first), "pretrain", "--out", str(tmp_path / "b"), *args],
                    [*two, "--no-python", mf2_cmd, "pretrain", "--cache", str(cache), "--out", str(tmp_path / "b"),
                     "--resume"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    for name in ("model.safetensors", "optim.safetensors"):
        a, b = (load_file(str(tmp_path / r / "checkpoints/epoch_0001" / name)) for r in ("a", "b"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert any(k.startswith("rng::rank1:") for k in load_file(str(tmp_path / "a/checkpoints/epoch_0001/optim.safetensors")))
    rows = [json.loads((tmp_path / r / "log.jsonl").read_text().splitlines()[-1]) for r in ("a", "b")]
    assert rows[0]["train_loss"] == rows[1]["train_loss"] and rows[0]["val_au_f1"] == rows[1]["val_au_f1"]
    config = json.loads((tmp_path / "b/config.json").read_text())
    config["train"]["epochs"] = 3
    (tmp_path / "b/config.json").write_text(json.dumps(config))
    one = subprocess.run([mf2_cmd, "pretrain", "--cache", str(cache), "--out", str(tmp_path / "b"), "--resume"], env=env,
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert one.returncode != 0 and "written by a run of 2 processes, this is 1" in one.stderr + one.stdout
    assert "Traceback" not in one.stderr


def test_training_beats_chance_on_held_out_synthfacs(cache, tmp_path):
    cfg = TrainConfig(epochs=6, batch_size=8, lr=1e-3, warmup_steps=10)
    row = pretrain(cache, tmp_path / "learn", MF2Config.from_preset("small"), cfg, log=lambda *_: None)
    assert row["val_emotion_mean_acc"] > 0.25  # chance: 0.125


def test_same_seed_same_machine_same_run(cache, tmp_path):
    """Two separate processes, default settings: bit-identical weights and equal metrics (SPEC §10)."""
    for name in ("a", "b"):
        proc = subprocess.run([shutil.which("mf2") or "mf2", "pretrain", "--cache", str(cache), "--out", name,
                               "--epochs", "1", "--batch-size", "32", "--warmup-steps", "5"],
                              cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    a = load_file(str(tmp_path / "a/checkpoints/epoch_0000/model.safetensors"))
    b = load_file(str(tmp_path / "b/checkpoints/epoch_0000/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads((tmp_path / n / "log.jsonl").read_text()) for n in ("a", "b")]
    assert rows[0]["val_au_f1"] == rows[1]["val_au_f1"] and rows[0]["train_loss"] == rows[1]["train_loss"]
