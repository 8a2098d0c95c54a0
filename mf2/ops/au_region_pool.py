"""AU-region pooling: R x R bilinear samples of a feature map around each AU centre.

Geometry (shared by the native kernels and the reference):

* ``centres`` are (x, y) in normalised image coordinates: (0, 0) is the top-left corner of the
  image, (1, 1) the bottom-right; the feature map covers the whole image, its pixel i has its
  centre at (i + 0.5) / size (``grid_sample(align_corners=False)``).
* Sample r = iy * R + ix sits at ``centre + ((i + 0.5) / R - 0.5) * window`` on each axis, so
  the R x R grid spans ``window`` (same normalised units) and R = 1 samples the centre.
* ``padding='border'`` (default) clamps samples to the map's edge pixels, like
  ``grid_sample(padding_mode='border')``: an AU near the face's edge still reads real
  features. ``padding='zeros'`` reads zero outside the map.
* A non-finite centre or window gives zero features (no wild reads).
* The output is differentiable w.r.t. the feature map. AU centres come from landmarks and are
  treated as data: asking for their gradient is an error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mf2.ops import _native

__all__ = ["au_region_pool", "au_region_pool_reference", "sample_grid"]

_PADDINGS = ("border", "zeros")


def _prepare(feature_map, centres, window, R, padding, layout):
    """Validate, and bring the arguments to the common form: map [B,C,H,W] (any strides),
    centres [B,K,2] and window [B,K] in the map's dtype and device."""
    if layout not in ("BCHW", "BHWC"):
        raise ValueError(f"layout: expected 'BCHW' or 'BHWC', got {layout!r}")
    if not isinstance(feature_map, torch.Tensor) or feature_map.dim() != 4:
        got = tuple(feature_map.shape) if isinstance(feature_map, torch.Tensor) else type(feature_map).__name__
        raise ValueError(f"feature_map: expected a 4-d tensor [{', '.join(layout)}], got {got}")
    if not feature_map.is_floating_point():
        raise ValueError(f"feature_map: expected a floating-point tensor, got {feature_map.dtype}")
    if layout == "BHWC":
        feature_map = feature_map.permute(0, 3, 1, 2)  # a strided view, no copy
    B, C, H, W = feature_map.shape
    if H < 1 or W < 1:
        raise ValueError(f"feature_map: expected a map of at least 1 x 1, got {tuple(feature_map.shape)}")
    if not isinstance(centres, torch.Tensor) or centres.dim() != 3 or centres.shape[0] != B or centres.shape[2] != 2:
        got = tuple(centres.shape) if isinstance(centres, torch.Tensor) else type(centres).__name__
        raise ValueError(f"centres: expected [B, K, 2] with B = {B}, got {got}")
    if centres.device != feature_map.device:
        raise ValueError(f"centres: expected a tensor on {feature_map.device} like feature_map, got {centres.device}")
    if centres.requires_grad and torch.is_grad_enabled():
        raise ValueError("centres: gradients w.r.t. the AU centres are not supported; pass centres.detach()")
    if not isinstance(R, int) or R < 1:
        raise ValueError(f"R: expected an integer >= 1, got {R!r}")
    if padding not in _PADDINGS:
        raise ValueError(f"padding: expected one of {_PADDINGS}, got {padding!r}")
    K = centres.shape[1]
    window = torch.as_tensor(window, dtype=feature_map.dtype, device=feature_map.device)
    if window.requires_grad and torch.is_grad_enabled():
        raise ValueError("window: gradients w.r.t. the window are not supported; pass window.detach()")
    given = tuple(window.shape)
    try:
        if window.dim() == 1:  # one window per image
            window = window[:, None]
        window = window.expand(B, K)
    except RuntimeError:
        raise ValueError(f"window: expected a number, [B] or [B, K] = [{B}, {K}], got {given}") from None
    centres = centres.detach().to(feature_map.dtype).contiguous()
    return feature_map, centres, window.detach().contiguous()


