"""What the paper-scale path changed must not change the results: recomputation equals the plain
path, bf16 autocast stays close to fp32, ITG decoding with the image pass's query keys/values
equals decoding the whole sequence, the deduplicated ITC text pass equals the plain one,
checkpoints from before the fused projections load, the masked (sync-free) losses equal the
filtered ones, and every tensor a batch carries reaches the model's device."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mf2.features.reader import CacheReader, prefetch, to_device
from mf2.models.config import DFNConfig, MF2Config
from mf2.models.dfn import DFN, block_outputs
from mf2.models.mf2 import MF2, task_losses
from mf2.models.qformer import BOS
from mf2.training.loop import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import epoch_time  # noqa: E402  (the benchmark's model and batch builders)


def _model(**kw):
    torch.manual_seed(0)
    return epoch_time.model("small", **kw)


def _losses_and_grads(model, batch, seed=1):
    torch.manual_seed(seed)
    out = model(batch, "both", torch.Generator().manual_seed(0), True)
    model.zero_grad(set_to_none=True)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mode", ["itm", "all", "itm-selective", "all-selective"])
def test_activation_checkpointing_equals_the_plain_path(mode):
    batch = epoch_time.batch("small", 6, "cpu")
    plain, g_plain = _losses_and_grads(_model(), batch)
    model = _model()
    model.set_activation_checkpointing(mode)
    ckpt, g_ckpt = _losses_and_grads(model, batch)
    assert plain.logs.keys() == ckpt.logs.keys()
    for k in plain.logs:
        torch.testing.assert_close(ckpt.logs[k], plain.logs[k], rtol=0, atol=0)
    assert g_plain.keys() == g_ckpt.keys()
    for n in g_plain:
        torch.testing.assert_close(g_ckpt[n], g_plain[n], rtol=1e-5, atol=1e-7, msg=n)
    with pytest.raises(ValueError, match="activation checkpointing"):
        model.set_activation_checkpointing("some")


def test_bf16_autocast_losses_agree_with_fp32():
    model = _model().eval()  # no dropout: the same computation in two precisions
    batch = epoch_time.batch("small", 6, "cpu")
    fp32 = model(batch, "both", torch.Generator().manual_seed(0), True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model(batch, "both", torch.Generator().manual_seed(0), True)
    assert bf16.loss.dtype == torch.float32  # losses are reduced in float32
    for k, v in fp32.logs.items():
        if not k.endswith("candidates"):
            torch.testing.assert_close(bf16.logs[k], v, rtol=0.05, atol=0.05, msg=k)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32


def test_decoding_with_the_image_pass_keys_equals_decoding_the_whole_sequence():
    model = _model().eval()
    q = model.emo_vl.qformer
    vision = model.emo_vl.vision_in(torch.randn(3, 50, 1280))
    ids = torch.randint(3, 60, (3, 9))
    ids[:, 0] = BOS
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 6:] = False
    fast = q.decode(vision, ids, mask)
    # reference: queries and text in one sequence; queries see queries, text sees every query and
    # earlier text (the layout before the queries' keys and values were reused)
    Q, L = q.n_queries, ids.shape[1]
    x = torch.cat([q.query_tokens.expand(3, -1, -1), q.ln_text(q.tok_embed(ids) + q.pos_embed(torch.arange(L)))], 1)
    allow = torch.zeros(3, Q + L, Q + L, dtype=torch.bool)
    allow[:, :Q, :Q] = True
    allow[:, Q:, :Q] = True
    allow[:, Q:, Q:] = torch.tril(torch.ones(L, L, dtype=torch.bool)) & mask[:, None, :]
    slow = q._run(x, Q, allow[:, None], vision)[0][:, Q:]
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_identical_texts_run_the_text_pass_once_with_the_same_result():
    model = _model().eval()
    branch = model.au_vl
    states, mask = torch.randn(5, 7, 384), torch.ones(5, 7, dtype=torch.bool)
    ids = torch.randint(3, 60, (5, 7))
    ids[3], states[3] = ids[1], states[1]  # a repeated sentence
    ids[4], states[4] = ids[1], states[1]
    torch.testing.assert_close(branch.text_cls(states, mask, ids), branch.qformer.text(states, mask)[:, 0])


def test_checkpoints_from_before_the_fused_projections_load():
    model = _model().eval()
    legacy = {}
    for k, v in model.state_dict().items():
        if ".self_attn.qkv." in k:
            for part, chunk in zip("qkv", v.chunk(3, 0)):
                legacy[k.replace(".qkv.", f".{part}.")] = chunk.clone()
        elif ".cross_attn.kv." in k:
            for part, chunk in zip("kv", v.chunk(2, 0)):
                legacy[k.replace(".kv.", f".{part}.")] = chunk.clone()
        else:
            legacy[k] = v.clone()
    assert any(".self_attn.q.weight" in k for k in legacy)
    fresh = MF2(MF2Config(**model.cfg.to_dict())).eval()
    fresh.load_state_dict(legacy)
    tokens, au_tokens = torch.randn(2, 50, 1280), torch.randn(2, 12, 18, 1280)
    for a, b in zip(model.predict(tokens, au_tokens), fresh.predict(tokens, au_tokens)):
        torch.testing.assert_close(a, b)


def test_masked_task_losses_equal_the_filtered_ones():
    emotion, au = torch.randn(5, 8), torch.randn(5, 12)
    y_emo, y_au = torch.tensor([3, -1, 0, 7, -1]), torch.randint(0, 2, (5, 12))
    y_au[2, 4] = -1
    out = task_losses(emotion, au, y_emo, y_au)
    keep = y_emo >= 0
    torch.testing.assert_close(out["emo_cls"], F.cross_entropy(emotion[keep], y_emo[keep]))
    none = task_losses(emotion, au, torch.full((5,), -1), y_au)
    assert none["emo_cls"] == 0  # no labelled row: nothing to learn, not NaN


def test_masked_dfn_alignment_equals_the_filtered_one():
    torch.manual_seed(0)
    mf2 = _model().eval()
    batch = epoch_time.batch("small", 6, "cpu")
    batch["emo_text"][3][[1, 4]] = False  # two images without a caption
    batch["au_text"][3][0, :5] = False
    x = block_outputs(mf2, batch)
    dfn = DFN(mf2.cfg, DFNConfig())
    _, _, finals = dfn.heads(x)
    masked = dfn.align_loss(x, finals)

    temp = dfn.temp.clamp(0.001, 0.5)
    expected = 0
    for key, pathway in (("emo", dfn.emo_text), ("au", dfn.au_text)):
        v = finals[key].flatten(0, -2) if key == "au" else finals[key]
        start, h, has = getattr(x, f"{key}_t_start"), getattr(x, f"{key}_t_h"), getattr(x, f"{key}_t_has")
        if key == "au":
            start, h, has = start.flatten(0, 1), h.flatten(0, 1), has.flatten()
        t = pathway(start[has], dfn._read_blocks(h[has]))
        sim = F.normalize(v[has], dim=-1) @ F.normalize(t, dim=-1).T / temp
        target = torch.arange(sim.shape[0])
        expected = expected + (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2
    torch.testing.assert_close(masked, expected, rtol=1e-5, atol=1e-6)
    masked.backward()
    assert all(torch.isfinite(p.grad).all() for p in dfn.parameters() if p.grad is not None)


def test_every_tensor_of_a_batch_reaches_the_device(pretrained):
    reader = CacheReader(pretrained / "f.zarr", "train")
    raw = next(reader.batches(8))
    assert raw["tokens"].dtype == torch.float16  # as stored: half the bytes to copy
    moved = to_device(raw, "meta")
    tensors = [t for v in moved.values() for t in (v if isinstance(v, tuple) else (v,))]
    assert len(tensors) == 12 and all(t.device.type == "meta" for t in tensors)
    assert moved["tokens"].dtype == torch.float32  # converted where it is used
    # the background reader yields exactly what the plain iterator does, in order
    plain = [to_device(b, "cpu") for b in reader.batches(8, epoch=1)]
    fetched = list(prefetch(reader.batches(8, epoch=1), "cpu"))
    assert len(plain) == len(fetched) > 1
    for a, b in zip(plain, fetched):
        assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["au_text"][2], b["au_text"][2])


def test_an_error_in_the_background_reader_reaches_the_loop():
    def broken():
        yield {"emotion": torch.zeros(2)}
        raise OSError("disk gone")

    it = prefetch(broken(), "cpu")
    assert next(it)["emotion"].shape == (2,)
    with pytest.raises(OSError, match="disk gone"):
        next(it)


def test_automatic_settings_resolve_per_device():
    cpu = TrainConfig(device="cpu").resolved()
    assert cpu.precision == "fp32" and cpu.deterministic is True
    assert TrainConfig(device="cpu", precision="bf16", deterministic=False).resolved().deterministic is False
    if not torch.cuda.is_available():  # CUDA on a machine without it is a one-line error, not a quiet fp32 CPU run
        with pytest.raises(ValueError, match="CUDA is not available"):
            TrainConfig(device="cuda").resolved()
    assert TrainConfig(device="cpu").resolved().precision == TrainConfig(device="cpu").resolved().resolved().precision
