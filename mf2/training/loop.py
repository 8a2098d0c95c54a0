"""What every trainer shares: training settings, seeding, the learning-rate schedule, optimizer
groups, one epoch of steps, and ``fit``, the epoch loop with validation, logs and checkpoints.

Table VI defaults: 30 epochs, AdamW (weight decay 0.05 on weight matrices), lr 1e-4 after a
linear warm-up of 2000 steps (then cosine decay to 0 -- the decay is BLIP-2's; the paper names
only the warm-up), batch 56.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from mf2 import distributed
from mf2.devices import autocast, resolve_precision
from mf2.runs import RunError, RunFolder
from mf2.training.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 56
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_steps: int = 2000
    seed: int = 0
    # deterministic algorithms: the same seed on the same machine gives the same run, bit for bit.
    # None = True on a CPU (without them, the CPU backward of advanced indexing accumulates in
    # thread order; ~4% slower) and False on a GPU (see ``seed_everything``).
    deterministic: bool | None = None
    tasks: str = "both"  # au | emotion | both (which classification losses train)
    device: str = "cpu"
    window: int = 512  # rows read together (shuffle unit)
    precision: str = "auto"  # bf16 autocast (fp32 master weights) | fp32; auto = bf16 on GPUs that support it
    # recompute Q-Former blocks in the backward: none | itm (the ITM passes) | all; auto = itm for
    # the paper preset on a GPU (Table VI's batch 56 then fits in 40 GB), none otherwise
    activation_checkpointing: str = "auto"
    compile: bool = False  # torch.compile each Q-Former block (fused element-wise kernels; a minute to compile)

    def resolved(self, preset: str | None = None) -> "TrainConfig":
        """This config with its automatic values decided for its device and the model's preset
        (what a run records)."""
        gpu = torch.device(self.device).type == "cuda"
        deterministic = not gpu if self.deterministic is None else self.deterministic
        checkpointing = self.activation_checkpointing
        if checkpointing == "auto":
            checkpointing = "itm" if gpu and preset == "paper" else "none"
        return replace(self, deterministic=deterministic, precision=resolve_precision(self.precision, self.device),
                       activation_checkpointing=checkpointing)


def seed_everything(seed: int, deterministic: bool = True, device: str = "cpu") -> None:
    """Seed every generator; ``deterministic`` also restricts torch to deterministic algorithms:
    an op that has none is an error, not a silent difference. On CUDA that also needs cuBLAS's
    fixed workspace (set here, before the first matrix product of the process) and makes
    attention's backward take its deterministic path."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``cfg.warmup_steps``, then cosine decay to 0 at ``total``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on weight matrices only (not on biases, norms, temperatures). The
    fused (one-kernel) update on CUDA."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    fused = torch.device(cfg.device).type == "cuda"
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, **({"fused": True} if fused else {}))


def train_step(batch, losses_of, optimizer, lr: float, precision: str, device) -> object:
    """One optimisation step: the forward under the run's precision (bf16 autocast keeps the
    float32 master weights), backward, update. Returns the forward's ``StepOutput``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(precision, device):
        out = losses_of(batch)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    return out


def train_epoch(batches, losses_of, optimizer, step: int, total_steps: int, cfg: TrainConfig, progress=None):
    """One pass over ``batches`` (``train_step`` with the scheduled lr). Returns the new step count
    and the epoch's mean losses and timing. Losses are summed where they are computed and read
    once at the end, so the steps of an epoch queue on a GPU without waiting for each other."""
    sums, n_batches, n_samples, t0 = {}, 0, 0, time.perf_counter()
    for batch in batches:
        out = train_step(batch, losses_of, optimizer, lr_at(step, total_steps, cfg), cfg.precision, cfg.device)
        step += 1
        n_batches += 1
        size = len(batch["emotion"]) if isinstance(batch, dict) else len(batch)
        n_samples += size
        for k, v in {"loss": out.loss.detach(), **out.logs}.items():
            sums[k] = sums[k] + v.double() if k in sums else v.double()
        if progress:
            progress(size)
    seconds = round(time.perf_counter() - t0, 3)
    return step, {"seconds": seconds, "samples": n_samples,
                  "train": {f"train_{k}": float(v) / max(n_batches, 1) for k, v in sums.items()}}


def resume_latest(run: RunFolder, model: torch.nn.Module, optimizer, generator: torch.Generator | None = None,
                  log=print) -> tuple[int, int]:
    """Restore model, optimizer and random states from the run's latest checkpoint; returns
    (the epoch to start at, the step count)."""
    ckpt = run.latest_checkpoint()
    if ckpt is None:
        raise RunError(f"{run}: no checkpoint to resume from")
    state, rng = load_checkpoint(ckpt, model, optimizer)
    torch.set_rng_state(rng["torch"])
    if generator is not None:
        generator.set_state(rng["itm"])
    log(f"resuming {run} after epoch {state['epoch'] + 1}")
    return state["epoch"] + 1, state["step"]


def rng_state(generator: torch.Generator | None = None) -> dict:
    """The random states a checkpoint keeps: torch's, and the ITM sampling generator's."""
    return {"torch": torch.get_rng_state(), **({"itm": generator.get_state()} if generator is not None else {})}


LOG_KEYS = ("epoch", "train_loss", "val_au_f1", "val_emotion_mean_acc", "samples_per_s", "seconds")


def fit(run: RunFolder, model: torch.nn.Module, optimizer, cfg: TrainConfig, *, batches, losses_of, validate,
        rng_state, start_epoch: int, step: int, total_steps: int, max_epochs_this_run: int | None = None,
        progress=None, log=print) -> dict | None:
    """The epoch loop of every trainer: ``batches(epoch)`` through ``losses_of`` (the model, or its
    DDP wrapper) with the scheduled lr; then on rank 0 ``validate()`` (the log row's validation
    columns), a row in the run's log, a checkpoint (with ``rng_state()``) and a log line. Returns
    the last epoch's row (None when no epoch ran)."""
    rank, world = distributed.rank(), distributed.world_size()
    end_epoch = cfg.epochs if max_epochs_this_run is None else min(cfg.epochs, start_epoch + max_epochs_this_run)
    row = None
    for epoch in range(start_epoch, end_epoch):
        model.train()
        step, stats = train_epoch(batches(epoch), losses_of, optimizer, step, total_steps, cfg, progress)
        row = {"epoch": epoch + 1, "rank": rank, "step": step, "lr": optimizer.param_groups[0]["lr"],
               "seconds": stats["seconds"],
               "samples_per_s": round(stats["samples"] * world / stats["seconds"], 2) if stats["seconds"] else None,
               **stats["train"]}
        if rank == 0:
            row.update(validate())
            run.append_log(row)
            save_checkpoint(run, epoch, model, optimizer, {"step": step}, rng_state())
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                         if k in LOG_KEYS))
        distributed.barrier()
    return row