def sample_grid(centres: torch.Tensor, window: torch.Tensor, R: int) -> torch.Tensor:
    """Sample positions [B, K, R*R, 2] (x, y, normalised image coordinates) of the R x R grid."""
    steps = (torch.arange(R, dtype=centres.dtype, device=centres.device) + 0.5) / R - 0.5
    oy, ox = torch.meshgrid(steps, steps, indexing="ij")  # row-major: y outer, x inner
    offsets = torch.stack([ox.reshape(-1), oy.reshape(-1)], dim=-1)  # [R*R, 2]
    return centres[:, :, None, :] + offsets * window[:, :, None, None]


def _pool_reference(feature_map, centres, window, R, padding):
    grid = sample_grid(centres, window, R)  # [B, K, RR, 2]
    finite = torch.isfinite(grid).all(dim=-1)  # [B, K, RR]
    grid = torch.where(finite[..., None], grid * 2 - 1, torch.zeros_like(grid))
    out = F.grid_sample(feature_map, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    out = out.permute(0, 2, 3, 1)  # [B, C, K, RR] -> [B, K, RR, C]
    return out * finite[..., None].to(out.dtype)


def au_region_pool_reference(
    feature_map: torch.Tensor,
    centres: torch.Tensor,
    window,
    R: int = 3,
    padding: str = "border",
    layout: str = "BCHW",
) -> torch.Tensor:
    """Pure-PyTorch ``au_region_pool`` on ``grid_sample``: the test oracle and the fallback."""
    return _pool_reference(*_prepare(feature_map, centres, window, R, padding, layout), R, padding)


class _AURegionPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feature_map, centres, window, R, zeros):
        B, C, H, W = feature_map.shape
        out = feature_map.new_empty(B, centres.shape[1], R * R, C)
        with _native.on_device(feature_map):
            _native.lib().au_region_pool_forward(
                _native.dl(feature_map), _native.dl(centres), _native.dl(window), _native.dl(out),
                R, zeros, _native.stream(feature_map),
            )
        ctx.save_for_backward(centres, window)
        ctx.map_shape, ctx.R, ctx.zeros = (B, C, H, W), R, zeros
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        centres, window = ctx.saved_tensors
        # Channels-last gradient: the kernels' scatter writes contiguous channel runs.
        grad_map = torch.empty(ctx.map_shape, dtype=grad_out.dtype, device=grad_out.device,
                               memory_format=torch.channels_last)
        with _native.on_device(grad_out):
            _native.lib().au_region_pool_backward(
                _native.dl(grad_out.contiguous()), _native.dl(centres), _native.dl(window),
                _native.dl(grad_map), ctx.R, ctx.zeros, _native.stream(grad_out),
            )
        return grad_map, None, None, None, None


def au_region_pool(
    feature_map: torch.Tensor,
    centres: torch.Tensor,
    window,
    R: int = 3,
    padding: str = "border",
    layout: str = "BCHW",
    implementation: str = "auto",
) -> torch.Tensor:
    """Bilinear R x R samples of ``feature_map`` around each centre.

    Args:
        feature_map: [B, C, H, W] (any strides, channels-last included), or [B, H, W, C] with
            ``layout='BHWC'`` (e.g. ViT patch tokens reshaped to a grid).
        centres: [B, K, 2] (x, y) in normalised image coordinates, e.g. K = 24 for the 12
            AUs x 2 centres.
        window: side of the sampling grid in normalised coordinates: a number, [B] (one per
            face, e.g. ``ruler`` x factor / image size) or [B, K].
        R: samples per side.
        padding: ``'border'`` or ``'zeros'`` (see the module docstring).
        implementation: ``'auto'`` (native when the extension supports the tensors, else the
            reference), ``'native'`` or ``'reference'``.

    Returns:
        [B, K, R*R, C] samples, sample r = iy * R + ix.
    """
    if implementation not in ("auto", "native", "reference"):
        raise ValueError(f"implementation: expected 'auto', 'native' or 'reference', got {implementation!r}")
    fmap, centres, window = _prepare(feature_map, centres, window, R, padding, layout)
    if implementation == "reference" or (implementation == "auto" and not _native.supports(fmap)):
        return _pool_reference(fmap, centres, window, R, padding)
    if implementation == "native":
        _native.require(fmap, "au_region_pool")
    return _AURegionPoolFunction.apply(fmap, centres, window, R, padding == "zeros")
