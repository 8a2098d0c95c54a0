"""dfn_pathway: the fused native pathway == the eager PyTorch loop (values and the gradients of
every parameter and input), the gate/λ semantics, and the error messages."""

import pytest
import torch
from torch.autograd import gradcheck

from helpers import DEVICES, skip_without_cuda_kernels
from mf2.ops import _native, dfn_pathway, dfn_pathway_reference

NAMES = ("s0", "h", "w_down", "b_down", "w_up", "b_up", "alpha")


def make_args(N, B, D, r, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(B, D), (N, B, D), (N, r, D), (N, r), (N, D, r), (N, D), (N,)]
    scales = [1.0, 1.0, D ** -0.5, 0.5, r ** -0.5, 0.5, 1.0]
    return [(torch.randn(*s, generator=g, dtype=dtype) * k).to(device) for s, k in zip(shapes, scales)]


def compare(args, lam=0.1, tol=None, requires=NAMES):
    tol = tol or {}
    a = [t.detach().clone().requires_grad_(n in requires) for n, t in zip(NAMES, args)]
    b = [t.detach().clone().requires_grad_(n in requires) for n, t in zip(NAMES, args)]
    out = dfn_pathway(*a, lam=lam, implementation="native")
    ref = dfn_pathway_reference(*b, lam=lam)
    torch.testing.assert_close(out, ref, **tol)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    for name, x, y in zip(NAMES, a, b):
        if name in requires:
            torch.testing.assert_close(x.grad, y.grad, **tol, msg=lambda m: f"grad of {name}: {m}")
        else:
            assert x.grad is None
    return out


@pytest.mark.usefixtures("native_required")
@pytest.mark.parametrize("device", DEVICES)
class TestAgainstReference:
    def test_small_float64(self, device):
        skip_without_cuda_kernels(device)
        compare(make_args(3, 5, 8, 4, device=device))

    def test_batch_1_and_one_cell(self, device):
        skip_without_cuda_kernels(device)
        compare(make_args(1, 1, 6, 3, device=device), lam=0.7)

    def test_realistic_float32(self, device):
        skip_without_cuda_kernels(device)
        compare(make_args(12, 56, 768, 192, dtype=torch.float32, device=device), tol=dict(rtol=2e-4, atol=2e-4))

    def test_only_some_gradients(self, device):
        skip_without_cuda_kernels(device)
        compare(make_args(3, 4, 6, 2, device=device), requires=("w_up", "alpha"))
        compare(make_args(3, 4, 6, 2, device=device), requires=("s0",))
        compare(make_args(3, 4, 6, 2, device=device), requires=("h", "b_down"))

    def test_non_contiguous_inputs(self, device):
        skip_without_cuda_kernels(device)
        N, B, D, r = 3, 4, 6, 5
        args = make_args(N, B, D, r, device=device)
        args[0] = args[0].t().contiguous().t()  # s0 with swapped strides
        args[1] = args[1].transpose(0, 1).contiguous().transpose(0, 1)  # h [N, B, D] from [B, N, D]
        args[2] = torch.randn(N, D, r, dtype=torch.float64, device=device).transpose(1, 2)  # w_down
        args[5] = torch.randn(N, 2 * D, dtype=torch.float64, device=device)[:, ::2]  # b_up, stride 2
        assert not any(a.is_contiguous() for i, a in enumerate(args) if i in (0, 1, 2, 5))
        compare(args)

    def test_only_the_last_state_used(self, device):
        skip_without_cuda_kernels(device)
        args = [t.requires_grad_(True) for t in make_args(4, 3, 5, 2, device=device)]
        dfn_pathway(*args, implementation="native")[-1].sum().backward()
        native = [t.grad.clone() for t in args]
        for t in args:
            t.grad = None
        dfn_pathway_reference(*args)[-1].sum().backward()
        for x, t in zip(native, args):
            torch.testing.assert_close(x, t.grad)


@pytest.mark.usefixtures("native_required")
@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    skip_without_cuda_kernels(device)
    args = tuple(t.requires_grad_(True) for t in make_args(3, 4, 5, 3, device=device))
    assert gradcheck(lambda *a: dfn_pathway(*a, lam=0.3, implementation="native"), args)


