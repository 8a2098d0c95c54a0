"""Typed stub of the native core ``mf2._C`` (built from csrc/). Tensors are DLPack capsules
(``torch.utils.dlpack.to_dlpack``); ``stream`` is a CUDA stream handle, 0 on CPU. Use the
wrappers in ``mf2.ops``; these entry points validate shapes, dtypes and devices but do no
autograd."""

from typing import Any

Capsule = Any

def build_info() -> dict[str, Any]: ...
def au_region_pool_forward(feature_map: Capsule, centres: Capsule, window: Capsule, out: Capsule,
                           R: int, zeros: bool, stream: int = 0) -> None: ...
def au_region_pool_backward(grad_out: Capsule, centres: Capsule, window: Capsule, grad_map: Capsule,
                            R: int, zeros: bool, stream: int = 0) -> None: ...
def dfn_cell_forward(s_prev: Capsule, u: Capsule, b_up: Capsule, h: Capsule, alpha: Capsule,
                     lam: float, s: Capsule, stream: int = 0) -> None: ...
def dfn_cell_backward(grad_out: Capsule, carry: Capsule | None, s_prev: Capsule, u: Capsule, b_up: Capsule,
                      h: Capsule, alpha: Capsule, lam: float, grad_u: Capsule, grad_s_prev: Capsule,
                      grad_h: Capsule | None, grad_b_up: Capsule, grad_alpha: Capsule, workspace: Capsule,
                      stream: int = 0) -> None: ...
def dfn_relu_backward(grad: Capsule, a: Capsule, grad_b_down: Capsule, stream: int = 0) -> None: ...
