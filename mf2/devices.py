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


DEVICE_TYPES = ("cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The device ``device`` names, checked before anything runs on it: 'auto' (the first CUDA GPU
    when there is one, else the CPU), 'cpu', 'cuda' or 'cuda:N'. An unknown name, CUDA on a machine
    without it, or a GPU index past the GPUs here is a one-line ValueError."""
    name = str(device).strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(name)
    except (RuntimeError, ValueError):
        d = None
    if d is None or d.type not in DEVICE_TYPES:
        raise ValueError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name}: CUDA is not available here (torch {torch.__version__}"
                             f"{', a CPU build' if torch.version.cuda is None else ''}); use --device cpu or auto")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})")
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
