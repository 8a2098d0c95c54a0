"""An exponential moving average of the trained weights (``TrainConfig.average_epochs``): what
validation scores, what picks the best epoch, and what checkpoints keep as the model's weights.

On a few hundred faces the epoch-to-epoch validation scores are noisy, and the best epoch picked
on them is often an early, lucky one. The average is the weights of the last few epochs, each
step's weighed by ``exp(-age / (average_epochs * steps_per_epoch))``: a smoother trajectory to
pick from, and weights that generalise better (Polyak averaging; the EMA of timm's and BLIP-2's
training scripts). It is debiased as Adam's moments are (the first step's average is that step's
weights), so no warm-up constant is needed.

The average does not touch the training: the optimiser steps the trained weights as without it.
A checkpoint holds the average in ``model.safetensors`` (every reader -- evaluate, predict,
export, DFN's start -- uses it as the model) and the trained weights as ``train::<name>``
tensors of ``optim.safetensors``, with the update count in ``state.json``, so ``--resume``
continues both exactly.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch

RAW_PREFIX = "train::"  # the trained (not averaged) weights inside optim.safetensors


def decay_for(average_epochs: float, steps_per_epoch: float) -> float:
    """Each step's decay for a time constant of ``average_epochs`` epochs; a time constant so long
    that the decay is 1 in floating point (no step would ever count) is a one-line error."""
    decay = math.exp(-1.0 / max(average_epochs * steps_per_epoch, 1e-12))
    if decay >= 1.0:
        raise ValueError(f"train.average_epochs: {average_epochs:g} epochs of {steps_per_epoch:g} steps is too long an "
                         "average (a step's share rounds to 0); use at most the run's own length in epochs")
    return decay


class WeightAverage:
    """The debiased EMA of ``model``'s trainable parameters (buffers and frozen weights are the
    model's own). ``update()`` after each optimiser step; ``applied()`` swaps the average in."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"weight average decay: expected a number in [0, 1), got {decay!r}")
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay, self.updates = decay, 0
        self._raw = None

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        # the debiased average: a step's share is (1 - d) / (1 - d^t), 1 at the first step
        share = (1.0 - self.decay) / (1.0 - self.decay ** self.updates)
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], share)

    @contextmanager
    def applied(self):
        """The model holds the average inside the block (``raw()`` gives the trained weights),
        and its trained weights again after it."""
        with torch.no_grad():
            self._raw = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield self
        finally:
            with torch.no_grad():
                for p, r in zip(self.params, self._raw):
                    p.copy_(r)
            self._raw = None

    def raw(self) -> dict:
        """Inside ``applied()``: the trained weights, as the checkpoint's ``train::`` tensors."""
        if self._raw is None:
            raise RuntimeError("WeightAverage.raw() is only meaningful inside applied()")
        return {f"{RAW_PREFIX}{n}": r.contiguous() for n, r in zip(self.names, self._raw)}

    def state(self) -> dict:
        return {"updates": self.updates, "decay": self.decay}

    @torch.no_grad()
    def restore(self, tensors: dict, state: dict, where) -> None:
        """After a checkpoint's weights (the average) were loaded into the model: they become the
        average, and its ``train::`` tensors the model's trained weights again. Everything read is
        checked first (the update count, the decay this run's settings give, each tensor's shape,
        dtype and finiteness): a checkpoint that does not fit is one line, the model untouched."""
        saved = state.get("weight_average")
        missing = [n for n in self.names if f"{RAW_PREFIX}{n}" not in tensors]
        if not isinstance(saved, dict) or missing:
            raise ValueError(f"{where}: this checkpoint holds no trained weights beside the average "
                             f"({'missing ' + missing[0] if missing else 'no weight_average in state.json'}); "
                             "it was not written by a run with train.average_epochs > 0")
        updates, decay = saved.get("updates"), saved.get("decay")
        if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
            raise ValueError(f"{where}: state.json's weight_average.updates should be a count >= 0, got {updates!r}")
        if isinstance(decay, (int, float)) and not isinstance(decay, bool) and not math.isclose(decay, self.decay,
                                                                                             rel_tol=1e-12):
            raise ValueError(f"{where}: its weight average decays by {decay!r} a step, this run's settings give "
                             f"{self.decay!r} (its steps per epoch changed): resume with the settings it was trained with")
        for n, p in zip(self.names, self.params):
            raw = tensors[f"{RAW_PREFIX}{n}"]
            if raw.shape != p.shape or raw.dtype != p.dtype:
                raise ValueError(f"{where}: {RAW_PREFIX}{n} is {raw.dtype} {tuple(raw.shape)}, the model's "
                                 f"{p.dtype} {tuple(p.shape)}")
            if raw.is_floating_point() and not bool(torch.isfinite(raw).all()):
                raise ValueError(f"{where}: {RAW_PREFIX}{n} holds NaN or infinite values")
        self.shadow = [p.detach().clone() for p in self.params]
        for n, p in zip(self.names, self.params):
            p.copy_(tensors[f"{RAW_PREFIX}{n}"])
        self.updates = updates
