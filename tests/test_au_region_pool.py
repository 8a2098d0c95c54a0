"""au_region_pool: native kernels == the grid_sample reference (values and map gradients),
the sampling geometry against an analytic map, and the error messages."""

import pytest
import torch
from torch.autograd import gradcheck

from helpers import DEVICES, require_native, skip_without_cuda_kernels
from mf2.ops import _native, au_region_pool, au_region_pool_reference

TOL32 = dict(rtol=1e-5, atol=1e-5)


def make_inputs(B, C, H, W, K, dtype=torch.float64, device="cpu", seed=0, spread=(-0.3, 1.3)):
    g = torch.Generator().manual_seed(seed)
    fmap = torch.randn(B, C, H, W, generator=g, dtype=dtype).to(device)
    lo, hi = spread
    centres = (torch.rand(B, K, 2, generator=g, dtype=dtype) * (hi - lo) + lo).to(device)
    window = (torch.rand(B, generator=g, dtype=dtype) * 0.4 + 0.05).to(device)
    return fmap, centres, window


def compare(fmap, centres, window, R, padding, tol=None, layout="BCHW"):
    """Native and reference agree on values and on the gradient w.r.t. the map."""
    tol = tol or {}
    a_map = fmap.detach().clone().requires_grad_(True)
    b_map = fmap.detach().clone().requires_grad_(True)
    out = au_region_pool(a_map, centres, window, R, padding, layout=layout, implementation="native")
    ref = au_region_pool_reference(b_map, centres, window, R, padding, layout=layout)
    torch.testing.assert_close(out, ref, **tol)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(a_map.grad, b_map.grad, **tol)
    return out


@pytest.mark.usefixtures("native_required")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("padding", ["border", "zeros"])
class TestAgainstReference:
    def test_small_float64(self, device, padding):
        skip_without_cuda_kernels(device)
        compare(*make_inputs(3, 5, 6, 7, 4, device=device), R=3, padding=padding)

    def test_centres_on_and_beyond_the_border(self, device, padding):
        skip_without_cuda_kernels(device)
        fmap, _, _ = make_inputs(2, 4, 5, 5, 1, device=device)
        pts = [0.0, 1.0, -0.25, 1.25, 0.5, 0.1, 0.9, -3.0, 4.0]
        centres = torch.tensor([[x, y] for x in pts for y in pts], dtype=torch.float64, device=device)
        centres = centres.expand(2, -1, -1).contiguous()
        compare(fmap, centres, 0.3, R=3, padding=padding)

    def test_R1_and_batch_1(self, device, padding):
        skip_without_cuda_kernels(device)
        compare(*make_inputs(1, 3, 4, 4, 5, device=device), R=1, padding=padding)

    def test_even_R_and_single_pixel_map(self, device, padding):
        skip_without_cuda_kernels(device)
        compare(*make_inputs(2, 3, 1, 1, 3, device=device), R=2, padding=padding)

    @pytest.mark.parametrize("H,W,C", [(14, 14, 768), (7, 7, 1280)])
    def test_realistic_float32(self, device, padding, H, W, C):
        skip_without_cuda_kernels(device)
        fmap, centres, window = make_inputs(56, C, H, W, 24, dtype=torch.float32, device=device,
                                            spread=(-0.05, 1.05))
        compare(fmap, centres, window, R=3, padding=padding, tol=TOL32)

    def test_non_contiguous_inputs(self, device, padding):
        skip_without_cuda_kernels(device)
        fmap, centres, window = make_inputs(4, 6, 5, 8, 3, device=device)
        wide = torch.randn(4, 12, 5, 8, dtype=torch.float64, device=device)
        strided = wide[:, ::2]  # channel stride 2
        assert not strided.is_contiguous()
        compare(strided, centres, window, R=3, padding=padding)
        transposed = fmap.transpose(2, 3).contiguous().transpose(2, 3)  # H/W strides swapped
        compare(transposed, centres, window, R=3, padding=padding)
        channels_last = fmap.contiguous(memory_format=torch.channels_last)
        compare(channels_last, centres, window, R=3, padding=padding)
        centres_nc = centres.transpose(0, 1).contiguous().transpose(0, 1)
        assert not centres_nc.is_contiguous()
        compare(fmap, centres_nc, window, R=3, padding=padding)

    def test_bhwc_layout_and_window_forms(self, device, padding):
        skip_without_cuda_kernels(device)
        fmap, centres, window = make_inputs(2, 5, 6, 6, 4, device=device)
        out = compare(fmap.permute(0, 2, 3, 1), centres, window, R=2, padding=padding, layout="BHWC")
        expect = au_region_pool_reference(fmap, centres, window, 2, padding)
        torch.testing.assert_close(out, expect)
        compare(fmap, centres, 0.2, R=2, padding=padding)  # one number
        compare(fmap, centres, torch.rand(2, 4, dtype=torch.float64, device=device) * 0.3, R=2, padding=padding)


