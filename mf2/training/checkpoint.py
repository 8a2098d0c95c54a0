"""Checkpoints as safetensors + JSON (nothing is unpickled on load), written atomically.

A checkpoint is a folder ``checkpoints/epoch_NNNN`` holding ``model.safetensors``,
``optim.safetensors`` (optimizer moments and RNG states) and ``state.json``; it is written
under a temporary name and renamed into place, then ``latest.json`` is replaced. A killed run
leaves either the old or the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mf2.data.manifest import atomic_write_text


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


def save_checkpoint(run: Path, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                    rng: dict, keep_last: int = 1) -> Path:
    run = Path(run)
    final = run / "checkpoints" / f"epoch_{epoch:04d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    names = {id(p): n for n, p in model.named_parameters()}
    tensors, scalars = _flatten_optimizer(optimizer, names)
    tensors.update({f"rng::{k}": v for k, v in rng.items()})
    save_file(tensors, str(tmp / "optim.safetensors"))
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    (tmp / "state.json").write_text(json.dumps({**state, "epoch": epoch, "optimizer_scalars": scalars,
                                                "param_groups": groups}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(run / "checkpoints" / "latest.json", json.dumps({"epoch": epoch, "path": final.name}) + "\n")
    complete = sorted(p for p in (run / "checkpoints").glob("epoch_*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in complete[:-keep_last]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(run: Path) -> Path | None:
    pointer = Path(run) / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return None
    path = Path(run) / "checkpoints" / json.loads(pointer.read_text())["path"]
    return path if path.is_dir() else None


def load_model_state(path: Path) -> dict:
    return load_file(str(Path(path) / "model.safetensors"))


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> tuple[dict, dict]:
    """Restore model (and optimizer); returns (state.json, rng tensors)."""
    path = Path(path)
    model.load_state_dict(load_model_state(path))
    state = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "optim.safetensors"))
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
    return state, rng
