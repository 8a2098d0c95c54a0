"""MF² pretraining on a feature cache (``mf2 pretrain``).

Table VI defaults: 30 epochs, AdamW (weight decay 0.05 on weight matrices), lr 1e-4 after a
linear warm-up of 2000 steps (then cosine decay to 0 -- the decay is BLIP-2's; the paper names
only the warm-up), batch 56. One JSONL + CSV row per epoch; a checkpoint per epoch
(safetensors + JSON, atomic); ``resume`` continues from the latest; the resolved config is
saved in the run folder, and an earlier run is never overwritten unless asked. Validation
uses images only. Under torchrun (WORLD_SIZE > 1) the model is wrapped in DDP and ITC/ITM
negatives are gathered across ranks; a single process needs no process group.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mf2.data.manifest import atomic_write_text
from mf2.evaluation.metrics import au_f1, emotion_scores
from mf2.models.config import PAPER_PARAMS, MF2Config
from mf2.models.mf2 import MF2, count_parameters
from mf2.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mf2.training.data import CacheReader, to_device


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 56
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_steps: int = 2000
    seed: int = 0
    # deterministic algorithms: the same seed on the same machine gives the same run, bit for bit
    # (without them, the CPU backward of advanced indexing accumulates in thread order); ~4% slower
    deterministic: bool = True
    tasks: str = "both"  # au | emotion | both (which classification losses train)
    device: str = "cpu"
    window: int = 512  # rows read together (shuffle unit)


class RunError(ValueError):
    """A run folder that cannot be used as asked, as one line."""


def seed_everything(seed: int, deterministic: bool = True, device: str = "cpu") -> None:
    """Seed every generator; ``deterministic`` also restricts torch to deterministic algorithms
    (on a GPU an op without one warns instead of failing)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=torch.device(device).type != "cpu")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_epoch(batches, losses_of, optimizer, step: int, total_steps: int, cfg: TrainConfig, progress=None):
    """One pass over ``batches``: scheduled lr, forward (``losses_of(batch)`` -> dict with
    'loss'), backward, step. Returns the new step count and the epoch's mean losses and timing."""
    sums, n_batches, n_samples, t0 = {}, 0, 0, time.perf_counter()
    for batch in batches:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, cfg)
        out = losses_of(batch)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        step += 1
        n_batches += 1
        n_samples += len(batch["emotion"])
        for k, v in out.items():
            if v.dim() == 0:
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        if progress:
            progress(len(batch["emotion"]))
    seconds = round(time.perf_counter() - t0, 3)
    return step, {"seconds": seconds, "samples": n_samples,
                  "train": {f"train_{k}": v / max(n_batches, 1) for k, v in sums.items()}}


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)


def _dist():
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and os.environ.get("MF2_DIST_BACKEND") != "gloo"
                                else "gloo")
    if world > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def predict_split(model: MF2, reader: CacheReader, device, batch_size: int = 128):
    """(emotion probs [N, 8], AU probs [N, 12], emotion labels [N], AU labels [N, 12]) on images only."""
    model.eval()
    emo, au, y_emo, y_au = [], [], [], []
    for batch in reader.batches(batch_size, shuffle=False, drop_last=False):
        batch = to_device(batch, device)
        e, a = model.predict(batch["tokens"], batch["au_tokens"])
        emo.append(e.cpu())
        au.append(a.cpu())
        y_emo.append(batch["emotion"].cpu())
        y_au.append(batch["aus"].cpu())
    return (torch.cat(emo).numpy(), torch.cat(au).numpy(), torch.cat(y_emo).numpy(), torch.cat(y_au).numpy())


def validation_metrics(model, reader, device) -> dict:
    return validation_row(*predict_split(model, reader, device))


def validation_row(emo, au, y_emo, y_au) -> dict:
    """The per-epoch log's validation columns from probabilities and labels."""
    e, a = emotion_scores(emo, y_emo), au_f1(au, y_au)
    return {"val_au_f1": a["mean"], "val_emotion_mean_acc": e["mean_accuracy"], "val_emotion_acc": e["overall_accuracy"],
            "val_emotion_macro_f1": e["macro_f1"]}


def build_model(model_cfg: MF2Config, reader: CacheReader) -> MF2:
    model_cfg.vision_dim = reader.vision_dim
    model_cfg.text_dim = reader.text_dim
    if not model_cfg.vocab:
        model_cfg.vocab = reader.vocabulary()
    return MF2(model_cfg)


