"""Table IV measured here: training time per epoch (TT), inference time per epoch (IT) and
trainable parameters (TP) for MF² (Fine-Tuning, DFN), w/o DFN, w/o Emo-VL and w/o AU-VL, and
MF² pretraining itself; per precision, with peak memory and achieved TFLOP/s.

    python benchmarks/epoch_time.py [--preset small|paper] [--device cpu|cuda] [--precision fp32,bf16]
                                    [--batch N] [--activation-checkpointing auto|none|itm|all|itm-selective|all-selective]
                                    [--steps S] [--rows pretrain,dfn,full,no_emo,no_au] [--compile] [--baseline]

Readings (see README):
* MF² pretraining: one step of ``mf2 pretrain`` (ITC/ITM/ITG + classifiers, both branches).
* MF² (Fine-Tuning, DFN): a DFN step on cached frozen block outputs (what ``mf2 finetune --dfn``
  trains on); its IT is the live images-only path (frozen MF² + pathways + heads).
* w/o DFN: all of MF² fine-tuned on the task losses (``mf2 finetune --full``).
* w/o Emo-VL / w/o AU-VL: single-branch MF², fine-tuned in full (TP = one branch, as in the
  paper's 186.7M rows).
* Cached vs uncached (small preset): three training steps on cached features vs the same step
  with the frozen offline backbones (EfficientNet-Lite0 + AU pooling, MiniLM) run every step on
  what it reads.
Inputs are random tensors of each preset's feature shapes (timing does not depend on values):
small = EfficientNet-Lite0 (50 tokens x 1280) + MiniLM (384); paper = ViT-B/16 (197 x 768) +
BERT-base (768). Steps run through the trainers' own ``train_step`` (autocast for bf16, float32
master weights, the fused AdamW on CUDA). Per-sample times (median of ``--steps`` steps after a
warm-up) are extrapolated to the paper's 31,320 training and 3,376 validation images.
FLOPs of a step are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matrix products
and attention; with activation checkpointing off, so they are the model's FLOPs, not the
recomputed ones); achieved TFLOP/s = those FLOPs / step time, beside the bf16 matrix-product
rate measured on the same device in the same run. ``--baseline`` adds, beside every row, the same
row run by the code from before issue 26 (``baseline_step.py``: the same weights and batch, the
two steps timed in turn) and the ratio of their times. Writes
benchmarks/results/epoch_time-<preset>-<device>[-baseline].{json,md}.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, median_ms, paired_median_ms, table  # noqa: E402

from mf2.devices import autocast  # noqa: E402
from mf2.evaluation.paper import TABLE_IV  # noqa: E402
from mf2.models.config import DFNConfig, MF2Config  # noqa: E402
from mf2.models.dfn import DFN, block_outputs, vision_block_outputs  # noqa: E402
from mf2.models.mf2 import MF2, count_parameters, trainable  # noqa: E402
from mf2.training.loop import TrainConfig, make_optimizer, train_step  # noqa: E402

TRAIN_IMAGES, VAL_IMAGES = 31320, 3376
SHAPES = {"small": dict(T=50, C=1280, D=384, S=18), "paper": dict(T=197, C=768, D=768, S=18)}
# --toy: each preset's code path (its branches, AU alignment count, activation-checkpointing
# rule) at toy widths, so that the tests run the whole script in seconds; its figures mean nothing.
TOY_SHAPES = dict(T=5, C=16, D=16, S=18)
TOY_MODEL = dict(hidden=32, layers=1, heads=2, ffn=64, queries=2, au_queries=2)
TOY = False
EMO_LEN, AU_LEN = 30, 24  # typical caption / AU-sentence lengths (tokens)
PRETRAIN = "MF2 pretraining"


def model(preset, **kw):
    s = TOY_SHAPES if TOY else SHAPES[preset]
    kw = {**(TOY_MODEL if TOY else {}), **kw}
    cfg = MF2Config.from_preset(preset, vision_dim=s["C"], text_dim=s["D"], vocab=[0, -1, -2] + list(range(3, 2000)), **kw)
    return MF2(cfg)


def baseline_of(net):
    """The same model (weights, mode, checkpointing) running the frozen code from before issue 26
    (``baseline_step.BaselineMF2``)."""
    from baseline_step import BaselineMF2

    old = BaselineMF2(net.cfg).to(next(net.parameters()).device)
    old.load_state_dict(net.state_dict())
    old.train(net.training).requires_grad_(next(net.parameters()).requires_grad)
    old.set_activation_checkpointing(net.emo_vl.qformer.checkpointing if net.emo_vl is not None
                                     else net.au_vl.qformer.checkpointing)
    return old


def batch(preset, B, device):
    """A batch as the trainers receive it: features float32 on the device."""
    s = TOY_SHAPES if TOY else SHAPES[preset]
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g).to(device)  # noqa: E731
    ids = lambda *shape: torch.randint(3, 2000, shape, generator=g).to(device)  # noqa: E731
    ones = lambda *shape: torch.ones(*shape, dtype=torch.bool, device=device)  # noqa: E731
    return {"tokens": r(B, s["T"], s["C"]), "au_tokens": r(B, 12, 2 * 9, s["C"]),
            "emotion": torch.randint(0, 8, (B,), generator=g).to(device),
            "aus": torch.randint(0, 2, (B, 12), generator=g).to(device),
            "emo_text": (ids(B, EMO_LEN), ones(B, EMO_LEN), r(B, EMO_LEN, s["D"]), ones(B)),
            "au_text": (ids(B, 12, AU_LEN), ones(B, 12, AU_LEN), r(B, 12, AU_LEN, s["D"]), ones(B, 12))}


SDPA = "default"


def sdpa_backends():
    """The attention backends ``--sdpa`` allows (all when 'default')."""
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = {"efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
              "math": SDPBackend.MATH}.get(SDPA)
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, chosen]) if chosen else contextlib.nullcontext()


def step_of(net, b, device, precision, align, tasks="both"):
    """One training step of ``net`` on batch ``b`` with its own optimizer, as a callable."""
    opt = make_optimizer(net, settings(device, precision))
    gen = torch.Generator(device=device).manual_seed(0)

    def step():
        with sdpa_backends():
            return train_step(b, lambda x: net(x, tasks, gen, align), opt, 1e-4, precision, device)

    return step


def settings(device, precision: str = "fp32") -> TrainConfig:
    """The trainers' settings for a timed step (its learning rate is the schedule's peak, 1e-4;
    ``train_step`` is given it at every step, as ``fit`` does)."""
    return TrainConfig(device=str(device), precision=precision, lr=1e-4).resolved(total_steps=1)


def flops_of(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def matmul_rate(device, n: int = 8192, repeats: int = 20) -> float | None:
    """Measured bf16 matrix-product rate in TFLOP/s (n x n x n), or None off CUDA."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    ms = median_ms(lambda: a @ b, device, repeats)
    return 2 * n ** 3 / (ms / 1e3) / 1e12