@pytest.mark.parametrize("implementation", ["native", "reference"])
def test_lambda_zero_gate_zero_gives_the_frozen_outputs(implementation):
    if implementation == "native" and not _native.available():
        pytest.skip("native extension not available")
    s0, h, w_down, b_down, w_up, b_up, _ = make_args(4, 3, 6, 2)
    closed = torch.full((4,), -float("inf"), dtype=torch.float64)  # g = sigmoid(-inf) = 0
    out = dfn_pathway(s0, h, w_down, b_down, w_up, torch.zeros_like(b_up), closed, lam=0.0,
                      implementation=implementation)
    assert torch.equal(out, h)
    # g = 1, λ = 0, b_up = 0: the side state is carried unchanged through every cell
    opened = torch.full((4,), float("inf"), dtype=torch.float64)
    out = dfn_pathway(s0, h, w_down, b_down, w_up, torch.zeros_like(b_up), opened, lam=0.0,
                      implementation=implementation)
    assert torch.equal(out, s0.expand(4, -1, -1))


def test_one_cell_by_hand():
    """s_1 = g (s_0 + λ W_up ReLU(W_down s_0 + b_down) + b_up) + (1 - g) h_1, written out."""
    s0, h, w_down, b_down, w_up, b_up, alpha = make_args(1, 2, 3, 2)
    g = 1 / (1 + torch.exp(-alpha[0]))
    z = s0 @ w_down[0].T + b_down[0]
    expect = g * (s0 + 0.1 * (z.clamp(min=0) @ w_up[0].T) + b_up[0]) + (1 - g) * h[0]
    for impl in (["native"] if _native.available() else []) + ["reference"]:
        torch.testing.assert_close(dfn_pathway(s0, h, w_down, b_down, w_up, b_up, alpha, implementation=impl)[0], expect)


def _bad(index, value):
    args = make_args(3, 4, 6, 2)
    args[index] = value
    return args


@pytest.mark.parametrize("implementation", ["auto", "native", "reference"])
@pytest.mark.parametrize("args,message", [
    (_bad(0, torch.randn(4, 6, 1)), r"s0: expected \[B, D\], got \(4, 6, 1\)"),
    (_bad(1, torch.randn(3, 5, 6)), r"h: expected \[N, B, D\] with B, D = 4, 6, got \(3, 5, 6\)"),
    (_bad(2, torch.randn(3, 2, 7)), r"w_down: expected \[N, r, D\] with N, D = 3, 6, got \(3, 2, 7\)"),
    (_bad(3, torch.randn(3, 3)), r"b_down: expected \[3, 2\], got \(3, 3\)"),
    (_bad(4, torch.randn(3, 2, 6)), r"w_up: expected \[3, 6, 2\], got \(3, 2, 6\)"),
    (_bad(5, torch.randn(6)), r"b_up: expected \[3, 6\], got \(6,\)"),
    (_bad(6, torch.randn(3, 1)), r"alpha: expected \[3\], got \(3, 1\)"),
    (_bad(6, torch.randn(3, dtype=torch.float32)), r"alpha: expected torch.float64 on cpu like s0, got torch.float32 on cpu"),
    (_bad(1, torch.randn(3, 4, 6, dtype=torch.float64, device="meta")), r"h: expected torch.float64 on cpu like s0, got torch.float64 on meta"),
])
def test_bad_inputs_name_the_argument_and_shape(args, message, implementation):
    with pytest.raises(ValueError, match=message):
        dfn_pathway(*args, implementation=implementation)


@pytest.mark.usefixtures("native_required")
def test_native_layer_validates_raw_calls():
    C, dl = _native.lib(), _native.dl
    states, ups = torch.randn(2, 4, 6), torch.randn(1, 4, 6)  # stacked over cells; cell 0
    with pytest.raises(ValueError, match=r"h: expected \[4, 6\], got \[4, 5\] float32 on cpu"):
        C.dfn_cell_forward(dl(states), dl(ups), dl(torch.randn(1, 6)), dl(torch.randn(1, 4, 5)), dl(torch.zeros(1)), 0.1, 0)
    with pytest.raises(ValueError, match=r"s\w*: no entry [23] in \[2, 4, 6\]"):
        C.dfn_cell_forward(dl(states), dl(ups), dl(torch.randn(1, 6)), dl(torch.randn(1, 4, 6)), dl(torch.zeros(1)), 0.1, 2)
    workspace = torch.zeros(C.dfn_workspace_size(4, 3))
    with pytest.raises(ValueError, match=r"grad_b_down: expected \[3\], got \[2\] float32 on cpu"):
        C.dfn_relu_backward(dl(torch.randn(1, 4, 3)), dl(torch.randn(1, 4, 3)), dl(torch.zeros(1, 2)), 0, dl(workspace))
    with pytest.raises(ValueError, match=r"workspace: expected \[>= "):
        C.dfn_relu_backward(dl(torch.randn(1, 4, 3)), dl(torch.randn(1, 4, 3)), dl(torch.zeros(1, 3)), 0, dl(torch.zeros(2)))
