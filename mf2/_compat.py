"""Importing timm / transformers next to a torchvision build whose compiled ops do not load
with this torch (DATA.md: torchvision 0.28.0 is a CUDA build beside CPU torch 2.13.0).

torchvision registers Python fallbacks for its C++ ops at import; when its C++ library did
not load, the op does not exist and the import dies with "operator torchvision::nms does not
exist". Then, and only then, mf2 defines the missing schemas and imports again: the import
finishes and only torchvision's own C++ ops (nms, roi_align, ...) stay unusable; mf2 calls
none. Where torchvision works (a matching build), nothing is touched. This is the one place
mf2 handles it: import timm and transformers through ``import_timm`` / ``import_transformers``.
"""

from __future__ import annotations

import re
import sys

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_libraries = []  # the Library objects must stay alive for their schemas to stay defined
_checked = False


def ensure_torchvision_importable() -> None:
    global _checked
    if _checked:
        return
    for _ in range(len(_SCHEMAS) + 1):
        try:
            import torchvision  # noqa: F401
        except ImportError:
            break  # not installed: nothing to fix
        except RuntimeError as exc:
            match = re.search(r"operator torchvision::(\w+) does not exist", str(exc))
            if not match or match.group(1) not in _SCHEMAS:
                raise
            for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
                del sys.modules[name]
            lib = torch.library.Library("torchvision", "FRAGMENT")
            lib.define(_SCHEMAS[match.group(1)])
            _libraries.append(lib)
            continue
        break
    _checked = True


def import_timm():
    ensure_torchvision_importable()
    import timm

    return timm


def import_transformers():
    ensure_torchvision_importable()
    import transformers

    return transformers
