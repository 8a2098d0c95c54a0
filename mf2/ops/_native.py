"""Loading of the native core ``mf2._C`` and the small helpers every op's dispatch shares.

The extension has no Torch headers: tensors cross as DLPack capsules and CUDA streams as
integers. torch is imported first so that the extension's OpenMP calls bind to the OpenMP
runtime torch already loaded (one thread pool, not two fighting over the cores).
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch.utils.dlpack import to_dlpack

_C = None
_load_error: str | None = None

if os.environ.get("MF2_DISABLE_NATIVE", "") not in ("", "0"):
    _load_error = "disabled by MF2_DISABLE_NATIVE"
else:
    try:
        import mf2._C as _C  # type: ignore[no-redef]  (the compiled extension)
    except ImportError as exc:  # not built, or built for another Python
        _load_error = f"mf2._C could not be imported ({exc})"

_NATIVE_DTYPES = (torch.float32, torch.float64)


def available() -> bool:
    """True when the compiled extension is loaded."""
    return _C is not None


def load_error() -> str | None:
    """Why the extension is not in use, or None when it is."""
    return _load_error


def build_info() -> dict:
    """What the extension was compiled with: OpenMP, CUDA and its architectures, compiler."""
    if _C is None:
        return {"native": False, "reason": _load_error}
    return {"native": True, **_C.build_info()}


def cuda_compiled() -> bool:
    return _C is not None and bool(_C.build_info()["cuda"])


def supports(t: torch.Tensor) -> bool:
    """Whether the native kernels can take tensors like ``t`` (device and dtype)."""
    if _C is None or t.dtype not in _NATIVE_DTYPES:
        return False
    if t.device.type == "cpu":
        return True
    return t.device.type == "cuda" and cuda_compiled()


def require(t: torch.Tensor, op: str) -> None:
    """Raise a one-line error when ``implementation='native'`` cannot serve ``t``."""
    if _C is None:
        raise RuntimeError(f"{op}: the native extension is not available: {_load_error}")
    if not supports(t):
        raise RuntimeError(
            f"{op}: the native kernels take float32/float64 tensors on cpu"
            f"{' or cuda' if cuda_compiled() else ''}; got {t.dtype} on {t.device}"
        )


def dl(t: torch.Tensor):
    """A DLPack capsule of ``t`` (detached: the capsule carries no autograd state)."""
    return to_dlpack(t.detach())


def on_device(t: torch.Tensor):
    """Make ``t``'s GPU current while the kernels launch (they run on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def stream(t: torch.Tensor) -> int:
    """The current CUDA stream of ``t``'s device as an integer, 0 for CPU tensors."""
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


def lib():
    """The extension module; call only after :func:`available` or :func:`require`."""
    return _C
