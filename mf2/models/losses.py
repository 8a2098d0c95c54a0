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

# Each model's losses: name -> the key of the weight it takes (MF²: ``MF2Config.loss_weights``;
# DFN: ``cls`` 1, ``align`` = ``DFNConfig.align_weight``). A new loss is computed here (or in
# the branch that makes it) and declared here.
MF2_LOSSES = {**{f"{b}_{k}": k for b in ("emo", "au") for k in ("itc", "itm", "itg")}, "emo_cls": "cls", "au_cls": "cls"}
DFN_LOSSES = {"emo_cls": "cls", "au_cls": "cls", "align": "align"}


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
                tasks: str = "both", au_pos_weight: torch.Tensor | None = None, emotion_smoothing: float = 0.0,
                mix=None) -> dict:
    """The classification losses of ``tasks``: cross-entropy over the 8 emotions (label-smoothed
    by ``emotion_smoothing``) and BCE per AU (positives weighted by ``au_pos_weight`` [12] when
    given), with missing labels (-1) masked out (never read as 0). ``mix`` (partner rows, partner
    shares; ``HeadRegularisation.mix``): the logits are of mixed inputs, the labels mix the same way
    (a row whose partner lacks a label keeps only its own)."""
    out = {}
    if tasks in ("emotion", "both"):  # the mean over labelled rows, as a masked sum (no host sync)
        y = y_emotion.long()
        keep = (y >= 0).float()
        ce = F.cross_entropy(emotion.float(), y.clamp(min=0), reduction="none", label_smoothing=emotion_smoothing)
        if mix is not None:
            perm, share = mix
            other = F.cross_entropy(emotion.float(), y.clamp(min=0).index_select(0, perm), reduction="none",
                                    label_smoothing=emotion_smoothing)
            share = share * keep.index_select(0, perm)
            ce = (1 - share) * ce + share * other
        out["emo_cls"] = (ce * keep).sum() / keep.sum().clamp(min=1)
    if tasks in ("au", "both"):
        y = y_aus.float()
        keep = y >= 0
        target = y.clamp(min=0)
        if mix is not None:
            perm, share = mix
            partner = y.index_select(0, perm)
            w = share[:, None] * (partner >= 0)
            target = (1 - w) * target + w * partner.clamp(min=0)
        bce = F.binary_cross_entropy_with_logits(au.float(), target, reduction="none", pos_weight=au_pos_weight)
        out["au_cls"] = (bce * keep).sum() / keep.sum().clamp(min=1)
    return out