@pytest.mark.usefixtures("native_required")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("padding", ["border", "zeros"])
def test_gradcheck(device, padding):
    skip_without_cuda_kernels(device)
    fmap, centres, window = make_inputs(2, 3, 4, 5, 3, device=device)
    fmap.requires_grad_(True)
    assert gradcheck(lambda m: au_region_pool(m, centres, window, 3, padding, implementation="native"), (fmap,))


@pytest.mark.parametrize("implementation", ["native", "reference"])
def test_geometry_on_a_linear_map(implementation, native_required):
    """Bilinear sampling of f(x, y) = 2 u + 3 v + 1 (u, v pixel coordinates, pixel centres at
    i + 0.5 of the image size) returns f at each sample position: checks the coordinate
    convention and the R x R grid layout without any reference implementation."""
    H, W = 6, 8
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    fmap = (2 * u + 3 * v + 1)[None, None].repeat(1, 2, 1, 1)
    centres = torch.tensor([[[0.5, 0.5], [0.3, 0.6]]], dtype=torch.float64)
    window, R = 0.25, 3
    out = au_region_pool(fmap, centres, window, R, "zeros", implementation=implementation)
    for k, (cx, cy) in enumerate(centres[0].tolist()):
        for iy in range(R):
            for ix in range(R):
                x = cx + ((ix + 0.5) / R - 0.5) * window
                y = cy + ((iy + 0.5) / R - 0.5) * window
                expect = 2 * (x * W - 0.5) + 3 * (y * H - 0.5) + 1
                assert out[0, k, iy * R + ix].tolist() == pytest.approx([expect, expect])
    # R = 1 samples the centre itself
    centre = au_region_pool(fmap, centres, window, 1, "zeros", implementation=implementation)
    torch.testing.assert_close(centre[:, :, 0], out[:, :, R * R // 2])


@pytest.mark.usefixtures("native_required")
def test_border_modes_differ_outside_and_nonfinite_centres_give_zero():
    fmap = torch.ones(1, 3, 4, 4, dtype=torch.float64)
    centres = torch.tensor([[[-1.0, -1.0], [float("nan"), 0.5], [0.5, float("inf")]]], dtype=torch.float64)
    border = au_region_pool(fmap, centres, 0.1, 1, "border", implementation="native")
    zeros = au_region_pool(fmap, centres, 0.1, 1, "zeros", implementation="native")
    assert border[0, 0].eq(1).all() and zeros[0, 0].eq(0).all()  # edge clamp vs zero padding
    assert border[0, 1:].eq(0).all() and zeros[0, 1:].eq(0).all()
    torch.testing.assert_close(au_region_pool_reference(fmap, centres, 0.1, 1, "border"), border)


@pytest.mark.usefixtures("native_required")
def test_channels_last_map_gets_a_channels_last_gradient_of_the_right_values():
    fmap, centres, window = make_inputs(2, 4, 3, 3, 2)
    fmap.requires_grad_(True)
    au_region_pool(fmap, centres, window, 2, implementation="native").sum().backward()
    ref = fmap.detach().clone().requires_grad_(True)
    au_region_pool_reference(ref, centres, window, 2).sum().backward()
    torch.testing.assert_close(fmap.grad, ref.grad)


def _x(*shape, **kw):
    return torch.rand(*shape, **kw)


BAD_INPUTS = [  # (feature_map, centres, window, extra kwargs, message)
    (_x(2, 3, 4), _x(2, 5, 2), 0.1, {}, r"feature_map: expected a 4-d tensor \[B, C, H, W\], got \(2, 3, 4\)"),
    (_x(2, 3, 4, 4), _x(3, 5, 2), 0.1, {}, r"centres: expected \[B, K, 2\] with B = 2, got \(3, 5, 2\)"),
    (_x(2, 3, 4, 4), _x(2, 5, 3), 0.1, {}, r"centres: expected \[B, K, 2\] with B = 2, got \(2, 5, 3\)"),
    (torch.ones(2, 3, 4, 4, dtype=torch.int64), _x(2, 5, 2), 0.1, {},
     r"feature_map: expected a floating-point tensor, got torch.int64"),
    (_x(2, 3, 4, 4), _x(2, 5, 2, device="meta"), 0.1, {}, r"centres: expected a tensor on cpu like feature_map, got meta"),
    (_x(2, 3, 4, 4), _x(2, 5, 2), _x(3), {}, r"window: expected a number, \[B\] or \[B, K\] = \[2, 5\], got \(3,\)"),
    (_x(2, 3, 4, 4), _x(2, 5, 2), 0.1, {"R": 0}, r"R: expected an integer >= 1, got 0"),
    (_x(2, 3, 4, 4), _x(2, 5, 2), 0.1, {"padding": "reflect"}, r"padding: expected one of"),
    (_x(2, 3, 4, 4), _x(2, 5, 2, requires_grad=True), 0.1, {}, r"centres: gradients w.r.t. the AU centres are not supported"),
    (_x(2, 3, 0, 4), _x(2, 5, 2), 0.1, {}, r"feature_map: expected a map of at least 1 x 1, got \(2, 3, 0, 4\)"),
    (_x(2, 3, 4, 4), _x(2, 5, 2), 0.1, {"layout": "NHWC"}, r"layout: expected 'BCHW' or 'BHWC', got 'NHWC'"),
]


@pytest.mark.parametrize("implementation", ["auto", "native", "reference"])
@pytest.mark.parametrize("fmap,centres,window,extra,message", BAD_INPUTS)
def test_bad_inputs_name_the_argument_and_shape(fmap, centres, window, extra, message, implementation):
    with pytest.raises(ValueError, match=message):
        au_region_pool(fmap, centres, window, **extra, implementation=implementation)


@pytest.mark.usefixtures("native_required")
def test_native_layer_validates_raw_calls():
    """The C++ dispatch layer checks what reaches it directly, naming argument and shape."""
    C, dl = _native.lib(), _native.dl
    fmap = torch.randn(2, 3, 4, 4)
    centres, window = torch.rand(2, 5, 2), torch.full((2, 5), 0.1)
    with pytest.raises(ValueError, match=r"out: expected \[B, K, R\*R, C\] = \[2, 5, 9, 3\], got \[2, 5, 4, 3\] float32 on cpu"):
        C.au_region_pool_forward(dl(fmap), dl(centres), dl(window), dl(torch.empty(2, 5, 4, 3)), 3, False)
    with pytest.raises(ValueError, match=r"centres: expected the dtype and device of feature_map \(\[2, 3, 4, 4\] float32 on cpu\), got \[2, 5, 2\] float64 on cpu"):
        C.au_region_pool_forward(dl(fmap), dl(centres.double()), dl(window), dl(torch.empty(2, 5, 9, 3)), 3, False)
    with pytest.raises(ValueError, match=r"feature_map: expected float32 or float64, got \[2, 3, 4, 4\] unsupported dtype on cpu"):
        C.au_region_pool_forward(dl(fmap.half()), dl(centres), dl(window), dl(torch.empty(2, 5, 9, 3)), 3, False)
    with pytest.raises(ValueError, match=r"window: expected a contiguous tensor"):
        C.au_region_pool_forward(dl(fmap), dl(centres), dl(torch.full((5, 2), 0.1).t()), dl(torch.empty(2, 5, 9, 3)), 3, False)


def test_auto_falls_back_to_the_reference_for_other_dtypes():
    fmap, centres, window = make_inputs(2, 3, 4, 4, 2, dtype=torch.float32)
    out = au_region_pool(fmap.bfloat16(), centres.bfloat16(), window, 2)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 2, 4, 3)
    with pytest.raises(RuntimeError, match="native kernels take float32/float64"):
        if not _native.available():
            pytest.skip("native extension not available")
        au_region_pool(fmap.bfloat16(), centres.bfloat16(), window, 2, implementation="native")


def test_the_dlpack_seam_never_crashes_on_bad_input():
    """Whatever reaches the C++ seam is a one-line error or a valid call: objects that are not
    capsules, capsules of another kind, and DLPack 1.x ("dltensor_versioned") capsules, which
    newer torch versions hand out, read the same as 0.x ones."""
    require_native()
    import ctypes

    C, dl = _native.lib(), _native.dl
    fmap, centres = torch.randn(2, 3, 4, 4), torch.rand(2, 5, 2)
    window, out = torch.full((2, 5), 0.1), torch.empty(2, 5, 9, 3)
    for bad in (object(), None, 3, fmap):
        with pytest.raises((ValueError, TypeError)):
            C.au_region_pool_forward(bad, dl(centres), dl(window), dl(out), 3, False)
    other = ctypes.pythonapi.PyCapsule_New
    other.restype, other.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    with pytest.raises(ValueError, match="expected a DLPack capsule"):
        C.au_region_pool_forward(other(1, b"not_a_tensor", None), dl(centres), dl(window), dl(out), 3, False)
    versioned = [t.detach().__dlpack__(max_version=(1, 0)) for t in (fmap, centres, window, out)]
    C.au_region_pool_forward(*versioned, 3, False)
    torch.testing.assert_close(out, au_region_pool_reference(fmap, centres, window, 3))
