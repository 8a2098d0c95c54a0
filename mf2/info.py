"""What ``mf2 info`` reports: versions, the native build, threads and devices."""

from __future__ import annotations

import platform

import torch

from mf2._version import __version__
from mf2.ops import _native


def environment() -> dict:
    build = _native.build_info()
    cuda_device = torch.cuda.is_available()
    return {
        "mf2": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "native_extension": {
            "built": build["native"],
            "active_path": "native" if build["native"] else "reference (PyTorch)",
            **({"reason": build["reason"]} if not build["native"] else {}),
            **({k: build[k] for k in ("compiler", "openmp", "openmp_threads")} if build["native"] else {}),
        },
        "cuda": {
            "compiled": bool(build.get("cuda", False)),
            "architectures": [f"sm_{a}" for a in build.get("cuda_architectures", "").split(",") if a],
            "toolkit": build.get("cuda_version", ""),
            "device_present": cuda_device,
            "device": torch.cuda.get_device_name(0) if cuda_device else None,
            "torch_cuda": torch.version.cuda,
        },
        "threads": {"torch": torch.get_num_threads()},
    }
