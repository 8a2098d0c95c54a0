"""Checkpoints as safetensors + JSON (nothing is unpickled on load), written atomically.

A checkpoint is a folder ``checkpoints/epoch_NNNN`` holding ``model.safetensors``,
``optim.safetensors`` (optimizer moments and RNG states), ``state.json`` and ``SHA256SUMS`` (the
digests of the three, checked when they are read back: a changed or truncated file is one line,
never other weights); it is written under a temporary name and renamed into place, then the run
folder's ``latest.json`` pointer is replaced (``mf2.runs``). A killed run leaves either the old
or the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from mf2.io import atomic_folder, load_tensors, save_tensors, write_checksums
from mf2.runs import REMEDY, RunFolder, fit_weights


def _flatten_optimizer(optimizer: torch.optim.Optimizer, names: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for param, state in optimizer.state.items():
        name = names[id(param)]
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"{name}::{key}"] = value.detach().contiguous()
            else:
                scalars[f"{name}::{key}"] = float(value)
    return tensors, scalars


def save_checkpoint(run: RunFolder, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                    rng: dict, best_score: float | None = None, training_tensors: dict | None = None) -> Path:
    """Write epoch ``epoch``'s checkpoint and point latest.json at it; with ``best_score`` it is
    also the new best (best.json). Older checkpoints go, except the best one.
    ``training_tensors``: more tensors that only resuming reads (the trained weights beside a
    weight average, ``mf2.training.averaging``), kept in optim.safetensors."""
    final = run.checkpoints / f"epoch_{epoch:04d}"
    with atomic_folder(final) as tmp:
        save_tensors({k: v.detach().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        names = {id(p): n for n, p in model.named_parameters()}
        tensors, scalars = _flatten_optimizer(optimizer, names)
        tensors.update({f"rng::{k}": v for k, v in rng.items()})
        tensors.update(training_tensors or {})
        save_tensors(tensors, tmp / "optim.safetensors")
        groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        (tmp / "state.json").write_text(json.dumps({**state, "epoch": epoch, "optimizer_scalars": scalars,
                                                    "param_groups": groups, "sha256sums": True}, indent=2))
        write_checksums(tmp, ["model.safetensors", "optim.safetensors", "state.json"])
    run.set_latest(final, epoch)
    if best_score is not None:
        run.set_best(final, epoch, best_score)
    keep = {final.name, *(p.name for p in [run.best_checkpoint()] if p is not None)}
    for old in run.checkpoints.glob("epoch_*"):
        if old.is_dir() and not old.name.endswith(".tmp") and old.name not in keep:
            shutil.rmtree(old)
    return final


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    average=None) -> tuple[dict, dict]:
    """Restore model (and optimizer; and with ``average``, a ``WeightAverage``, the average and
    the trained weights it was taken of); returns (state.json, rng tensors). Every file is
    verified against the checkpoint's SHA256SUMS, and the weights against the model, before use."""
    path = Path(path)
    model.load_state_dict(fit_weights(model, path / "model.safetensors"))
    state = RunFolder.checkpoint_state(path)
    tensors = load_tensors(path / "optim.safetensors", remedy=REMEDY)
    rng = {k.split("::", 1)[1]: v for k, v in tensors.items() if k.startswith("rng::")}
    if optimizer is not None:
        params = dict(model.named_parameters())
        for name, p in params.items():
            entry = {key.split("::", 1)[1]: v for key, v in tensors.items() if key.startswith(f"{name}::")}
            entry.update({key.split("::", 1)[1]: torch.tensor(v) for key, v in state["optimizer_scalars"].items()
                          if key.startswith(f"{name}::")})
            if entry:
                optimizer.state[p] = entry
        for group, saved in zip(optimizer.param_groups, state["param_groups"]):
            group.update(saved)
    if average is not None:
        average.restore(tensors, state, path)
    return state, rng
