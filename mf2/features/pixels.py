"""Pixels as they are: the one place where any image input becomes what the native libraries
(dlib, the backbone, Pillow's warps) read -- a C-contiguous RGB uint8 array [H, W, 3].

``to_rgb`` takes an image file's decoded PIL image, a PIL image, a numpy array of any dtype,
layout and strides, or a decoded PyAV video frame of any pixel format; ``load_image`` opens a
file and hands it to ``to_rgb``. Every reader of pixels in mf2 (``mf2 predict``, ``mf2.Detector``,
``mf2 extract-features``, the pixel baseline of ``mf2 synth``, the plots) goes through them.

How values become 8 bits (the container says the range; where it does not, the rule is fixed):

* 8-bit modes and arrays: as they are. 16-bit image files (PNG and TIFF grey ``I;16``, 16-bit
  RGB) and PIL images of a 16-bit mode: value / 257, rounded -- 65535 is white.
* 32-bit integers (PIL mode ``I``): a 16-bit PNG opened as ``I`` is 16-bit; a TIFF says its
  bits per sample; otherwise as an integer array.
* Integer arrays other than ``uint8`` (``uint16``, ``int32``, ``int64``, ...): an array does not
  say its bit depth, so its values do -- all within 0-255: 8-bit values, as they are (a
  ``uint16`` array of 8-bit values, e.g. after ``astype(np.uint16)``, is not read as 16-bit and
  made near black); some above 255 and all within 0-65535: 16-bit, value / 257. Negative or
  larger values: ``UnsupportedPixels``. ``bool``: False black, True white.
* Floats (PIL mode ``F``, float arrays): within 0-1 scaled by 255 (numpy's and scikit-image's
  convention), else within 0-255 as 8-bit values; NaN, infinity, negative values or values
  above 255: ``UnsupportedPixels``.
* Grey, palette, 1-bit, CMYK, YCbCr, LAB and HSV: converted by Pillow. Alpha (RGBA, LA, PA, a
  palette's transparency, a 2- or 4-channel array) is composited over white, as a viewer shows
  it; an alpha channel that is zero everywhere is ignored (the picture is still there).
* A video frame: converted to rgb24 by FFmpeg's scaler, then copied contiguous (PyAV returns
  rows padded to a multiple of 16 bytes for many widths, which dlib would read as another image),
  and turned as its display matrix says (``display_orientation``: a phone's portrait clip is
  stored sideways with a 90 degree rotation for the player), so the frame is what a player shows.

Unreadable inputs raise ``ImageError`` (a ``ValueError``, one line); pixel formats outside the
rules above raise its subclass ``UnsupportedPixels`` ("unsupported pixel format (...)"), which
callers record as a counted skip, never as a clipped or blackened face.
"""

from __future__ import annotations

import warnings

import numpy as np

MIN_SIDE = 8
# 50 megapixels (an 8,660 x 5,774 photo): larger images are refused from their header before
# decoding (a 20,000 x 20,000 PNG of a few kilobytes would take 1.2 GB as RGB).
MAX_PIXELS = 50_000_000


class ImageError(ValueError):
    """An image that cannot be used, as one line."""


class UnsupportedPixels(ImageError):
    """Pixels whose values mf2 will not guess at (one line, starting 'unsupported pixel format')."""

    def __init__(self, what: str):
        super().__init__(f"unsupported pixel format ({what})")


