"""The pretraining step of issue 26 (ITM reusing the image pass's cross-attention keys and
values, masks made once per pass, split instead of sliced query/text parts, duplicate texts
found without a host sync) computes what the step before it computed: the same losses and
gradients as the frozen copy of that step (benchmarks/baseline_step.py), for both presets'
code paths, with dropout off and the same ITM negatives, with and without recomputation, and
the parameter names unchanged (so checkpoints saved before load as they are)."""

import sys
from pathlib import Path

import pytest
import torch

from mf2.models.config import MF2Config
from mf2.models.mf2 import MF2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import epoch_time  # noqa: E402  (the benchmark's batch builder)
from baseline_step import BaselineMF2  # noqa: E402

# each preset's code path: 'small' as it is; 'paper' (all 12 AU sequences aligned, 32 queries)
# at two blocks of width 64 so that the test runs in seconds
CONFIGS = {"small": {}, "paper": dict(hidden=64, layers=2, heads=4, ffn=128)}


def _pair(preset, dtype, **kw):
    torch.manual_seed(0)
    shapes = epoch_time.SHAPES[preset]
    cfg = MF2Config.from_preset(preset, vision_dim=shapes["C"], text_dim=shapes["D"], dropout=0.0,
                                vocab=[0, -1, -2] + list(range(3, 2000)), **{**CONFIGS[preset], **kw})
    new = MF2(cfg).to(dtype)
    old = BaselineMF2(cfg).to(dtype)
    assert list(dict(new.named_parameters())) == list(dict(old.named_parameters()))
    old.load_state_dict(new.state_dict())
    return new, old


def _batch(preset, B, dtype):
    b = epoch_time.batch(preset, B, "cpu")
    cast = lambda t: t.to(dtype) if t.is_floating_point() else t  # noqa: E731
    out = {k: tuple(map(cast, v)) if isinstance(v, tuple) else cast(v) for k, v in b.items()}
    ids = out["au_text"][0]
    ids[:, :, 12:] = ids[:1, :, 12:]  # AU sentences that share their ends ...
    ids[1::2, 3] = ids[0, 3]  # ... and identical ones, which are not negatives of each other
    mask = out["au_text"][1]
    mask[::3, :, 20:] = False  # and padded texts
    return out


class Negatives:
    """``torch.multinomial`` (the ITM negatives' draw) recorded on the reference step and replayed
    on the others: the same negatives even where float32 rounding would tip a draw; the weights
    they are drawn from are compared instead."""

    def __init__(self):
        self.draws, self.replay = [], None
        self.real = torch.multinomial

    def __call__(self, weights, *args, **kwargs):
        if self.replay is None:
            out = self.real(weights, *args, **kwargs)
            self.draws.append((weights.clone(), out))
            return out
        recorded, out = self.draws[next(self.replay)]
        torch.testing.assert_close(weights, recorded, rtol=1e-3, atol=1e-6)
        self.real(weights, *args, **kwargs)  # the generator moves on as it did
        return out


@pytest.fixture
def negatives(monkeypatch):
    draw = Negatives()
    monkeypatch.setattr(torch, "multinomial", draw)
    return draw


def _step(model, batch, checkpointing="none", negatives=None):
    model.set_activation_checkpointing(checkpointing)
    if negatives is not None and negatives.draws:
        negatives.replay = iter(range(len(negatives.draws)))
    out = model(batch, "both", torch.Generator().manual_seed(3), True)
    model.zero_grad(set_to_none=True)
    out.loss.backward()
    return out.logs, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


TOL = dict(rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_the_step_equals_the_step_before(preset, negatives):
    new, old = _pair(preset, torch.float32)
    batch = _batch(preset, 6, torch.float32)
    tol = TOL
    logs_old, grads_old = _step(old, batch, negatives=negatives)
    for mode in ("none", "itm", "all"):
        logs, grads = _step(new, batch, mode, negatives)
        assert logs.keys() == logs_old.keys()
        for k in logs:
            torch.testing.assert_close(logs[k], logs_old[k], **tol, msg=f"{mode}: {k}")
        assert grads.keys() == grads_old.keys()
        for n in grads:
            torch.testing.assert_close(grads[n], grads_old[n], **tol, msg=f"{mode}: {n}")


def test_the_step_equals_the_step_before_under_bf16_autocast(negatives):
    new, old = _pair("small", torch.float32)
    batch = _batch("small", 6, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logs_old, _ = _step(old, batch, negatives=negatives)
        negatives.draws = [(w, out) for w, out in negatives.draws]
        logs, _ = _step(new, batch, negatives=negatives)
    for k in logs:
        torch.testing.assert_close(logs[k], logs_old[k], rtol=0.02, atol=0.02, msg=k)


def test_a_step_with_some_rows_without_text_equals_the_step_before(negatives):
    new, old = _pair("small", torch.float32, au_align_per_image=5)
    batch = _batch("small", 5, torch.float32)
    batch["emo_text"][3][1] = False  # an image without a caption
    batch["au_text"][3][2, 4:] = False  # and without some AU sentences
    logs_old, grads_old = _step(old, batch, negatives=negatives)
    logs, grads = _step(new, batch, negatives=negatives)
    for k in logs:
        torch.testing.assert_close(logs[k], logs_old[k], **TOL, msg=k)
    for n in grads:
        torch.testing.assert_close(grads[n], grads_old[n], **TOL, msg=n)