def peak_gb(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def reserved_gb(device) -> float | None:
    return torch.cuda.max_memory_reserved(device) / 2 ** 30 if device.type == "cuda" else None


def reset_peak(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def pretrain_flops(preset, device, precision, B, counted: int = 8, baseline: bool = False) -> float:
    """The FLOPs of one pretraining step at batch B, without recomputation: counted on a plain
    step at a small batch (which fits in memory) and scaled (every term but the tiny ITC
    similarity matrix is linear in the batch)."""
    net = model(preset).to(device).train()
    net = baseline_of(net) if baseline else net
    n = min(counted, B)
    return flops_of(step_of(net, batch(preset, n, device), device, precision, align=True)) * B / n


def measure_row(name, make, infer, tp, B, a, device, precision, flops=None):
    """Time (and peak memory, FLOPs) of a training step and an inference step; out of memory is
    recorded as such."""
    row = {"model": name, "precision": precision, "batch": B, "tp": tp}
    reset_peak(device)
    try:
        step = make()
        row["tt_ms_step"] = median_ms(step, device, a.steps, warmup=3)
        row["peak_gb"], row["reserved_gb"] = peak_gb(device), reserved_gb(device)
        del step
        reset_peak(device)
        with torch.no_grad(), autocast(precision, device):
            row["it_ms_step"] = median_ms(infer, device, a.steps)
        row["flops_step"] = flops() if flops else flops_of(make())
    except torch.OutOfMemoryError:
        row["oom"] = True
    reset_peak(device)
    return row


def measure_pair(name, variants, tp, B, a, device, precision, flops=None):
    """``measure_row`` for the current code and the code before issue 26 side by side: the two
    training steps (and the two inference steps) timed in turn, so that a machine whose speed
    drifts slows both alike. variants: code -> (make a step, inference step, FLOPs or None)."""
    rows = {code: {"model": name, "code": code, "precision": precision, "batch": B, "tp": tp} for code in variants}
    reset_peak(device)
    try:
        steps = {code: make() for code, (make, _, _) in variants.items()}
        for code, ms in paired_median_ms(steps, device, a.steps, warmup=3).items():
            rows[code]["tt_ms_step"] = ms
        for code, step in steps.items():
            reset_peak(device)
            step()
            rows[code]["peak_gb"], rows[code]["reserved_gb"] = peak_gb(device), reserved_gb(device)
        del steps
        reset_peak(device)
        with torch.no_grad(), autocast(precision, device):
            for code, ms in paired_median_ms({c: v[1] for c, v in variants.items()}, device, a.steps).items():
                rows[code]["it_ms_step"] = ms
        for code, (make, _, fl) in variants.items():
            rows[code]["flops_step"] = fl() if fl else flops_of(make())
    except torch.OutOfMemoryError:
        for row in rows.values():
            row["oom"] = True
    reset_peak(device)
    return list(rows.values())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["small", "paper"], default="small")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default=None, help="Comma-separated: fp32,bf16 (default: both on CUDA, fp32 on CPU).")
    p.add_argument("--batch", type=int, default=None,
                   help="Batch of the MF² steps (default 56, Table VI; 4 for the paper preset on a CPU, where a "
                        "batch-56 step of a 324M-parameter model takes minutes).")
    p.add_argument("--dfn-batch", type=int, default=56, help="Batch of the DFN steps (Table VI: 56).")
    p.add_argument("--activation-checkpointing", default="auto", choices=["auto", "none", "itm", "all"],
                   help="For the pretraining row (the fine-tuning rows have no ITM passes); auto = what "
                        "mf2 pretrain does: itm for the paper preset on a GPU, else none.")
    p.add_argument("--compile", action="store_true", help="torch.compile the Q-Former blocks (pretraining row).")
    p.add_argument("--deterministic", action="store_true",
                   help="Deterministic algorithms, as mf2 pretrain --deterministic sets them (to measure their cost).")
    p.add_argument("--sdpa", default="default", choices=["default", "efficient", "cudnn", "math"],
                   help="Restrict scaled_dot_product_attention's backends (flash stays allowed for unmasked calls).")
    p.add_argument("--rows", default="pretrain,dfn,full,no_emo,no_au",
                   help="Which rows: pretrain, dfn, full, no_emo, no_au (comma-separated).")
    p.add_argument("--epochs", type=int, default=1, help="Report time for this many epochs (extrapolated).")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--baseline", action="store_true",
                   help="Beside every row, the same row with the code from before issue 26 (benchmarks/baseline_step.py), "
                        "the two timed in turn, and the ratio.")
    p.add_argument("--toy", action="store_true",
                   help="Toy widths and batches (each preset's code path in seconds; for the tests: the figures mean "
                        "nothing). Writes epoch_time-<preset>-<device>-toy.*")
    a = p.parse_args()
    global TOY
    TOY = a.toy
    if a.deterministic:
        from mf2.training.loop import seed_everything

        seed_everything(0, True, a.device)  # before the first matrix product: cuBLAS's fixed workspace
    a.activation_checkpointing = TrainConfig(device=a.device, activation_checkpointing=a.activation_checkpointing
                                             ).resolved(a.preset).activation_checkpointing
    global SDPA
    SDPA = a.sdpa
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    precisions = (a.precision or ("fp32,bf16" if cuda else "fp32")).split(",")
    if a.toy:
        a.batch, a.dfn_batch = a.batch or 4, 4
    B = a.batch or (4 if a.preset == "paper" and not cuda else 56)
    wanted = set(a.rows.split(","))
    per_epoch = lambda ms, n, bs: ms / bs * n * a.epochs / 60000  # noqa: E731 -- minutes
    rows, extra = [], {"matmul_bf16_tflops": matmul_rate(device)}
    b = batch(a.preset, B, device)
    for precision in precisions:
        if "pretrain" in wanted:  # MF² pretraining (ITC/ITM/ITG + classifiers)
            net = model(a.preset).to(device).train()
            net.set_activation_checkpointing(a.activation_checkpointing)
            old = baseline_of(net) if a.baseline else None
            if a.compile:
                net.compile_blocks()
            settings_of = {"activation_checkpointing": a.activation_checkpointing, "compiled": a.compile}
            if old is None:
                row = measure_row(PRETRAIN, lambda: step_of(net, b, device, precision, align=True),
                                  lambda: net.predict(b["tokens"], b["au_tokens"]), count_parameters(net)["mf2"], B, a,
                                  device, precision, flops=lambda: pretrain_flops(a.preset, device, precision, B))
                rows.append({**row, **settings_of})
            else:
                pair = measure_pair(PRETRAIN, {
                    "after": (lambda: step_of(net, b, device, precision, align=True),
                              lambda: net.predict(b["tokens"], b["au_tokens"]),
                              lambda: pretrain_flops(a.preset, device, precision, B)),
                    "before": (lambda: step_of(old, b, device, precision, align=True),
                               lambda: old.predict(b["tokens"], b["au_tokens"]),
                               lambda: pretrain_flops(a.preset, device, precision, B, baseline=True))},
                    count_parameters(net)["mf2"], B, a, device, precision)
                rows += [{**r, **settings_of, "compiled": a.compile and r["code"] == "after"} for r in pair]
            net = old = None
        if "dfn" in wanted:  # MF² (Fine-Tuning, DFN): a step on cached block outputs; IT through the live frozen path
            mf2 = model(a.preset).to(device).eval().requires_grad_(False)
            db = batch(a.preset, a.dfn_batch, device)
            with torch.no_grad(), autocast(precision, device):
                cached = block_outputs(mf2, db)
            cached = type(cached)(**{k: v.float() if v.is_floating_point() else v for k, v in cached.arrays().items()})
            dfn = DFN(mf2.cfg, DFNConfig()).to(device)
            opt = make_optimizer(dfn, settings(device, precision))
            make = lambda: (lambda: train_step(cached, lambda x: dfn(x, "both"), opt, 1e-4, precision, device))  # noqa: E731
            if a.baseline:  # the DFN step itself is the same code; its inference reads the frozen MF²'s passes
                old = baseline_of(mf2)
                rows += measure_pair("MF2 (Fine-Tuning, DFN)", {
                    "after": (make, lambda: dfn.heads(vision_block_outputs(mf2, db["tokens"], db["au_tokens"])), None),
                    "before": (make, lambda: dfn.heads(vision_block_outputs(old, db["tokens"], db["au_tokens"])), None)},
                    trainable(dfn), a.dfn_batch, a, device, precision)
            else:
                rows.append(measure_row(
                    "MF2 (Fine-Tuning, DFN)", make,
                    lambda: dfn.heads(vision_block_outputs(mf2, db["tokens"], db["au_tokens"])),
                    trainable(dfn), a.dfn_batch, a, device, precision))
            mf2 = dfn = opt = cached = old = None
        for key, name, kw in (("full", "w/o DFN", {}), ("no_emo", "w/o Emo-VL", {"emo_vl": False}),
                              ("no_au", "w/o AU-VL", {"au_vl": False})):
            if key not in wanted:
                continue
            net = model(a.preset, **kw).to(device).train()
            if a.baseline:
                old = baseline_of(net)
                rows += measure_pair(name, {
                    "after": (lambda: step_of(net, b, device, precision, align=False),
                              lambda: net.predict(b["tokens"], b["au_tokens"]), None),
                    "before": (lambda: step_of(old, b, device, precision, align=False),
                               lambda: old.predict(b["tokens"], b["au_tokens"]), None)},
                    count_parameters(net)["mf2"], B, a, device, precision)
            else:
                rows.append(measure_row(name, lambda: step_of(net, b, device, precision, align=False),
                                        lambda: net.predict(b["tokens"], b["au_tokens"]),
                                        count_parameters(net)["mf2"], B, a, device, precision))
            net = old = None
    for r in rows:
        paper = TABLE_IV.get(r["model"], {})
        r.update({"tp_M": r["tp"] / 1e6, "paper_tt_min": paper.get("tt_min"), "paper_it_min": paper.get("it_min"),
                  "paper_tp_M": paper["params"] / 1e6 if paper else None})
        if "oom" in r:
            continue
        r.update({"tt_min_epoch": per_epoch(r["tt_ms_step"], TRAIN_IMAGES, r["batch"]),
                  "it_min_epoch": per_epoch(r["it_ms_step"], VAL_IMAGES, r["batch"]),
                  "samples_per_s": r["batch"] / (r["tt_ms_step"] / 1e3),
                  "tflops": r["flops_step"] / (r["tt_ms_step"] / 1e3) / 1e12})
        if extra["matmul_bf16_tflops"]:
            r["fraction_of_bf16_matmul"] = r["tflops"] / extra["matmul_bf16_tflops"]
    for r in rows:  # with --baseline: the current code over the code before issue 26
        before = next((x for x in rows if x.get("code") == "before" and x["model"] == r["model"]
                       and x["precision"] == r["precision"]), None) if r.get("code") == "after" else None
        if before and "oom" not in r and "oom" not in before:
            r["tt_after_over_before"] = r["tt_ms_step"] / before["tt_ms_step"]
            r["it_after_over_before"] = r["it_ms_step"] / before["it_ms_step"]
    for precision in precisions:
        dfn_row = next((r for r in rows if r["model"] == "MF2 (Fine-Tuning, DFN)" and r["precision"] == precision
                        and "oom" not in r and r.get("code", "after") == "after"), None)
        full_row = next((r for r in rows if r["model"] == "w/o DFN" and r["precision"] == precision and "oom" not in r
                         and r.get("code", "after") == "after"), None)
        if dfn_row and full_row:
            extra[f"dfn_over_full_time_{precision}"] = dfn_row["tt_min_epoch"] / full_row["tt_min_epoch"]
    extra["paper_dfn_over_full_time"] = TABLE_IV["MF2 (Fine-Tuning, DFN)"]["tt_min"] / TABLE_IV["w/o DFN"]["tt_min"]
    if a.preset == "small" and not cuda and "fp32" in precisions:
        extra["cached_vs_uncached"] = cached_vs_uncached(a, device)
        extra["uncached_over_cached"] = extra["cached_vs_uncached"][0]["uncached_over_cached"]  # the pretraining step
    write(a, device, rows, extra, precisions, B)