def frame_count(path) -> int:
    """The frames of an image file (an animated GIF, WebP or PNG, a multi-page TIFF: more than 1;
    0 when Pillow cannot open it)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(getattr(im, "n_frames", 1) or 1)
    except Exception:  # unreadable: load_image says why
        return 0


def image_frames(path):
    """(index, seconds, duration or None, RGB uint8 [H, W, 3] or an ImageError) of each frame of
    an animated image, timed by the frames' own durations (0.1 s where a frame gives none, as
    browsers show it). A multi-page TIFF's pages are pages, not a clip's frames: their duration is
    None (timed 0.1 s apart all the same)."""
    from PIL import Image, ImageSequence

    t = 0.0
    with Image.open(path) as im:
        pages = im.format == "TIFF"
        for index, frame in enumerate(ImageSequence.Iterator(im)):
            duration = frame.info.get("duration")
            duration = None if pages else (duration / 1000.0 if isinstance(duration, (int, float)) and duration > 0
                                           else 0.1)
            try:
                yield index, round(t, 4), duration, to_rgb(frame.copy())
            except ImageError as exc:
                yield index, round(t, 4), duration, exc
            t += duration or 0.1


def load_image(path) -> np.ndarray:
    """An image file -> RGB uint8 [H, W, 3], C-contiguous (EXIF orientation applied)."""
    return read_image(path)[0]


def read_image(path) -> tuple[np.ndarray, int]:
    """(``load_image``'s picture: the first frame, the number of frames the file holds), from one
    opening of the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ImageError(f"image too large ({im.width}x{im.height} px, at most {MAX_PIXELS:,} pixels)")
                rgb, frames = to_rgb(im), int(getattr(im, "n_frames", 1) or 1)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("missing file") from None
    except IsADirectoryError:
        raise ImageError("a folder, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image too large ({str(exc).split('(')[0].strip()})") from None
    except UnidentifiedImageError:
        raise ImageError("not an image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"unreadable image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return rgb, frames


def to_rgb(image) -> np.ndarray:
    """A PIL image, a numpy array ([H, W], [H, W, 1|2|3|4], any dtype and strides) or a PyAV
    ``VideoFrame`` -> C-contiguous RGB uint8 [H, W, 3]. Raises ``ImageError`` (or
    ``UnsupportedPixels``) saying what was wrong; images under ``MIN_SIDE`` a side are refused."""
    from PIL import Image

    if isinstance(image, Image.Image):
        rgb = _pil_rgb(image)
    elif _is_video_frame(image):
        rgb = orient(image.to_ndarray(format="rgb24"), *display_orientation(image))
    else:
        rgb = _array_rgb(image)
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise ImageError(f"image too small ({rgb.shape[1]}x{rgb.shape[0]} px, at least {MIN_SIDE} px a side)")
    return np.ascontiguousarray(rgb)


def is_native_rgb(image) -> bool:
    """Whether ``image`` is what ``to_rgb`` returns (the check native code makes before reading)."""
    return (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            and image.flags.c_contiguous)


# -- PIL images ----------------------------------------------------------------------------------
_DEEP_GREY = {"I;16", "I;16L", "I;16B", "I;16N"}


def _pil_rgb(im) -> np.ndarray:
    from PIL import ImageOps

    im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode in _DEEP_GREY or mode == "I":
        return _grey(_integer_to_8bit(np.asarray(im), _declared_bits(im)))
    if mode == "F":
        return _grey(_float_to_8bit(np.asarray(im, dtype=np.float64)))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in im.info):
        return _over_white(np.asarray(im.convert("RGBA")))
    try:
        return np.asarray(im.convert("RGB"))
    except (ValueError, OSError):
        raise UnsupportedPixels(f"mode {mode}") from None


def _declared_bits(im) -> int | None:
    """Bits per sample the file declares (PNG grey above 8 bits is 16; a TIFF's tag 258)."""
    if im.format == "PNG":
        return 16
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258)
        if bits:
            return int(bits[0] if isinstance(bits, tuple) else bits)
    if im.mode in _DEEP_GREY:
        return 16
    return None


# -- arrays --------------------------------------------------------------------------------------
def _array_rgb(image) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or a.ndim == 3 and a.shape[2] in (2, 3, 4)) or a.size == 0:
        raise ImageError(f"not an image array (expected [H, W], [H, W, 3] or [H, W, 4], got {a.dtype} "
                         f"{list(a.shape)})")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.integer):
        a = _integer_to_8bit(a, 8 if a.dtype == np.uint8 else None)  # the values say 8 or 16 bits
    elif np.issubdtype(a.dtype, np.floating):
        a = _float_to_8bit(a.astype(np.float64, copy=False))
    else:
        raise UnsupportedPixels(f"array of {a.dtype}")
    if a.ndim == 2:
        return _grey(a)
    if a.shape[2] == 2:  # grey + alpha
        return _over_white(np.concatenate([np.repeat(a[..., :1], 3, 2), a[..., 1:]], 2))
    if a.shape[2] == 4:
        return _over_white(a)
    return a


