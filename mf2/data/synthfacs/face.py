"""The SynthFACS face model: identity, head pose, and the 68 iBUG landmarks in a *face frame*
(origin between the eyes and the nose tip, x right, y down, half the face width ~ 1), with the
12 AUs displacing them; ``project`` maps the face frame to pixels (pitch and yaw with per-point
depth, roll, scale, shift). One transform for the landmarks and everything drawn: the landmarks are
exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Depth of each landmark (face frame units, towards the camera) for the yaw projection.
DEPTH = np.array(
    [-0.55, -0.45, -0.35, -0.25, -0.12, 0.0, 0.1, 0.17, 0.2, 0.17, 0.1, 0.0, -0.12, -0.25, -0.35, -0.45, -0.55]
    + [0.12, 0.18, 0.22, 0.25, 0.27, 0.27, 0.25, 0.22, 0.18, 0.12]
    + [0.3, 0.38, 0.46, 0.55, 0.35, 0.4, 0.45, 0.4, 0.35]
    + [0.08, 0.14, 0.14, 0.12, 0.14, 0.1] * 2
    + [0.18, 0.26, 0.31, 0.33, 0.31, 0.26, 0.18, 0.24, 0.28, 0.29, 0.28, 0.24]
    + [0.2, 0.28, 0.3, 0.28, 0.2, 0.27, 0.28, 0.27]
)
assert DEPTH.shape == (68,)


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
    # Appearance the default data set never draws (the hard preset's wider identities); the
    # defaults draw nothing, so default faces stay byte-identical.
    age: float = 0.0  # static forehead lines, folds and crow's feet (0 none .. 1 deep), which AU cues resemble
    texture: float = 0.0  # freckles and blotches (0 none .. 1 many)
    texture_seed: int = 0  # where they sit (fixed per identity)
    fringe: float = 0.0  # hair over the forehead: 0 none .. 1 down to the brows
    beard: float = 0.0  # stubble or beard over jaw, chin and upper lip (0 none .. 1 dense)
    glasses: tuple | None = None  # (shape 'round'|'square', frame RGB, frame width, lens tint 0..1)
    brow_colour: tuple | None = None  # None: from the hair colour
    # The face's 3-D relief as drawn: 0, the default, the flat drawing (a line nose, a head outline
    # whose forehead stays in the face plane); 1 a shaded nose (its sides, tip, wings and nostrils)
    # that a real-face landmark model finds, and a head outline that turns with the jaw.
    relief: float = 0.0

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

    @classmethod
    def sample_hard(cls, rng: np.random.Generator) -> "Identity":
        """A wider range of people than ``sample``: face proportions further from the mean, skin
        tones with their undertones and textures, age lines, beards, fringes and glasses."""
        t = rng.uniform(0, 1)
        undertone = rng.normal(0, 1) * np.array([6.0, -2.0, -6.0]) + rng.normal(0, 9, 3)
        skin = np.array([242, 206, 184]) * (1 - t) + np.array([84, 55, 40]) * t + undertone
        lips = skin * np.array([0.8, rng.uniform(0.5, 0.62), 0.56]) + np.array([rng.uniform(10, 40), 0, 6])
        hair = [(30, 22, 18), (70, 45, 28), (120, 85, 50), (190, 160, 110), (150, 150, 150), (20, 20, 24),
                (140, 60, 30), (225, 210, 170), (235, 235, 235), (95, 70, 55)][rng.integers(10)]
        iris = [(70, 45, 25), (60, 95, 150), (70, 110, 70), (100, 100, 105), (40, 28, 18)][rng.integers(5)]
        glasses = None
        if rng.random() < 0.25:
            frame = [(20, 20, 20), (60, 40, 30), (150, 150, 155), (120, 30, 30), (200, 180, 120)][rng.integers(5)]
            glasses = (["round", "square"][rng.integers(2)], frame, float(rng.uniform(0.012, 0.04)),
                       float(rng.uniform(0, 0.3) if rng.random() < 0.25 else 0.0))
        brow = tuple(np.clip(np.array(hair, float) * rng.uniform(0.5, 1.0), 0, 255)) if rng.random() < 0.5 else None
        return cls(
            face_w=rng.uniform(0.78, 1.06), chin_y=rng.uniform(0.88, 1.2), eye_y=rng.uniform(-0.37, -0.23),
            eye_x=rng.uniform(0.32, 0.44), eye_w=rng.uniform(0.12, 0.18), lid_h=rng.uniform(0.045, 0.085),
            brow_gap=rng.uniform(0.16, 0.32), brow_thick=rng.uniform(0.02, 0.085), nose_y=rng.uniform(0.08, 0.2),
            nose_w=rng.uniform(0.12, 0.22), mouth_y=rng.uniform(0.4, 0.55), mouth_w=rng.uniform(0.21, 0.34),
            lip=rng.uniform(0.55, 1.4), skin=tuple(np.clip(skin, 0, 255)), lips=tuple(np.clip(lips, 0, 255)),
            hair=hair, iris=iris, hairline=rng.uniform(-1.1, -0.7),
            age=float(0.8 * rng.uniform(0, 1) ** 2), texture=float(rng.uniform(0, 1) if rng.random() < 0.4 else 0.0),
            texture_seed=int(rng.integers(2**31)), fringe=float(rng.uniform(0.3, 0.8) if rng.random() < 0.25 else 0.0),
            beard=float(rng.uniform(0.2, 1.0) if rng.random() < 0.25 else 0.0), glasses=glasses, brow_colour=brow,
        )


@dataclass
class Pose:
    roll: float = 0.0  # radians, in-plane (positive: clockwise in the image)
    yaw: float = 0.0  # radians, out-of-plane (projected with landmark depth; positive: the nose moves right)
    scale: float = 0.34  # pixels per face unit, as a fraction of the image size
    tx: float = 0.0  # shift of the face origin, fraction of the image size
    ty: float = 0.0
    pitch: float = 0.0  # radians, about the horizontal axis (positive: chin up, the nose tip moves up);
    # 0, the default, leaves every render byte-identical to the renders made before the field existed

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Pose":
        return cls(roll=rng.normal(0, 0.1), yaw=rng.uniform(-0.35, 0.35), scale=rng.uniform(0.3, 0.37),
                   tx=rng.uniform(-0.04, 0.04), ty=rng.uniform(-0.04, 0.04))

    @classmethod
    def sample_hard(cls, rng: np.random.Generator) -> "Pose":
        """Wider head turns and rolls, and looser crops (scale and shift), as a face detector's
        crops of unposed photos."""
        return cls(roll=float(np.clip(rng.normal(0, 0.12), -0.35, 0.35)), yaw=rng.uniform(-0.45, 0.45),
                   scale=rng.uniform(0.29, 0.39), tx=rng.uniform(-0.05, 0.05), ty=rng.uniform(-0.05, 0.05))


# The face of mean proportions (frontal, neutral): the template of ``canonical_landmarks``.
MEAN_IDENTITY = Identity(face_w=0.93, chin_y=1.02, eye_y=-0.3, eye_x=0.38, eye_w=0.15, lid_h=0.067, brow_gap=0.24,
                         brow_thick=0.05, nose_y=0.14, nose_w=0.17, mouth_y=0.47, mouth_w=0.28, lip=1.0,
                         skin=(0, 0, 0), lips=(0, 0, 0), hair=(0, 0, 0), iris=(0, 0, 0), hairline=-0.9)


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
    """Face frame -> image pixels: pitch (about the x axis), then yaw (about the y axis), both with
    per-point depth towards the camera, projected orthographically; then roll, scale, shift.
    The rotation is ``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` of (x right, y down, depth towards the camera)."""
    y = points[:, 1]
    if pose.pitch:  # skipped at 0, so that renders without pitch stay byte-identical
        c, s = math.cos(pose.pitch), math.sin(pose.pitch)
        y, depth = c * y - s * depth, s * y + c * depth
    x = points[:, 0] * math.cos(pose.yaw) + depth * math.sin(pose.yaw)
    c, s = math.cos(pose.roll), math.sin(pose.roll)
    xr, yr = c * x - s * y, s * x + c * y
    scale = pose.scale * size
    return np.stack([size * (0.5 + pose.tx) + scale * xr, size * (0.47 + pose.ty) + scale * yr], axis=1)