def cached_vs_uncached(a, device) -> list:
    """Each training step on cached features vs the same step with the frozen offline backbones
    (EfficientNet-Lite0 + AU pooling, MiniLM) run every step on what it reads."""
    from mf2.features.backbones import load_text, load_vision
    from mf2.ops import au_region_pool

    B = a.dfn_batch
    b = batch("small", B, device)
    vision, text = load_vision(device=a.device), load_text(device=a.device)
    size = 64 if TOY else 224
    images = torch.rand(B, 3, size, size, device=device)
    captions = ["the person appears to feel happy, judging by raised cheeks and lip corners pulled up"] * B
    sentences = [f"AU{k} (muscle) is at rest: the muscle number {k} shows no movement in this face." for k in range(12)] * B
    centres = torch.rand(B, 24, 2, device=device) * 0.6 + 0.2

    @torch.no_grad()
    def backbones(texts: bool):
        tokens, fmap, layout = vision(images)
        au_region_pool(fmap, centres, 0.1, 3, layout=layout)
        if texts:
            text.encode(captions, EMO_LEN)
            text.encode(sentences, AU_LEN)

    net = model("small").to(device).train()
    pretrain_step, full_step = step_of(net, b, device, "fp32", True), step_of(net, b, device, "fp32", False)
    mf2 = model("small").to(device).eval().requires_grad_(False)
    dfn = DFN(mf2.cfg, DFNConfig()).to(device)
    opt = make_optimizer(dfn, settings(device))
    dfn_step = lambda x: train_step(x, lambda y: dfn(y, "both"), opt, 1e-4, "fp32", device)  # noqa: E731
    cached = block_outputs(mf2, b)
    # (name, cached step, uncached step): pretraining reads images and texts; full fine-tuning
    # (task losses) images only; DFN also runs the frozen MF² when its block outputs are not cached
    cases = [("pretraining (ITC/ITM/ITG + classifiers)", pretrain_step, lambda: (backbones(True), pretrain_step())),
             ("full fine-tuning (w/o DFN, task losses)", full_step, lambda: (backbones(False), full_step())),
             ("DFN (block outputs cached)", lambda: dfn_step(cached),
              lambda: (backbones(True), dfn_step(block_outputs(mf2, b))))]
    out = []
    for name, cached_fn, uncached_fn in cases:
        cached_ms = median_ms(cached_fn, device, a.steps)
        uncached_ms = median_ms(uncached_fn, device, a.steps)
        out.append({"step": name, "batch": B, "cached_ms": cached_ms, "uncached_ms": uncached_ms,
                    "uncached_over_cached": uncached_ms / cached_ms})
    return out