def _integer_to_8bit(a: np.ndarray, bits: int | None) -> np.ndarray:
    """Integers of ``bits`` per sample (None: 8 or 16, from the values) -> uint8, rounded."""
    if a.dtype == np.uint8 and bits in (None, 8):
        return a
    lo, hi = int(a.min()), int(a.max())
    if bits is None or bits > 16:
        if lo < 0 or hi > 65535:
            raise UnsupportedPixels(f"{a.dtype} values {lo}..{hi}, outside 0-65535")
        bits = 8 if hi <= 255 else 16
    top = (1 << bits) - 1
    if lo < 0 or hi > top:
        raise UnsupportedPixels(f"{bits}-bit samples with values {lo}..{hi}")
    if bits == 8:
        return a.astype(np.uint8)
    return ((a.astype(np.uint64) * 255 + top // 2) // top).astype(np.uint8)


def _float_to_8bit(a: np.ndarray) -> np.ndarray:
    if not np.isfinite(a).all():
        raise UnsupportedPixels("NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 255:
        raise UnsupportedPixels(f"float values {lo:g}..{hi:g}, outside 0-1 and 0-255")
    scale = 255.0 if hi <= 1.0 else 1.0
    return np.rint(a * scale).astype(np.uint8)


def _grey(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[..., None], 3, 2)


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA uint8 -> RGB over a white background (an all-transparent alpha is ignored)."""
    alpha = rgba[..., 3:4]
    if not alpha.any() or alpha.min() == 255:
        return rgba[..., :3]
    a = alpha.astype(np.uint16)
    return ((rgba[..., :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _is_video_frame(image) -> bool:
    return type(image).__name__ == "VideoFrame" and hasattr(image, "to_ndarray")


# -- video frames: the display matrix ------------------------------------------------------------
def display_orientation(frame) -> tuple[int, bool]:
    """(degrees counter-clockwise, mirrored) that turn a decoded PyAV ``VideoFrame`` into what a
    player shows: the frame's display matrix (FFmpeg's DISPLAYMATRIX side data, from the
    container's rotation: an MP4/MOV track matrix, a phone's ``rotate``), read as FFmpeg's own
    autorotation reads it -- rotate by the degrees (0, 90, 180 or -90), then mirror left-right
    when ``mirrored``. A matrix that is not a quarter turn is taken to the nearest one.
    (0, False) without a display matrix."""
    import struct

    try:
        from av.sidedata.sidedata import Type

        data = frame.side_data.get(Type.DISPLAYMATRIX)
    except Exception:  # noqa: BLE001 - a PyAV without side data: no matrix
        data = None
    if data is None:
        return _QUARTERS[round((getattr(frame, "rotation", 0) or 0) / 90) % 4], False
    m0, m1, _, m3, m4 = struct.unpack("<5i", bytes(data)[:20])
    return _quarter_turn(m0, m1, m3, m4)


_QUARTERS = (0, 90, 180, -90)


def _quarter_turn(m0: float, m1: float, m3: float, m4: float) -> tuple[int, bool]:
    """The 2x2 part of a display matrix (a b; c d = m0 m1; m3 m4) -> (degrees, mirrored)."""
    transposed = abs(m0) + abs(m4) < abs(m1) + abs(m3)
    rows, cols = (m1 < 0, m3 < 0) if transposed else (m4 < 0, m0 < 0)  # flipped up-down, left-right
    # the eight orientations as a turn then a left-right mirror (numpy's rot90 turns counter-clockwise)
    return {(False, False, False): (0, False), (False, True, True): (180, False), (False, False, True): (0, True),
            (False, True, False): (180, True), (True, True, False): (90, False), (True, False, True): (-90, False),
            (True, False, False): (-90, True), (True, True, True): (90, True)}[(transposed, rows, cols)]


def orient(rgb: np.ndarray, degrees: int, mirrored: bool = False) -> np.ndarray:
    """``rgb`` turned ``degrees`` counter-clockwise (a multiple of 90), then mirrored left-right."""
    out = np.rot90(rgb, (degrees // 90) % 4) if degrees % 360 else rgb
    return out[:, ::-1] if mirrored else out