def pretrain(cache, out, model_cfg: MF2Config, cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
             progress=None, log=print, max_epochs_this_run: int | None = None, init_from=None, align: bool = True) -> dict:
    """Train MF² on ``cache`` into the run folder ``out``; returns the last epoch's log row.

    ``init_from`` (a run folder) starts from that run's weights; ``align=False`` trains the task
    losses only -- together they are full fine-tuning (``mf2 finetune --full``)."""
    out = Path(out)
    if cfg.tasks not in ("au", "emotion", "both"):
        raise RunError(f"tasks: expected au, emotion or both, got {cfg.tasks!r}")
    rank, world = _dist()
    if out.exists() and (out / "config.json").exists() and not resume:
        if not overwrite:
            raise RunError(f"{out} holds an earlier run; pass --resume to continue it or --overwrite to replace it")
        if rank == 0:
            shutil.rmtree(out)
    if resume and not (out / "config.json").exists():
        raise RunError(f"{out}: nothing to resume (no config.json)")
    if resume:
        saved = json.loads((out / "config.json").read_text())
        model_cfg = MF2Config(**saved["model"])
        cfg = TrainConfig(**{**saved["train"], "device": cfg.device})
        align = saved.get("align", True)
    if init_from is not None and not resume:
        from mf2.evaluation.evaluate import load_run

        base, _, _ = load_run(init_from)
        model_cfg = base.cfg
    seed_everything(cfg.seed + rank, cfg.deterministic, cfg.device)
    device = torch.device(cfg.device)
    train = CacheReader(cache, "train", model_cfg.emo_text, cfg.window)
    val = CacheReader(cache, "val", model_cfg.emo_text, cfg.window)
    model = build_model(model_cfg, train).to(device)
    if init_from is not None and not resume:
        model.load_state_dict(base.state_dict())
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)
    start_epoch, step = 0, 0
    if resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            raise RunError(f"{out}: no checkpoint to resume from")
        state, rng = load_checkpoint(ckpt, model, optimizer)
        start_epoch, step = state["epoch"] + 1, state["step"]
        torch.set_rng_state(rng["torch"])
        generator.set_state(rng["itm"])
        log(f"resuming {out} after epoch {state['epoch'] + 1}")
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps({"model": model_cfg.to_dict(), "train": asdict(cfg),
                                                           "cache": str(cache), "features": train.store.signature, "world_size": world, "align": align,
                                                           "init_from": str(init_from) if init_from else None}, indent=2))
    params = count_parameters(model)
    if rank == 0 and not resume:
        atomic_write_text(out / "params.json", json.dumps({"ours": params, "paper": PAPER_PARAMS}, indent=2))
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, find_unused_parameters=True)
    steps_per_epoch = len(train) // cfg.batch_size // world
    total_steps = max(1, steps_per_epoch * cfg.epochs)
    last = None
    end_epoch = cfg.epochs if max_epochs_this_run is None else min(cfg.epochs, start_epoch + max_epochs_this_run)
    for epoch in range(start_epoch, end_epoch):
        model.train()
        batches = (to_device(b, device) for b in train.batches(cfg.batch_size, epoch, cfg.seed, rank=rank, world=world))
        step, stats = train_epoch(batches, lambda b: net(b, cfg.tasks, generator, align), optimizer, step,
                                  total_steps, cfg, progress)
        row = {"epoch": epoch + 1, "rank": rank, "step": step, "lr": optimizer.param_groups[0]["lr"],
               "seconds": stats["seconds"],
               "samples_per_s": round(stats["samples"] * world / stats["seconds"], 2) if stats["seconds"] else None,
               **stats["train"]}
        if rank == 0:
            row.update(validation_metrics(model, val, device))
            _append_log(out, row)
            save_checkpoint(out, epoch, model, optimizer, {"step": step},
                            {"torch": torch.get_rng_state(), "itm": generator.get_state()})
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                         if k in ("epoch", "train_loss", "val_au_f1", "val_emotion_mean_acc", "samples_per_s")))
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
        last = row
    return last


def _append_log(out: Path, row: dict) -> None:
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    columns = sorted({k for r in rows for k in r}, key=lambda k: (k != "epoch", k))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "log.csv", buf.getvalue())
