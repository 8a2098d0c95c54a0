"""SynthFACS: a seeded procedural renderer of face images with exact 68-point landmarks and
AU-driven deformations (SPEC §3.4). No licence, no download; the default data of the tests,
``mf2 quickstart`` and the benchmarks. It is not a substitute for real faces.

A face is drawn from parametric geometry in a *face frame* (origin between the eyes and the
nose tip, x right, y down, half the face width ~ 1). The 12 AUs displace the landmarks and
add their appearance cues (wrinkles, folds, cheek bulges, teeth) at their own regions, so the
AU-centre table of DATA.md points at the evidence. Identity (proportions, skin tone, hair,
eyes), head pose (roll, yaw with per-point depth, scale, shift), lighting, background, AU
intensity and label noise vary. One transform maps the face frame to pixels for both the
landmarks and everything drawn, so the landmarks are exact.

Every sample is a pure function of (seed, index): same seed -> byte-identical files, in any
order and with any number of workers.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mf2.data.labels import AU_INDEX, AUS, EMOTIONS, PROTOTYPES

SUPERSAMPLE = 2
# Depth of each landmark (face frame units, towards the camera) for the yaw projection.
_DEPTH = np.array(
    [-0.55, -0.45, -0.35, -0.25, -0.12, 0.0, 0.1, 0.17, 0.2, 0.17, 0.1, 0.0, -0.12, -0.25, -0.35, -0.45, -0.55]
    + [0.12, 0.18, 0.22, 0.25, 0.27, 0.27, 0.25, 0.22, 0.18, 0.12]
    + [0.3, 0.38, 0.46, 0.55, 0.35, 0.4, 0.45, 0.4, 0.35]
    + [0.08, 0.14, 0.14, 0.12, 0.14, 0.1] * 2
    + [0.18, 0.26, 0.31, 0.33, 0.31, 0.26, 0.18, 0.24, 0.28, 0.29, 0.28, 0.24]
    + [0.2, 0.28, 0.3, 0.28, 0.2, 0.27, 0.28, 0.27]
)
assert _DEPTH.shape == (68,)


# ----------------------------------------------------------------------------------------
# Sampling: identity, expression, pose, lighting
# ----------------------------------------------------------------------------------------
@dataclass
class Identity:
    """Face proportions and colours of one synthetic person (one 'video')."""

    face_w: float
    chin_y: float
    eye_y: float
    eye_x: float
    eye_w: float
    lid_h: float
    brow_gap: float
    brow_thick: float
    nose_y: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip: float
    skin: tuple
    lips: tuple
    hair: tuple
    iris: tuple
    hairline: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Identity":
        t = rng.uniform(0, 1)  # skin tone from light to dark
        skin = np.array([238, 200, 178]) * (1 - t) + np.array([92, 60, 44]) * t + rng.normal(0, 6, 3)
        lips = skin * np.array([0.82, 0.55, 0.56]) + np.array([28, 0, 6])
        hair = [(30, 22, 18), (70, 45, 28), (120, 85, 50), (190, 160, 110), (150, 150, 150), (20, 20, 24)][rng.integers(6)]
        iris = [(70, 45, 25), (60, 95, 150), (70, 110, 70), (100, 100, 105), (40, 28, 18)][rng.integers(5)]
        return cls(
            face_w=rng.uniform(0.86, 1.0), chin_y=rng.uniform(0.95, 1.1), eye_y=rng.uniform(-0.34, -0.26),
            eye_x=rng.uniform(0.34, 0.42), eye_w=rng.uniform(0.13, 0.17), lid_h=rng.uniform(0.055, 0.08),
            brow_gap=rng.uniform(0.2, 0.28), brow_thick=rng.uniform(0.035, 0.07), nose_y=rng.uniform(0.1, 0.18),
            nose_w=rng.uniform(0.14, 0.2), mouth_y=rng.uniform(0.42, 0.52), mouth_w=rng.uniform(0.24, 0.32),
            lip=rng.uniform(0.7, 1.25), skin=tuple(np.clip(skin, 0, 255)), lips=tuple(np.clip(lips, 0, 255)),
            hair=hair, iris=iris, hairline=rng.uniform(-1.05, -0.8),
        )


@dataclass
class Pose:
    roll: float = 0.0  # radians, in-plane
    yaw: float = 0.0  # radians, out-of-plane (projected with landmark depth)
    scale: float = 0.34  # pixels per face unit, as a fraction of the image size
    tx: float = 0.0  # shift of the face origin, fraction of the image size
    ty: float = 0.0

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Pose":
        return cls(roll=rng.normal(0, 0.1), yaw=rng.uniform(-0.35, 0.35), scale=rng.uniform(0.3, 0.37),
                   tx=rng.uniform(-0.04, 0.04), ty=rng.uniform(-0.04, 0.04))


@dataclass
class Lighting:
    direction: tuple = (0.0, -1.0)
    strength: float = 0.0
    brightness: float = 1.0
    tint: tuple = (1.0, 1.0, 1.0)
    noise: float = 0.0
    background: tuple = ((90, 110, 130), (40, 50, 60))

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Lighting":
        angle = rng.uniform(0, 2 * math.pi)
        return cls(direction=(math.cos(angle), math.sin(angle)), strength=rng.uniform(0.0, 0.35),
                   brightness=rng.uniform(0.75, 1.15), tint=tuple(rng.uniform(0.9, 1.1, 3)),
                   noise=rng.uniform(1.0, 6.0),
                   background=(tuple(rng.integers(20, 235, 3)), tuple(rng.integers(20, 235, 3))))


@dataclass
class Expression:
    emotion: int
    intensities: dict  # AU -> rendered intensity in [0, 1] (trace activations below 0.2)
    labels: dict  # AU -> 0/1 label (after label noise)


def _covers_prototype(active: set) -> bool:
    return any(set(core) <= active for core, _ in PROTOTYPES.values())


def sample_expression(emotion: int, rng: np.random.Generator, label_noise: float = 0.02) -> Expression:
    """AUs for an emotion by the EMFACS prototypes: core AUs dropped at random (at least half
    kept), optional ones added, a stray AU now and then; Neutral has none; Other draws
    non-prototypical combinations. Active AUs get intensities in [0.35, 1]; some inactive ones
    get sub-threshold traces. Labels are the active set with a little label noise."""
    name = EMOTIONS[emotion]
    if name == "Neutral":
        active = set()
    elif name == "Other":
        while True:
            active = set(rng.choice(AUS, size=int(rng.integers(1, 4)), replace=False).tolist())
            if not _covers_prototype(active):
                break
    else:
        core, optional = PROTOTYPES[name]
        while True:
            kept = {au for au in core if rng.random() > 0.15}
            if len(kept) >= math.ceil(len(core) / 2):
                break
        active = kept | {au for au in optional if rng.random() < 0.5}
        if rng.random() < 0.15:
            active.add(str(rng.choice([au for au in AUS if au not in active])))
    intensities = {}
    for au in AUS:
        if au in active:
            intensities[au] = float(rng.uniform(0.35, 1.0))
        else:
            intensities[au] = float(rng.uniform(0.0, 0.15)) if rng.random() < 0.25 else 0.0
    labels = {au: int(au in active) for au in AUS}
    for au in AUS:
        if rng.random() < label_noise:
            labels[au] = 1 - labels[au]
    return Expression(emotion=emotion, intensities=intensities, labels=labels)


# ----------------------------------------------------------------------------------------
# Geometry: 68 landmarks in the face frame, AU displacements
# ----------------------------------------------------------------------------------------
def face_landmarks(ident: Identity, au: dict) -> np.ndarray:
    """The 68 iBUG landmarks [68, 2] in the face frame for AU intensities ``au``."""
    g = lambda name: float(au.get(name, 0.0))  # noqa: E731
    p = np.zeros((68, 2))
    # jaw 0..16, ear level to chin to ear level; AU26 lowers the chin
    drop = 0.2 * g("AU26")
    for i in range(17):
        a = math.pi * i / 16
        s = math.sin(a)
        p[i] = (-ident.face_w * math.copysign(abs(math.cos(a)) ** 0.85, math.cos(a)),
                -0.22 + (ident.chin_y + 0.22) * s ** 1.1 + drop * s ** 3)
    # brows 17..21 (right, outer -> inner) and 22..26 (left, inner -> outer)
    by = ident.eye_y - ident.brow_gap
    for side, idx in ((-1, range(17, 22)), (1, range(22, 27))):
        for j, i in enumerate(idx):
            t = j / 4 if side < 0 else 1 - j / 4  # 0 = outer end, 1 = inner end
            x = side * (0.8 - 0.62 * t)
            y = by - 0.07 * math.sin(math.pi * (0.35 + 0.65 * (1 - t)))
            y -= 0.13 * g("AU1") * t ** 1.5 + 0.12 * g("AU2") * (1 - t) ** 1.3
            y += 0.08 * g("AU4") * (0.4 + 0.6 * t)
            x -= side * 0.06 * g("AU4") * t
            p[i] = (x, y)
    # nose bridge 27..30 and base 31..35; AU10 lifts and widens the wings
    for j, i in enumerate(range(27, 31)):
        p[i] = (0.0, ident.eye_y - 0.05 + (ident.nose_y - ident.eye_y - 0.02) * j / 3)
    lift = 0.03 * g("AU10")
    nw = ident.nose_w * (1 + 0.12 * g("AU10"))
    for j, i in enumerate(range(31, 36)):
        u = (j - 2) / 2
        p[i] = (nw * u, ident.nose_y + 0.06 - 0.035 * abs(u) - lift * abs(u))
    # eyes 36..41 (right: outer, upper x2, inner, lower x2), 42..47 (left: inner, upper x2, outer, lower x2)
    upper = ident.lid_h * (1 - 0.25 * g("AU7") - 0.15 * g("AU4") - 0.1 * g("AU6"))
    lower = ident.lid_h * 0.85 * (1 - 0.6 * g("AU7") - 0.35 * g("AU6"))
    for side, base in ((-1, 36), (1, 42)):
        cx, cy, w = side * ident.eye_x, ident.eye_y, ident.eye_w
        outer, inner = (cx - w, cy) if side < 0 else (cx + w, cy), (cx + w, cy) if side < 0 else (cx - w, cy)
        if side < 0:
            pts = [outer, (cx - w / 3, cy - upper), (cx + w / 3, cy - upper), inner,
                   (cx + w / 3, cy + lower), (cx - w / 3, cy + lower)]
        else:
            pts = [inner, (cx - w / 3, cy - upper), (cx + w / 3, cy - upper), outer,
                   (cx + w / 3, cy + lower), (cx - w / 3, cy + lower)]
        p[base:base + 6] = pts
    # mouth: outer 48..59, inner 60..67
    my = ident.mouth_y
    mw = ident.mouth_w * (1 - 0.14 * g("AU23") - 0.05 * g("AU24") + 0.08 * g("AU12"))
    thick = ident.lip * (1 - 0.35 * g("AU23") - 0.45 * g("AU24"))
    up_h, lo_h = 0.085 * thick, 0.1 * thick
    raise_upper = 0.06 * g("AU10")
    opening = (0.05 * g("AU25") + 0.2 * g("AU26")) * (1 - 0.8 * g("AU24"))
    corner_dy = -0.09 * g("AU12") + 0.08 * g("AU15")
    corner_dx = 0.05 * g("AU12") - 0.01 * g("AU15")
    gap_u, gap_l = 0.25 * opening + raise_upper * 0.5, 0.75 * opening
    xs_outer = [-1, -0.6, -0.25, 0, 0.25, 0.6, 1, 0.6, 0.25, 0, -0.25, -0.6]
    for k, i in enumerate(range(48, 60)):
        u = xs_outer[k]
        corner = abs(u) == 1
        if corner:
            y = my + corner_dy + 0.5 * opening * 0.3
            x = u * (mw + corner_dx)
        elif k < 6:  # upper lip
            y = my - gap_u - (up_h * (0.9 if u == 0 else 1.0 if abs(u) == 0.25 else 0.7)) - raise_upper * (1 - abs(u) * 0.5)
            y += corner_dy * abs(u) ** 2 * 0.6
            x = u * mw
        else:  # lower lip
            y = my + gap_l + lo_h * (1.0 if u == 0 else 0.95 if abs(u) == 0.25 else 0.75)
            y += corner_dy * abs(u) ** 2 * 0.6
            x = u * mw
        p[i] = (x, y)
    xs_inner = [-0.85, -0.35, 0, 0.35, 0.85, 0.35, 0, -0.35]
    for k, i in enumerate(range(60, 68)):
        u = xs_inner[k]
        if abs(u) == 0.85:
            p[i] = (u * mw + math.copysign(corner_dx * 0.8, u), my + corner_dy * 0.8 + 0.15 * opening)
        elif k < 4:
            p[i] = (u * mw, my - gap_u - raise_upper * 0.8 + corner_dy * u ** 2 * 0.5)
        else:
            p[i] = (u * mw, my + gap_l + corner_dy * u ** 2 * 0.5)
    return p


def project(points: np.ndarray, depth: np.ndarray, pose: Pose, size: int) -> np.ndarray:
    """Face frame -> image pixels (yaw with depth, roll, scale, shift)."""
    x = points[:, 0] * math.cos(pose.yaw) + depth * math.sin(pose.yaw)
    y = points[:, 1]
    c, s = math.cos(pose.roll), math.sin(pose.roll)
    xr, yr = c * x - s * y, s * x + c * y
    scale = pose.scale * size
    return np.stack([size * (0.5 + pose.tx) + scale * xr, size * (0.47 + pose.ty) + scale * yr], axis=1)


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------
def _c(rgb, k=1.0):
    return tuple(int(max(0, min(255, round(v * k)))) for v in rgb)


def _smooth(points: np.ndarray, closed: bool = True, steps: int = 6) -> np.ndarray:
    """Catmull-Rom through the points: rounder polygons from few landmarks."""
    pts = np.asarray(points, dtype=float)
    n = len(pts)
    out = []
    segments = n if closed else n - 1
    for i in range(segments):
        p0, p1 = pts[(i - 1) % n if closed else max(i - 1, 0)], pts[i]
        p2, p3 = pts[(i + 1) % n], pts[(i + 2) % n if closed else min(i + 2, n - 1)]
        for t in np.linspace(0, 1, steps, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    if not closed:
        out.append(pts[-1])
    return np.array(out)


def render(ident: Identity, expr_intensity: dict, pose: Pose, light: Lighting, size: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one face. Returns (image [size, size, 3] uint8, landmarks [68, 2] in pixels)."""
    S = size * SUPERSAMPLE
    g = lambda name: float(expr_intensity.get(name, 0.0))  # noqa: E731
    lm = face_landmarks(ident, expr_intensity)

    def P(points, depth=0.15):
        """Face-frame points -> pixel tuples; a depth array shorter than the points (a smoothed
        curve through landmarks) is resampled along the curve."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        depth = np.atleast_1d(np.asarray(depth, dtype=float))
        if len(depth) != len(points):
            depth = np.interp(np.linspace(0, 1, len(points)), np.linspace(0, 1, len(depth)), depth)
        return [tuple(q) for q in project(points, depth, pose, S)]

    unit = pose.scale * S  # pixels per face unit
    skin = np.array(_c(ident.skin))
    top, bottom = np.array(light.background[0], float), np.array(light.background[1], float)
    ramp = np.linspace(0, 1, S)[:, None, None]
    bg = (top * (1 - ramp) + bottom * ramp).repeat(S, axis=1)
    img = Image.fromarray(bg.astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(3):  # background blobs
        cx, cy, r = rng.uniform(0, S), rng.uniform(0, S), rng.uniform(0.05, 0.3) * S
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in rng.integers(20, 235, 3)))
    img = img.filter(ImageFilter.GaussianBlur(S * 0.03))
    d = ImageDraw.Draw(img)

    # hair mass behind the head, neck, face
    d.ellipse(_bbox(P([[-1.15, -1.35], [1.15, 0.35]], 0)), fill=_c(ident.hair))
    d.polygon(P([[-0.4, 0.5], [0.4, 0.5], [0.5, 1.6], [-0.5, 1.6]], -0.2), fill=_c(skin, 0.82))
    forehead = [[ident.face_w * math.cos(a) * 0.98, -0.22 - (1.05 + 0.22) * math.sin(a) ** 0.9]
                for a in np.linspace(0.0, math.pi, 15)]
    outline = np.concatenate([lm[0:17], np.array(forehead[1:-1])])
    depth = np.concatenate([_DEPTH[0:17], np.full(13, 0.1)])
    d.polygon(P(_smooth(outline), depth), fill=_c(skin))
    # hairline
    # hair cap: the hairline curve, closed by the arc of the hair mass over the top of the head
    hair_pts = [[ident.face_w * math.cos(a) * 1.02, ident.hairline - 0.35 * math.sin(a) ** 2 + 0.1 * (1 - math.sin(a))]
                for a in np.linspace(0.0, math.pi, 13)]
    hair_pts += [[1.15 * math.cos(t), -0.5 - 0.85 * math.sin(t)] for t in np.linspace(math.pi, 0.0, 13)]
    d.polygon(P(hair_pts, 0.05), fill=_c(ident.hair))

    crease = _c(skin, 0.72)
    line_w = max(1, int(round(unit * 0.018)))

    # forehead wrinkles: AU1 central, AU2 lateral
    by = ident.eye_y - ident.brow_gap
    for k in range(3):
        y = by - 0.2 - 0.09 * k
        if g("AU1") > 0.05:
            d.line(P(_smooth([[-0.3, y + 0.02], [0, y - 0.02], [0.3, y + 0.02]], False), 0.2),
                   fill=_blend(skin, crease, min(1, g("AU1") * 1.3)), width=line_w)
        if g("AU2") > 0.05:
            for side in (-1, 1):
                d.line(P(_smooth([[side * 0.45, y + 0.03], [side * 0.65, y - 0.01], [side * 0.82, y + 0.04]], False), 0.1),
                       fill=_blend(skin, crease, min(1, g("AU2") * 1.3)), width=line_w)
    # glabella lines (AU4)
    if g("AU4") > 0.05:
        for side in (-1, 1):
            d.line(P([[side * 0.06, by - 0.02], [side * 0.08, by + 0.14]], 0.25),
                   fill=_blend(skin, crease, min(1, g("AU4") * 1.4)), width=line_w + 1)
        d.ellipse(_bbox(P([[-0.2, by + 0.02], [0.2, by + 0.12]], 0.25)), fill=_blend(skin, crease, 0.25 * g("AU4")))

    # cheeks (AU6: raised, lit cheek mass and crow's feet; AU12 helps)
    cheek = min(1.0, g("AU6") + 0.4 * g("AU12"))
    for side, li in ((-1, 41), (1, 46)):
        cx, cy = lm[li, 0] + side * 0.05, lm[li, 1] + 0.24 - 0.08 * cheek
        d.ellipse(_bbox(P([[cx - 0.2, cy - 0.11], [cx + 0.2, cy + 0.11]], 0.2)), fill=_blend(skin, (255, 235, 225), 0.35 * cheek))
        if cheek > 0.05:
            d.line(P(_smooth([[cx - 0.17, cy - 0.14], [cx, cy - 0.18], [cx + 0.17, cy - 0.14]], False), 0.2),
                   fill=_blend(skin, crease, min(1, cheek)), width=line_w)
        if g("AU6") > 0.05:
            ox, oy = lm[36 if side < 0 else 45]
            for k in (-1, 0, 1):
                d.line(P([[ox + side * 0.03, oy + 0.02 * k], [ox + side * 0.14, oy + 0.06 * k]], 0.0),
                       fill=_blend(skin, crease, min(1, g("AU6") * 1.3)), width=line_w)

    # nasolabial folds: deeper with AU10 / AU12 / AU6
    fold = min(1.0, 0.15 + 0.7 * g("AU12") + 0.8 * g("AU10") + 0.2 * g("AU6"))
    for wing, corner, side in ((31, 48, -1), (35, 54, 1)):
        a, b = lm[wing], lm[corner]
        mid = (a + b) / 2 + np.array([side * 0.06, 0.0])
        d.line(P(_smooth([a + [side * 0.03, -0.01], mid, b + [side * 0.05, 0.02]], False), 0.25),
               fill=_blend(skin, crease, fold), width=line_w + int(fold > 0.5))
    # AU15 marionette lines, AU24 chin/upper-lip bulge lines
    if g("AU15") > 0.05:
        for corner, side in ((48, -1), (54, 1)):
            c0 = lm[corner]
            d.line(P([c0 + [side * 0.02, 0.03], c0 + [side * 0.05, 0.16]], 0.15),
                   fill=_blend(skin, crease, min(1, g("AU15") * 1.4)), width=line_w)
    if g("AU24") > 0.05 or g("AU23") > 0.05:
        k = min(1, 1.3 * max(g("AU24"), 0.7 * g("AU23")))
        d.line(P(_smooth([lm[58] + [0, 0.05], lm[57] + [0, 0.07], lm[56] + [0, 0.05]], False), 0.2),
               fill=_blend(skin, crease, k), width=line_w)
        d.line(P(_smooth([lm[50] + [0, -0.04], lm[51] + [0, -0.05], lm[52] + [0, -0.04]], False), 0.3),
               fill=_blend(skin, crease, 0.7 * k), width=line_w)
    # chin shadow when the jaw drops
    if g("AU26") > 0.05:
        d.ellipse(_bbox(P([lm[57] + [-0.12, 0.05], lm[57] + [0.12, 0.12 + 0.1 * g("AU26")]], 0.2)),
                  fill=_blend(skin, crease, 0.4 * g("AU26")))

    # nose: bridge shade, wings, nostrils
    d.line(P(lm[27:31], _DEPTH[27:31]), fill=_blend(skin, crease, 0.25), width=line_w)
    d.line(P(_smooth(lm[31:36], False), _DEPTH[31:36]), fill=_blend(skin, crease, 0.6), width=line_w)
    for i in (32, 34):
        q = lm[i] + [0, -0.015]
        d.ellipse(_bbox(P([q - [0.035, 0.018], q + [0.035, 0.018]], 0.4)), fill=_c(skin, 0.35))

    # eyes: sclera, iris clipped to the lids, lid lines; AU7 darkens the tense lower lid
    for base in (36, 42):
        eye = lm[base:base + 6]
        poly = P(_smooth(eye), 0.12)
        d.polygon(poly, fill=(236, 234, 228))
        centre = eye.mean(axis=0)
        r = ident.lid_h * 1.05

        def iris(ld, centre=centre, r=r):
            ld.ellipse(_bbox(P([centre - r, centre + r], 0.15)), fill=_c(ident.iris))
            ld.ellipse(_bbox(P([centre - r * 0.45, centre + r * 0.45], 0.15)), fill=(15, 12, 12))

        _paint_inside(img, poly, iris)
        d.line(P(_smooth(eye[[0, 1, 2, 3]], False), 0.12), fill=(35, 25, 22), width=line_w + 1)
        d.line(P(_smooth(eye[[3, 4, 5, 0]], False), 0.12),
               fill=_blend(skin, (60, 40, 35), 0.45 + 0.5 * g("AU7")), width=line_w + int(g("AU7") > 0.4))
        # lower-lid bulge of AU7
        if g("AU7") > 0.05:
            d.line(P(_smooth(eye[[3, 4, 5, 0]] + [0, 0.035], False), 0.12),
                   fill=_blend(skin, crease, min(1, g("AU7") * 1.2)), width=line_w)

    # brows
    thick = max(2, int(round(unit * ident.brow_thick)))
    for idx in (range(17, 22), range(22, 27)):
        d.line(P(_smooth(lm[list(idx)], False), _DEPTH[list(idx)]), fill=_c(ident.hair, 0.8), width=thick, joint="curve")

    # mouth: lips, cavity, teeth
    outer = P(_smooth(lm[48:60]), 0.3)
    d.polygon(outer, fill=_c(ident.lips))
    inner = lm[60:68]
    open_gap = float(np.mean(inner[[5, 6, 7], 1] - inner[[3, 2, 1], 1]))
    if open_gap > 0.01:
        inner_poly = P(_smooth(inner), 0.3)
        d.polygon(inner_poly, fill=(60, 20, 25))
        top_y = inner[[1, 2, 3], 1].min()
        _paint_inside(img, inner_poly, lambda ld: ld.rectangle(
            _bbox(P([[inner[0, 0], top_y - 0.05], [inner[4, 0], top_y + 0.045]], 0.3)), fill=(238, 236, 226)))
    else:
        d.line(P(_smooth(inner[[0, 1, 2, 3, 4]], False), 0.3), fill=_c(ident.lips, 0.55), width=line_w)

    # lighting, tint, blur, noise; then down-sample
    arr = np.asarray(img, dtype=np.float32)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S - 0.5
    shade = 1 + light.strength * (xx * light.direction[0] + yy * light.direction[1]) * 2
    arr = arr * (shade[..., None] * light.brightness) * np.array(light.tint, dtype=np.float32)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6 * SUPERSAMPLE))
    img = img.resize((size, size), Image.Resampling.BOX)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, light.noise, (size, size, 3)).astype(np.float32)
    landmarks = project(lm, _DEPTH, pose, size)
    return np.clip(arr, 0, 255).round().astype(np.uint8), landmarks


def _paint_inside(img: Image.Image, polygon, paint) -> None:
    """``paint(draw)`` on ``img``, kept only inside ``polygon`` (the iris inside the lids, the
    teeth inside the lips)."""
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).polygon(polygon, fill=255)
    layer = img.copy()
    paint(ImageDraw.Draw(layer))
    img.paste(layer, (0, 0), mask)


def _bbox(points):
    (x0, y0), (x1, y1) = points[0], points[1]
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def _blend(a, b, t):
    t = float(min(1.0, max(0.0, t)))
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))


# ----------------------------------------------------------------------------------------
# The dataset: specs, writing, stats
# ----------------------------------------------------------------------------------------
@dataclass
class SampleSpec:
    index: int
    video: int
    split: str
    identity: Identity
    expression: Expression
    pose: Pose
    lighting: Lighting
    noise_seed: list = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"synth{self.index:06d}"


def sample_specs(n: int, seed: int, images_per_video: int = 10, val_fraction: float = 0.2,
                 label_noise: float = 0.02) -> list[SampleSpec]:
    """The full, cheap description of every sample. Emotions are exactly balanced (each class
    n/8, +-1) and shuffled; identities ('videos') hold ``images_per_video`` images; a seeded
    ``val_fraction`` of the videos is the validation split."""
    if n < 1:
        raise ValueError(f"n: expected at least 1 image, got {n}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
    rng = np.random.default_rng([seed, 0])
    emotions = np.arange(n) % len(EMOTIONS)
    rng.shuffle(emotions)
    n_videos = math.ceil(n / images_per_video)
    val_videos = set(rng.permutation(n_videos)[: int(round(n_videos * val_fraction))].tolist())
    identities = [Identity.sample(np.random.default_rng([seed, 1, v])) for v in range(n_videos)]
    specs = []
    for i in range(n):
        r = np.random.default_rng([seed, 2, i])
        video = i // images_per_video
        specs.append(SampleSpec(
            index=i, video=video, split="val" if video in val_videos else "train", identity=identities[video],
            expression=sample_expression(int(emotions[i]), r, label_noise), pose=Pose.sample(r),
            lighting=Lighting.sample(r), noise_seed=[seed, 3, i]))
    return specs


def render_spec(spec: SampleSpec, size: int) -> tuple[np.ndarray, np.ndarray]:
    return render(spec.identity, spec.expression.intensities, spec.pose, spec.lighting, size,
                  np.random.default_rng(spec.noise_seed))


def landmarks_of(spec: SampleSpec, size: int) -> np.ndarray:
    """The sample's landmarks in pixels, without rendering it."""
    lm = face_landmarks(spec.identity, spec.expression.intensities)
    return project(lm, _DEPTH, spec.pose, size)


