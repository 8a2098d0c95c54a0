"""The DFN side pathway (paper §III-B): a chain of N adapter cells that runs beside the frozen
MF² and reads each of its blocks through a learnable gate.

One cell l (D = pathway width, r = bottleneck):

    s_l = g_l * (s_{l-1} + lam * W_up_l ReLU(W_down_l s_{l-1} + b_down_l) + b_up_l) + (1 - g_l) * h_l
    g_l = sigmoid(alpha_l)

``s_0`` is the frozen encoder's last-layer CLS; ``h_l`` the pooled output of MF² block l. With
lam = 0 and g = 0 the pathway returns the frozen outputs h. (The bias b_up is added outside
the lam scaling, exactly as written above.)

Parameters are stacked over the cells: W_down [N, r, D], b_down [N, r], W_up [N, D, r],
b_up [N, D], alpha [N]. One call runs the whole pathway and is one autograd node: the native
path fuses each cell's element-wise chain (and, backward, the bias/gate reductions) into one
kernel around the two matmuls, which stay in torch's BLAS / cuBLAS; weight gradients of all
cells come from two batched matmuls after the backward sweep.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mf2.ops import _native

__all__ = ["dfn_pathway", "dfn_pathway_reference"]


def _check(s0, h, w_down, b_down, w_up, b_up, alpha):
    def shape(t):
        return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__

    if not isinstance(s0, torch.Tensor) or s0.dim() != 2:
        raise ValueError(f"s0: expected [B, D], got {shape(s0)}")
    B, D = s0.shape
    if not isinstance(h, torch.Tensor) or h.dim() != 3 or h.shape[1:] != (B, D):
        raise ValueError(f"h: expected [N, B, D] with B, D = {B}, {D}, got {shape(h)}")
    N = h.shape[0]
    if not isinstance(w_down, torch.Tensor) or w_down.dim() != 3 or w_down.shape[0] != N or w_down.shape[2] != D:
        raise ValueError(f"w_down: expected [N, r, D] with N, D = {N}, {D}, got {shape(w_down)}")
    r = w_down.shape[1]
    expected = {"b_down": (b_down, (N, r)), "w_up": (w_up, (N, D, r)), "b_up": (b_up, (N, D)), "alpha": (alpha, (N,))}
    for name, (t, want) in expected.items():
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != want:
            raise ValueError(f"{name}: expected {list(want)}, got {shape(t)}")
    for name, t in (("h", h), ("w_down", w_down), ("b_down", b_down), ("w_up", w_up), ("b_up", b_up), ("alpha", alpha)):
        if t.dtype != s0.dtype or t.device != s0.device:
            raise ValueError(f"{name}: expected {s0.dtype} on {s0.device} like s0, got {t.dtype} on {t.device}")
    if not s0.is_floating_point():
        raise ValueError(f"s0: expected a floating-point tensor, got {s0.dtype}")


def dfn_pathway_reference(s0, h, w_down, b_down, w_up, b_up, alpha, lam: float = 0.1):
    """Eager PyTorch pathway: the test oracle and the fallback. Returns the states [N, B, D]."""
    _check(s0, h, w_down, b_down, w_up, b_up, alpha)
    s, states = s0, []
    for l in range(h.shape[0]):
        g = torch.sigmoid(alpha[l])
        a = F.relu(F.linear(s, w_down[l], b_down[l]))
        s = g * (s + lam * F.linear(a, w_up[l]) + b_up[l]) + (1 - g) * h[l]
        states.append(s)
    return torch.stack(states)


class _DFNPathwayFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s0, h, w_down, b_down, w_up, b_up, alpha, lam):
        with _native.on_device(s0):
            return _DFNPathwayFunction._forward(ctx, s0, h, w_down, b_down, w_up, b_up, alpha, lam)

    @staticmethod
    def _forward(ctx, s0, h, w_down, b_down, w_up, b_up, alpha, lam):
        C, dl = _native.lib(), _native.dl
        stream = _native.stream(s0)
        h, w_down, b_down, w_up, b_up = (t.detach().contiguous() for t in (h, w_down, b_down, w_up, b_up))
        alpha = alpha.detach().contiguous()
        N, B, D = h.shape
        r = w_down.shape[1]
        states = s0.new_empty(N + 1, B, D)  # s_0 .. s_N
        states[0] = s0
        acts = s0.new_empty(N, B, r)  # ReLU outputs a_l
        ups = s0.new_empty(N, B, D)  # W_up a_l
        # one capsule per stacked tensor serves every cell (the native entry points take the index)
        cells = (dl(states), dl(ups), dl(b_up), dl(h), dl(alpha))
        for l in range(N):
            torch.addmm(b_down[l], states[l], w_down[l].t(), out=acts[l])
            acts[l].relu_()
            torch.mm(acts[l], w_up[l].t(), out=ups[l])
            C.dfn_cell_forward(*cells, lam, l, stream)
        ctx.save_for_backward(states, acts, ups, h, w_down, w_up, b_up, alpha)
        ctx.lam = lam
        return states[1:]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_states):
        with _native.on_device(grad_states):
            return _DFNPathwayFunction._backward(ctx, grad_states)

    @staticmethod
    def _backward(ctx, grad_states):
        C, dl = _native.lib(), _native.dl
        states, acts, ups, h, w_down, w_up, b_up, alpha = ctx.saved_tensors
        need_s0, need_h, need_wd, need_bd, need_wu, need_bu, need_alpha, _ = ctx.needs_input_grad
        stream = _native.stream(states)
        grad_states = grad_states.contiguous()
        N, B, D = h.shape
        r = acts.shape[2]
        grad_u = ups.new_empty(N, B, D)
        grad_z = acts.new_empty(N, B, r)
        grad_h = h.new_empty(N, B, D) if need_h else None
        grad_b_up = b_up.new_empty(N, D)
        grad_b_down = b_up.new_empty(N, r)
        grad_alpha = alpha.new_empty(N)
        workspace = b_up.new_empty(C.dfn_workspace_size(B, max(2 * D, r)))
        buffers = (states.new_empty(B, D), states.new_empty(B, D))  # ping-pong dL/ds carries
        buffer_caps = tuple(dl(t) for t in buffers)
        caps = {name: dl(t) for name, t in (("grad_states", grad_states), ("states", states), ("ups", ups),
                                            ("b_up", b_up), ("h", h), ("alpha", alpha), ("grad_u", grad_u),
                                            ("grad_b_up", grad_b_up), ("grad_alpha", grad_alpha),
                                            ("workspace", workspace), ("grad_z", grad_z), ("acts", acts),
                                            ("grad_b_down", grad_b_down))}
        grad_h_cap = None if grad_h is None else dl(grad_h)
        carry = carry_cap = None
        for l in reversed(range(N)):
            direct = buffers[l % 2]
            C.dfn_cell_backward(caps["grad_states"], carry_cap, caps["states"], caps["ups"], caps["b_up"], caps["h"],
                                caps["alpha"], ctx.lam, l, caps["grad_u"], buffer_caps[l % 2], grad_h_cap,
                                caps["grad_b_up"], caps["grad_alpha"], caps["workspace"], stream)
            torch.mm(grad_u[l], w_up[l], out=grad_z[l])  # dL/da_l
            C.dfn_relu_backward(caps["grad_z"], caps["acts"], caps["grad_b_down"], l, caps["workspace"],
                                stream)  # -> dL/dz_l
            if l > 0 or need_s0:
                carry, carry_cap = direct.addmm_(grad_z[l], w_down[l]), buffer_caps[l % 2]  # dL/ds_{l-1}
        grad_w_down = torch.bmm(grad_z.transpose(1, 2), states[:-1]) if need_wd else None
        grad_w_up = torch.bmm(grad_u.transpose(1, 2), acts) if need_wu else None
        return (
            carry if need_s0 else None,
            grad_h,
            grad_w_down,
            grad_b_down if need_bd else None,
            grad_w_up,
            grad_b_up if need_bu else None,
            grad_alpha if need_alpha else None,
            None,
        )


def dfn_pathway(s0, h, w_down, b_down, w_up, b_up, alpha, lam: float = 0.1, implementation: str = "auto"):
    """Run a DFN side pathway of N cells.

    Args:
        s0: [B, D] start state (the frozen encoder's last-layer CLS).
        h: [N, B, D] pooled outputs of the N frozen MF² blocks.
        w_down, b_down, w_up, b_up, alpha: stacked cell parameters, [N, r, D], [N, r],
            [N, D, r], [N, D], [N].
        lam: gate scaling λ (paper: 0.1).
        implementation: ``'auto'``, ``'native'`` or ``'reference'``.

    Returns:
        [N, B, D]: the states s_1 .. s_N (the last one feeds the task head).
    """
    if implementation not in ("auto", "native", "reference"):
        raise ValueError(f"implementation: expected 'auto', 'native' or 'reference', got {implementation!r}")
    _check(s0, h, w_down, b_down, w_up, b_up, alpha)
    if implementation == "reference" or (implementation == "auto" and not _native.supports(s0)):
        return dfn_pathway_reference(s0, h, w_down, b_down, w_up, b_up, alpha, lam)
    if implementation == "native":
        _native.require(s0, "dfn_pathway")
    return _DFNPathwayFunction.apply(s0, h, w_down, b_down, w_up, b_up, alpha, float(lam))
