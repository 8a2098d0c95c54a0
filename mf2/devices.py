"""Devices and numeric precision, resolved the same way by every command.

* ``resolve_device("auto")`` is the first CUDA GPU when there is one, else the CPU.
* ``resolve_precision("auto", device)`` is bf16 on CUDA devices that support it and fp32
  elsewhere. bf16 means autocast: matrix products and attention in bfloat16, weights, their
  gradients and the optimizer state in float32 (the master copy), losses and softmaxes in float32.
* ``autocast(precision, device)`` is the context every forward runs in.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "bf16", "fp32")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    return d


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """'bf16' or 'fp32' for ``precision`` ('auto', 'bf16' or 'fp32') on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    d = torch.device(device)
    return "bf16" if d.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def autocast(precision: str, device: str | torch.device):
    """bf16 autocast on ``device`` for precision 'bf16'; nothing for 'fp32'."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