def _write_png(path: Path, image: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(image).save(tmp, format="PNG", compress_level=6)
    os.replace(tmp, path)


def _render_to(args):
    spec, size, path = args
    image, _ = render_spec(spec, size)
    _write_png(Path(path), image)
    return spec.index


def manifest_row(spec: SampleSpec, size: int) -> dict:
    lm = landmarks_of(spec, size)
    return {"id": spec.id, "image": f"images/{spec.id}.png", "video": f"synth_video{spec.video:05d}",
            "split": spec.split, "emotion": EMOTIONS[spec.expression.emotion], **spec.expression.labels,
            "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in lm]}


def write_synthfacs(out: Path, n: int, size: int = 112, seed: int = 0, images_per_video: int = 10,
                    val_fraction: float = 0.2, label_noise: float = 0.02, workers: int | None = None,
                    baseline: bool = True, progress=None) -> dict:
    """Write images/, manifest.jsonl and stats.json. Images already on disk are kept (each
    file is written complete or not at all), so a killed run resumes where it stopped."""
    from mf2.data.manifest import atomic_write_text, write_manifest

    if size not in (112, 224):
        raise ValueError(f"size: expected 112 or 224, got {size}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    specs = sample_specs(n, seed, images_per_video, val_fraction, label_noise)
    todo = [(s, size, str(out / "images" / f"{s.id}.png")) for s in specs
            if not (out / "images" / f"{s.id}.png").exists()]
    workers = workers or os.cpu_count() or 1
    done = 0
    if workers > 1 and len(todo) > 8:
        import multiprocessing as mp

        with mp.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_to, todo, chunksize=8):
                done += 1
                if progress:
                    progress(1)
    else:
        for args in todo:
            _render_to(args)
            done += 1
            if progress:
                progress(1)
    rows = [manifest_row(s, size) for s in specs]
    write_manifest(rows, out / "manifest.jsonl")
    stats = dataset_stats(rows)
    if baseline:
        from mf2.data.baseline import pixel_baseline
        from mf2.data.manifest import read_manifest

        stats["pixel_logistic_baseline"] = pixel_baseline(read_manifest(out / "manifest.jsonl"))
    stats["synthfacs"] = {"n": n, "size": size, "seed": seed, "images_per_video": images_per_video,
                          "val_fraction": val_fraction, "label_noise": label_noise,
                          "rendered": done, "reused": n - len(todo)}
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=2) + "\n")
    return stats


def dataset_stats(rows: list[dict]) -> dict:
    """Images and videos per split and per class, and AU positive rates."""
    from collections import Counter, defaultdict

    per_split = defaultdict(lambda: {"images": 0, "videos": set(), "classes": Counter()})
    for r in rows:
        s = per_split[r.get("split") or "unsplit"]
        s["images"] += 1
        s["videos"].add(r["video"])
        emo = r["emotion"]
        s["classes"][emo if isinstance(emo, str) else EMOTIONS[emo] if emo >= 0 else "missing"] += 1
    splits = {name: {"images": s["images"], "videos": len(s["videos"]),
                     "per_class": {e: s["classes"].get(e, 0) for e in EMOTIONS}}
              for name, s in sorted(per_split.items())}
    au_rate = {au: round(sum(r[au] == 1 for r in rows) / max(1, sum(r[au] != -1 for r in rows)), 4) for au in AUS}
    return {"images": len(rows), "videos": len({r["video"] for r in rows}), "splits": splits,
            "au_positive_rate": au_rate}


__all__ = ["Identity", "Pose", "Lighting", "Expression", "sample_expression", "face_landmarks", "render",
           "sample_specs", "render_spec", "write_synthfacs", "dataset_stats", "AU_INDEX"]
