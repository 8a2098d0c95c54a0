"""The losses the models train with, and how they are weighted: one rule for MF² and DFN.

Each model declares its losses by name with the key of the weight each takes (``MF2.LOSSES``:
``emo_itc`` -> ``itc``, ..., ``au_cls`` -> ``cls``; ``DFN.LOSSES``: ``emo_cls``/``au_cls`` ->
``cls``, ``align`` -> ``align``); ``weighted_total`` sums them with their weights. A loss a model
computes without declaring it is an error (it can never silently take another loss's weight),
and so is a weight key no loss of the model takes (``check_weights``, called by the configs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_weights(weights: dict, keys, where: str) -> None:
    """Every key of ``weights`` is one of the model's weight ``keys``; a one-line ValueError otherwise."""
    unknown = sorted(set(weights) - set(keys))
    if unknown:
        raise ValueError(f"{where}: unknown loss weight {', '.join(map(repr, unknown))} (the model's losses take "
                         f"{', '.join(keys)})")


def weighted_total(losses: dict, declared: dict, weights: dict) -> torch.Tensor:
    """Σ weight[declared[name]] · loss over ``losses`` (name -> scalar); a weight not given is 1."""
    undeclared = sorted(set(losses) - set(declared))
    if undeclared:
        raise KeyError(f"losses {undeclared} are not declared by the model (declare them with their weight key)")
    return sum(v * weights.get(declared[k], 1.0) for k, v in losses.items())


def task_losses(emotion: torch.Tensor, au: torch.Tensor, y_emotion: torch.Tensor, y_aus: torch.Tensor,
                tasks: str = "both", au_pos_weight: torch.Tensor | None = None) -> dict:
    """The classification losses of ``tasks``: cross-entropy over the 8 emotions (``emo_cls``) and
    BCE per AU (``au_cls``; positives weighted by ``au_pos_weight`` [12] when given), with missing
    labels (-1) masked out (never read as 0)."""
    out = {}
    if tasks in ("emotion", "both"):  # the mean over labelled rows, as a masked sum (no host sync)
        y = y_emotion.long()
        keep = y >= 0
        ce = F.cross_entropy(emotion.float(), y.clamp(min=0), reduction="none")
        out["emo_cls"] = (ce * keep).sum() / keep.sum().clamp(min=1)
    if tasks in ("au", "both"):
        y = y_aus.float()
        keep = y >= 0
        bce = F.binary_cross_entropy_with_logits(au.float(), y.clamp(min=0), reduction="none", pos_weight=au_pos_weight)
        out["au_cls"] = (bce * keep).sum() / keep.sum().clamp(min=1)
    return out
