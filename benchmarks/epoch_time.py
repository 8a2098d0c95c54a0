"""Table IV measured here: training time per epoch (TT), inference time per epoch (IT) and
trainable parameters (TP) for MF² (Fine-Tuning, DFN), w/o DFN, w/o Emo-VL and w/o AU-VL.

    python benchmarks/epoch_time.py [--preset small|paper] [--samples N] [--epochs E] [--device cpu]

Readings (see README):
* MF² (Fine-Tuning, DFN): a DFN step on cached frozen block outputs (what ``mf2 finetune --dfn``
  trains on); its IT is the live images-only path (frozen MF² + pathways + heads).
* w/o DFN: all of MF² fine-tuned on the task losses (``mf2 finetune --full``).
* w/o Emo-VL / w/o AU-VL: single-branch MF², fine-tuned in full (TP = one branch, as in the
  paper's 186.7M rows).
* Cached vs uncached (small preset): three training steps on cached features vs the same step
  with the frozen offline backbones (EfficientNet-Lite0 + AU pooling, MiniLM) run every step on
  what it reads: pretraining (images and texts), full fine-tuning (task losses: images only) and
  DFN (images and texts, plus the frozen MF² forward its block-output cache saves).
Inputs are random tensors of each preset's feature shapes (timing does not depend on values):
small = EfficientNet-Lite0 (50 tokens x 1280) + MiniLM (384); paper = ViT-B/16 (197 x 768) +
BERT-base (768). Per-sample times (median of ``--steps`` steps after a warm-up) are
extrapolated to the paper's 31,320 training and 3,376 validation images; all ratios come from
this one run. Writes benchmarks/results/epoch_time-<preset>-<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, median_ms, table  # noqa: E402

from mf2.evaluation.paper import TABLE_IV  # noqa: E402
from mf2.models.config import MF2Config  # noqa: E402
from mf2.models.config import DFNConfig  # noqa: E402
from mf2.models.dfn import DFN, block_outputs, vision_block_outputs  # noqa: E402
from mf2.models.mf2 import MF2, count_parameters, trainable  # noqa: E402
from mf2.training.loop import TrainConfig, make_optimizer  # noqa: E402

TRAIN_IMAGES, VAL_IMAGES = 31320, 3376
SHAPES = {"small": dict(T=50, C=1280, D=384, S=18), "paper": dict(T=197, C=768, D=768, S=18)}
EMO_LEN, AU_LEN = 30, 24  # typical caption / AU-sentence lengths (tokens)


def model(preset, **kw):
    s = SHAPES[preset]
    cfg = MF2Config.from_preset(preset, vision_dim=s["C"], text_dim=s["D"], vocab=[0, -1, -2] + list(range(3, 2000)), **kw)
    return MF2(cfg)


def batch(preset, B, device):
    s = SHAPES[preset]
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g).to(device)  # noqa: E731
    ids = lambda *shape: torch.randint(3, 2000, shape, generator=g).to(device)  # noqa: E731
    ones = lambda *shape: torch.ones(*shape, dtype=torch.bool, device=device)  # noqa: E731
    return {"tokens": r(B, s["T"], s["C"]), "au_tokens": r(B, 12, 2 * 9, s["C"]),
            "emotion": torch.randint(0, 8, (B,), generator=g).to(device),
            "aus": torch.randint(0, 2, (B, 12), generator=g).to(device),
            "emo_text": (ids(B, EMO_LEN), ones(B, EMO_LEN), r(B, EMO_LEN, s["D"]), ones(B)),
            "au_text": (ids(B, 12, AU_LEN), ones(B, 12, AU_LEN), r(B, 12, AU_LEN, s["D"]), ones(B, 12))}


def train_step(net, b, device, align, tasks="both"):
    """One full training step of MF² ``net`` on batch ``b`` (its own optimizer), as a callable."""
    opt = make_optimizer(net, TrainConfig())
    gen = torch.Generator(device=device).manual_seed(0)

    def step():
        out = net(b, tasks, gen, align)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    return step


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["small", "paper"], default="small")
    p.add_argument("--samples", type=int, default=None,
                   help="Batch size of the full fine-tuning steps (default 56 small, 4 paper: 236M-parameter steps on a CPU).")
    p.add_argument("--dfn-samples", type=int, default=56, help="Batch size of the DFN steps (Table VI: 56).")
    p.add_argument("--epochs", type=int, default=1, help="Report time for this many epochs (extrapolated).")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    a = p.parse_args()
    device = torch.device(a.device)
    full_batch = batch(a.preset, a.samples or (56 if a.preset == "small" else 4), device)
    dfn_batch = batch(a.preset, a.dfn_samples, device)
    per_epoch = lambda ms, n, bs: ms / bs * n * a.epochs / 60000  # noqa: E731 -- minutes
    rows, extra = [], {}

    # MF² (Fine-Tuning, DFN): a step on cached block outputs; IT through the live frozen path
    mf2 = model(a.preset).to(device).eval().requires_grad_(False)
    dfn = DFN(mf2.cfg, DFNConfig()).to(device)
    cached = block_outputs(mf2, dfn_batch)
    opt = make_optimizer(dfn, TrainConfig())

    def dfn_step(x=cached):
        out = dfn(x, "both")
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    def dfn_infer():
        with torch.no_grad():
            dfn.heads(vision_block_outputs(mf2, dfn_batch["tokens"], dfn_batch["au_tokens"]))

    tt, it = median_ms(dfn_step, device, a.steps * 5), median_ms(dfn_infer, device, a.steps)
    rows.append({"model": "MF2 (Fine-Tuning, DFN)", "batch": a.dfn_samples, "tt_ms_step": tt, "it_ms_step": it,
                 "tp": trainable(dfn)})
    B, b = full_batch["emotion"].shape[0], full_batch

    # w/o DFN and the single-branch rows: full fine-tuning on the task losses
    for name, kw in (("w/o DFN", {}), ("w/o Emo-VL", {"emo_vl": False}), ("w/o AU-VL", {"au_vl": False})):
        net = model(a.preset, **kw).to(device).train()
        tt = median_ms(train_step(net, b, device, align=False), device, a.steps, warmup=1)
        net.eval()
        it = median_ms(lambda: net.predict(b["tokens"], b["au_tokens"]), device, a.steps)
        rows.append({"model": name, "batch": B, "tt_ms_step": tt, "it_ms_step": it, "tp": count_parameters(net)["mf2"]})
    for r in rows:
        paper = TABLE_IV[r["model"]]
        r.update({"tt_min_epoch": per_epoch(r["tt_ms_step"], TRAIN_IMAGES, r["batch"]),
                  "it_min_epoch": per_epoch(r["it_ms_step"], VAL_IMAGES, r["batch"]),
                  "tp_M": r["tp"] / 1e6, "paper_tt_min": paper["tt_min"], "paper_it_min": paper["it_min"],
                  "paper_tp_M": paper["params"] / 1e6})
    extra["dfn_over_full_time"] = rows[0]["tt_min_epoch"] / rows[1]["tt_min_epoch"]
    extra["paper_dfn_over_full_time"] = TABLE_IV["MF2 (Fine-Tuning, DFN)"]["tt_min"] / TABLE_IV["w/o DFN"]["tt_min"]

    # cached vs uncached: each training step on cached features vs the same step with the frozen
    # offline backbones (EfficientNet-Lite0 + AU pooling, MiniLM) run every step on what it reads
    if a.preset == "small":
        from mf2.features.backbones import load_text, load_vision
        from mf2.ops import au_region_pool

        B, b = a.dfn_samples, dfn_batch
        vision, text = load_vision(device=a.device), load_text(device=a.device)
        images = torch.rand(B, 3, 224, 224, device=device)
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
        pretrain_step, full_step = train_step(net, b, device, align=True), train_step(net, b, device, align=False)
        # (name, cached step, uncached step): pretraining reads images and texts; full fine-tuning
        # (task losses) images only; DFN also runs the frozen MF² when its block outputs are not cached
        cases = [("pretraining (ITC/ITM/ITG + classifiers)", pretrain_step, lambda: (backbones(True), pretrain_step())),
                 ("full fine-tuning (w/o DFN, task losses)", full_step, lambda: (backbones(False), full_step())),
                 ("DFN (block outputs cached)", dfn_step,
                  lambda: (backbones(True), dfn_step(block_outputs(mf2, b))))]
        extra["cached_vs_uncached"] = []
        for name, cached_fn, uncached_fn in cases:
            cached_ms = median_ms(cached_fn, device, a.steps)
            uncached_ms = median_ms(uncached_fn, device, a.steps)
            extra["cached_vs_uncached"].append({"step": name, "batch": B, "cached_ms": cached_ms, "uncached_ms": uncached_ms,
                                                "uncached_over_cached": uncached_ms / cached_ms})
        extra["uncached_over_cached"] = extra["cached_vs_uncached"][0]["uncached_over_cached"]  # the pretraining step
    result = {"machine": machine(device), "preset": a.preset, "epochs": a.epochs, "rows": rows, **extra}
    cols = ["model", "batch", "tt_min_epoch", "paper_tt_min", "it_min_epoch", "paper_it_min", "tp_M", "paper_tp_M"]
    md = [f"# Table IV measured here ({a.preset} preset, {device}; minutes per epoch extrapolated from per-sample step times to "
          f"{TRAIN_IMAGES:,} train / {VAL_IMAGES:,} val images; the paper's figures are on an RTX A6000)", "",
          table(rows, cols), "",
          f"DFN / w/o DFN training time: {extra['dfn_over_full_time']:.4f} (1/{1 / extra['dfn_over_full_time']:.1f}); "
          f"paper: {extra['paper_dfn_over_full_time']:.3f} (1/{1 / extra['paper_dfn_over_full_time']:.1f})"]
    if "cached_vs_uncached" in extra:
        md += ["", "Cached vs uncached (the same step with the frozen backbones run every step; batch "
               f"{extra['cached_vs_uncached'][0]['batch']}, ms per step):", "",
               table(extra["cached_vs_uncached"], ["step", "cached_ms", "uncached_ms", "uncached_over_cached"])]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"epoch_time-{a.preset}-{device.type}.json").write_text(json.dumps(result, indent=2))
    (a.out / f"epoch_time-{a.preset}-{device.type}.md").write_text("\n".join(md) + "\n")
    print(json.dumps(result, indent=2))
    print("\n".join(md))


if __name__ == "__main__":
    main()