def write(a, device, rows, extra, precisions, B):
    result = {"machine": machine(device), "preset": a.preset, "epochs": a.epochs, "deterministic": a.deterministic,
              "activation_checkpointing": a.activation_checkpointing, "rows": rows, **extra}
    where = machine(device).get("gpu") or "CPU"
    cols = ["model", "precision", "batch", "tt_min_epoch", "paper_tt_min", "it_min_epoch", "paper_it_min", "tp_M",
            "paper_tp_M"]
    if device.type == "cuda":
        cols += ["samples_per_s", "peak_gb", "tflops", "fraction_of_bf16_matmul"]
    if a.baseline:
        cols[1:1] = ["code"]
        cols += ["tt_after_over_before", "it_after_over_before"]
    shown = [{**r, "tt_min_epoch": "out of memory"} if "oom" in r else r for r in rows]
    md = [f"# Table IV measured here ({a.preset} preset, {device}: {where}; minutes per epoch extrapolated from "
          f"per-sample step times to {TRAIN_IMAGES:,} train / {VAL_IMAGES:,} val images; the paper's figures are on an "
          "RTX A6000)", "", table(shown, cols), ""]
    if extra.get("matmul_bf16_tflops"):
        md.append(f"bf16 matrix-product rate measured on this device in this run: {extra['matmul_bf16_tflops']:.0f} "
                  "TFLOP/s (8192³). TFLOP/s per row: the model's FLOPs of one step (FlopCounterMode, without "
                  "recomputation) over the step time.")
    if a.activation_checkpointing != "none":
        md.append(f"MF² pretraining ran with activation checkpointing '{a.activation_checkpointing}'.")
    if a.baseline:
        md.append("code: 'after' = this tree, 'before' = the code before issue 26 (benchmarks/baseline_step.py), the "
                  "same weights and batch, the two steps timed in turn; *_after_over_before: time ratios (< 1 = faster).")
    for precision in precisions:
        ratio = extra.get(f"dfn_over_full_time_{precision}")
        if ratio:
            md.append(f"DFN / w/o DFN training time ({precision}): {ratio:.4f} (1/{1 / ratio:.1f}); paper: "
                      f"{extra['paper_dfn_over_full_time']:.3f} (1/{1 / extra['paper_dfn_over_full_time']:.1f})")
    if "cached_vs_uncached" in extra:
        md += ["", "Cached vs uncached (the same step with the frozen backbones run every step; batch "
               f"{extra['cached_vs_uncached'][0]['batch']}, ms per step):", "",
               table(extra["cached_vs_uncached"], ["step", "cached_ms", "uncached_ms", "uncached_over_cached"])]
    a.out.mkdir(parents=True, exist_ok=True)
    name = f"epoch_time-{a.preset}-{device.type}" + ("-baseline" if a.baseline else "") + ("-toy" if a.toy else "")
    (a.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    (a.out / f"{name}.md").write_text("\n".join(md) + "\n")
    print(json.dumps(result, indent=2))
    print("\n".join(md))


if __name__ == "__main__":
    main()
