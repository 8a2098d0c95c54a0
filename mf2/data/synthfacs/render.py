"""The SynthFACS renderer: one face drawn from the face model at 2x supersampling, region by
region, each AU's appearance cue (wrinkles, folds, cheek bulges, lid tension, teeth) at its own
region, so the AU-centre table of DATA.md points at the evidence; then lighting, blur, noise.

``render`` is a pure function of its arguments and ``rng``: the same inputs give the same
bytes. The regions are drawn in a fixed order (later ones paint over earlier ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mf2.data.synthfacs.face import DEPTH, Identity, Pose, face_landmarks, project

SUPERSAMPLE = 2


@dataclass
class Lighting:
    direction: tuple = (0.0, -1.0)
    strength: float = 0.0
    brightness: float = 1.0
    tint: tuple = (1.0, 1.0, 1.0)
    noise: float = 0.0
    background: tuple = ((90, 110, 130), (40, 50, 60))
    # the hard preset's: contrast around mid-grey and a gamma curve (1 = none), more background blobs
    contrast: float = 1.0
    gamma: float = 1.0
    blobs: int = 3

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Lighting":
        angle = rng.uniform(0, 2 * math.pi)
        return cls(direction=(math.cos(angle), math.sin(angle)), strength=rng.uniform(0.0, 0.35),
                   brightness=rng.uniform(0.75, 1.15), tint=tuple(rng.uniform(0.9, 1.1, 3)),
                   noise=rng.uniform(1.0, 6.0),
                   background=(tuple(rng.integers(20, 235, 3)), tuple(rng.integers(20, 235, 3))))

    @classmethod
    def sample_hard(cls, rng: np.random.Generator) -> "Lighting":
        """Side light that shades half the face, dim and bright exposures, colour casts, flat and
        harsh contrast, sensor noise, cluttered backgrounds."""
        angle = rng.uniform(0, 2 * math.pi)
        return cls(direction=(math.cos(angle), math.sin(angle)), strength=rng.uniform(0.0, 0.5),
                   brightness=rng.uniform(0.7, 1.25), tint=tuple(rng.uniform(0.85, 1.15, 3)),
                   noise=rng.uniform(1.0, 7.0),
                   background=(tuple(rng.integers(10, 245, 3)), tuple(rng.integers(10, 245, 3))),
                   contrast=rng.uniform(0.75, 1.15), gamma=float(np.exp(rng.uniform(-0.3, 0.3))),
                   blobs=int(rng.integers(2, 8)))


@dataclass
class Capture:
    """How a hard-preset face reaches the data set after it is drawn (at 112 px): lens or motion
    blur (Gaussian sigma in pixels at 112 px), the side it is stored at, grey or colour, the
    JPEG quality it is saved with."""

    side: int = 112
    blur: float = 0.0
    grey: bool = False
    quality: int = 90

    @classmethod
    def sample(cls, rng: np.random.Generator, sides=(48, 112)) -> "Capture":
        side = int(round(math.exp(rng.uniform(math.log(sides[0]), math.log(sides[1])))))
        return cls(side=side, blur=float(rng.uniform(0.0, 0.7) ** 1.5), grey=bool(rng.random() < 0.5),
                   quality=int(rng.integers(35, 91)))


@dataclass(frozen=True)
class Cues:
    """How visible the drawn creases and lines are. A crease is the skin darkened to 0.72 of its
    colour; ``floor`` (grey levels, 0 = none) is the least it darkens it, so that a crease on dark
    skin stays as visible as on light skin (0.72 alone leaves 25 levels on the darkest skin, 67 on
    the lightest). ``width`` multiplies every drawn line's width, so that lines a face drawn at
    112 px shows survive its storage at 48 px (real folds and furrows are broad shading, not
    one-pixel lines). The defaults draw every face as before the setting existed."""

    floor: float = 0.0
    width: float = 1.0

    def __post_init__(self):
        if not (math.isfinite(self.floor) and 0 <= self.floor <= 255):
            raise ValueError(f"cues.floor: expected grey levels in [0, 255], got {self.floor}")
        if not (math.isfinite(self.width) and self.width > 0):
            raise ValueError(f"cues.width: expected a positive factor, got {self.width}")


def capture(image: np.ndarray, cap: Capture) -> Image.Image:
    """A drawn face [S, S, 3] as the camera and the file keep it: blurred, resized to
    ``cap.side`` px, grey or colour (then saved as JPEG at ``cap.quality``)."""
    img = Image.fromarray(image)
    if cap.blur > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(cap.blur))
    if cap.side != img.size[0]:
        img = img.resize((cap.side, cap.side), Image.Resampling.BILINEAR)
    return img.convert("L") if cap.grey else img


def render(ident: Identity, expr_intensity: dict, pose: Pose, light: Lighting, size: int,
           rng: np.random.Generator, cues: Cues = Cues()) -> tuple[np.ndarray, np.ndarray]:
    """Draw one face. Returns (image [size, size, 3] uint8, landmarks [68, 2] in pixels)."""
    lm = face_landmarks(ident, expr_intensity)
    face = _Face(ident, expr_intensity, lm, pose, size * SUPERSAMPLE, cues)
    img = _background(light, face.S, rng)
    d = ImageDraw.Draw(img)
    face.head(d)
    face.texture(d)
    face.age_lines(d)
    face.forehead(d)
    face.cheeks(d)
    face.folds(d)
    face.beard(img)
    face.nose(d)
    face.eyes(img, d)
    face.brows(d)
    face.mouth(img, d)
    face.fringe(d)
    face.glasses(img, d)
    image = _finish(img, light, size, rng)
    return image, project(lm, DEPTH, pose, size)


def _background(light: Lighting, S: int, rng: np.random.Generator) -> Image.Image:
    """A vertical gradient with three blurred blobs."""
    top, bottom = np.array(light.background[0], float), np.array(light.background[1], float)
    ramp = np.linspace(0, 1, S)[:, None, None]
    bg = (top * (1 - ramp) + bottom * ramp).repeat(S, axis=1)
    img = Image.fromarray(bg.astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(light.blobs):
        cx, cy, r = rng.uniform(0, S), rng.uniform(0, S), rng.uniform(0.05, 0.3) * S
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in rng.integers(20, 235, 3)))
    return img.filter(ImageFilter.GaussianBlur(S * 0.03))


def _finish(img: Image.Image, light: Lighting, size: int, rng: np.random.Generator) -> np.ndarray:
    """Lighting, tint, blur, down-sampling and sensor noise."""
    S = img.size[0]
    arr = np.asarray(img, dtype=np.float32)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S - 0.5
    shade = 1 + light.strength * (xx * light.direction[0] + yy * light.direction[1]) * 2
    arr = arr * (shade[..., None] * light.brightness) * np.array(light.tint, dtype=np.float32)
    if light.contrast != 1.0 or light.gamma != 1.0:
        arr = 128 + (arr - 128) * np.float32(light.contrast)
        arr = 255 * (np.clip(arr, 0, 255) / 255) ** np.float32(light.gamma)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6 * SUPERSAMPLE))
    img = img.resize((size, size), Image.Resampling.BOX)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, light.noise, (size, size, 3)).astype(np.float32)
    return np.clip(arr, 0, 255).round().astype(np.uint8)


class _Face:
    """One face's drawing state: its landmarks, colours and line widths, and the projection of
    face-frame points to the supersampled canvas."""

    def __init__(self, ident: Identity, intensity: dict, lm: np.ndarray, pose: Pose, S: int, cues: Cues = Cues()):
        self.ident, self.intensity, self.lm, self.pose, self.S = ident, intensity, lm, pose, S
        unit = pose.scale * S  # pixels per face unit
        self.skin = np.array(_c(ident.skin))
        self.crease = _c(self.skin, 0.72)
        if cues.floor > 0:
            self.crease = _c(self.skin - np.maximum(0.28 * self.skin, cues.floor))
        self.line_w = max(1, int(round(unit * 0.018 * cues.width)))
        self.brow_w = max(2, int(round(unit * ident.brow_thick)))
        self.by = ident.eye_y - ident.brow_gap  # brow line

    def g(self, au: str) -> float:
        return float(self.intensity.get(au, 0.0))

    def P(self, points, depth=0.15):
        """Face-frame points -> pixel tuples; a depth array shorter than the points (a smoothed
        curve through landmarks) is resampled along the curve."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        depth = np.atleast_1d(np.asarray(depth, dtype=float))
        if len(depth) != len(points):
            depth = np.interp(np.linspace(0, 1, len(points)), np.linspace(0, 1, len(depth)), depth)
        return [tuple(q) for q in project(points, depth, self.pose, self.S)]

    def shade(self, t: float) -> tuple:
        """Skin darkened towards the crease colour by ``t``."""
        return _blend(self.skin, self.crease, t)

    def head(self, d: ImageDraw.ImageDraw) -> None:
        """Hair mass behind the head, neck, face, and the hair cap."""
        ident, P, lm, skin = self.ident, self.P, self.lm, self.skin
        d.ellipse(_bbox(P([[-1.15, -1.35], [1.15, 0.35]], 0)), fill=_c(ident.hair))
        d.polygon(P([[-0.4, 0.5], [0.4, 0.5], [0.5, 1.6], [-0.5, 1.6]], -0.2), fill=_c(skin, 0.82))
        forehead = [[ident.face_w * math.cos(a) * 0.98, -0.22 - (1.05 + 0.22) * math.sin(a) ** 0.9]
                    for a in np.linspace(0.0, math.pi, 15)]
        outline = np.concatenate([lm[0:17], np.array(forehead[1:-1])])
        if ident.relief > 0:  # the forehead's sides as far back as the jaw's ends, its top in the face plane
            top = -0.55 + 0.65 * np.sin(np.linspace(0.0, math.pi, 15)[1:-1]) ** 0.7
            depth = np.concatenate([DEPTH[0:17], 0.1 + ident.relief * (top - 0.1)])
        else:
            depth = np.concatenate([DEPTH[0:17], np.full(13, 0.1)])
        d.polygon(P(_smooth(outline), depth), fill=_c(skin))
        # hair cap: the hairline curve, closed by the arc of the hair mass over the top of the head
        hair_pts = [[ident.face_w * math.cos(a) * 1.02, ident.hairline - 0.35 * math.sin(a) ** 2 + 0.1 * (1 - math.sin(a))]
                    for a in np.linspace(0.0, math.pi, 13)]
        hair_pts += [[1.15 * math.cos(t), -0.5 - 0.85 * math.sin(t)] for t in np.linspace(math.pi, 0.0, 13)]
        d.polygon(P(hair_pts, 0.05), fill=_c(ident.hair))

    def texture(self, d: ImageDraw.ImageDraw) -> None:
        """Freckles and blotches, at the same places on every image of the person."""
        ident = self.ident
        if ident.texture <= 0:
            return
        r = np.random.default_rng(ident.texture_seed)
        for _ in range(int(8 + 50 * ident.texture)):
            x, y, rad, k = r.uniform(-0.85, 0.85), r.uniform(-0.75, 0.95), r.uniform(0.008, 0.03), r.uniform(0.1, 0.45)
            if (x / ident.face_w) ** 2 + ((y - 0.1) / 1.05) ** 2 < 0.8:
                d.ellipse(_bbox(self.P([[x - rad, y - rad], [x + rad, y + rad]], 0.2)), fill=self.shade(k))

    def age_lines(self, d: ImageDraw.ImageDraw) -> None:
        """Lines an older face has at rest: across the forehead (where AU1 and AU2 wrinkle it) and
        at the outer eye corners (where AU6 does)."""
        a = self.ident.age
        if a <= 0.05:
            return
        P, w = self.P, self.line_w
        for k in range(int(1 + 3 * a)):
            y = self.by - 0.19 - 0.085 * k
            d.line(P(_smooth([[-0.55, y + 0.025], [0, y - 0.01], [0.55, y + 0.025]], False), 0.2),
                   fill=self.shade(0.4 * a), width=w)
        for side, li in ((-1, 36), (1, 45)):
            ox, oy = self.lm[li]
            d.line(P([[ox + side * 0.03, oy + 0.03], [ox + side * 0.12, oy + 0.07]], 0.0), fill=self.shade(0.35 * a),
                   width=w)

    def beard(self, img: Image.Image) -> None:
        """Stubble or a beard over the jaw, the chin and the upper lip (drawn translucent)."""
        b = self.ident.beard
        if b <= 0:
            return
        lm = self.lm
        outline = np.concatenate([lm[3:14], [[lm[13, 0], lm[54, 1] - 0.12], lm[35] + [0.03, 0.03],
                                             lm[31] + [-0.03, 0.03], [lm[3, 0], lm[48, 1] - 0.12]]])
        mask = Image.new("L", img.size, 0)
        ImageDraw.Draw(mask).polygon(self.P(_smooth(outline), 0.2), fill=int(40 + 170 * b))
        img.paste(_c(self.ident.hair, 0.7), (0, 0, *img.size), mask)

    def fringe(self, d: ImageDraw.ImageDraw) -> None:
        """Hair over the forehead, its ragged edge down to the brows at most."""
        ident = self.ident
        if ident.fringe <= 0:
            return
        top = ident.hairline - 0.1
        low = ident.hairline + ident.fringe * (self.by - 0.05 - ident.hairline)
        xs = np.linspace(-ident.face_w, ident.face_w, 15)
        edge = [[x, low + 0.04 * (1 if i % 2 else -1) - 0.2 * (x / ident.face_w) ** 2] for i, x in enumerate(xs)]
        d.polygon(self.P([[xs[0], top]] + edge + [[xs[-1], top]], 0.15), fill=_c(ident.hair))

    def glasses(self, img: Image.Image, d: ImageDraw.ImageDraw) -> None:
        """Frames around both eyes (round or square), bridge and temples; tinted lenses dim the eyes."""
        if self.ident.glasses is None:
            return
        shape, colour, width, tint = self.ident.glasses
        rx, ry = self.ident.eye_w * 1.6, self.ident.eye_w * 1.15
        a = np.linspace(0, 2 * math.pi, 28, endpoint=False)
        power = 1.0 if shape == "round" else 0.35  # a superellipse: 1 = ellipse, smaller = squarer
        ux = np.sign(np.cos(a)) * np.abs(np.cos(a)) ** power
        uy = np.sign(np.sin(a)) * np.abs(np.sin(a)) ** power
        centres = [self.lm[36:42].mean(0) + [0, 0.01], self.lm[42:48].mean(0) + [0, 0.01]]
        lenses = [self.P(np.stack([c[0] + rx * ux, c[1] + ry * uy], 1), 0.3) for c in centres]
        if tint > 0:
            mask = Image.new("L", img.size, 0)
            for lens in lenses:
                ImageDraw.Draw(mask).polygon(lens, fill=int(255 * tint))
            img.paste((25, 25, 30), (0, 0, *img.size), mask)
        w = max(1, int(round(self.pose.scale * self.S * width)))
        for lens in lenses:
            d.line(lens + [lens[0]], fill=colour, width=w, joint="curve")
        (cr, cl) = centres
        d.line(self.P(_smooth([[cr[0] + rx, cr[1]], [0, cr[1] - 0.04], [cl[0] - rx, cl[1]]], False), 0.4), fill=colour,
               width=w)
        for c, side in ((cr, -1), (cl, 1)):
            d.line(self.P([[c[0] + side * rx, c[1] - 0.02], [side * self.ident.face_w * 0.99, c[1] - 0.05]], 0.1),
                   fill=colour, width=w)

    def forehead(self, d: ImageDraw.ImageDraw) -> None:
        """Forehead wrinkles (AU1 central, AU2 lateral) and glabella lines (AU4)."""
        P, g, by, w = self.P, self.g, self.by, self.line_w
        for k in range(3):
            y = by - 0.2 - 0.09 * k
            if g("AU1") > 0.05:
                d.line(P(_smooth([[-0.3, y + 0.02], [0, y - 0.02], [0.3, y + 0.02]], False), 0.2),
                       fill=self.shade(min(1, g("AU1") * 1.3)), width=w)
            if g("AU2") > 0.05:
                for side in (-1, 1):
                    d.line(P(_smooth([[side * 0.45, y + 0.03], [side * 0.65, y - 0.01], [side * 0.82, y + 0.04]], False), 0.1),
                           fill=self.shade(min(1, g("AU2") * 1.3)), width=w)
        if g("AU4") > 0.05:
            for side in (-1, 1):
                d.line(P([[side * 0.06, by - 0.02], [side * 0.08, by + 0.14]], 0.25),
                       fill=self.shade(min(1, g("AU4") * 1.4)), width=w + 1)
            d.ellipse(_bbox(P([[-0.2, by + 0.02], [0.2, by + 0.12]], 0.25)), fill=self.shade(0.25 * g("AU4")))

    def cheeks(self, d: ImageDraw.ImageDraw) -> None:
        """AU6: raised, lit cheek mass and crow's feet (AU12 helps raise the cheeks)."""
        P, g, lm, w = self.P, self.g, self.lm, self.line_w
        cheek = min(1.0, g("AU6") + 0.4 * g("AU12"))
        for side, li in ((-1, 41), (1, 46)):
            cx, cy = lm[li, 0] + side * 0.05, lm[li, 1] + 0.24 - 0.08 * cheek
            d.ellipse(_bbox(P([[cx - 0.2, cy - 0.11], [cx + 0.2, cy + 0.11]], 0.2)),
                      fill=_blend(self.skin, (255, 235, 225), 0.35 * cheek))
            if cheek > 0.05:
                d.line(P(_smooth([[cx - 0.17, cy - 0.14], [cx, cy - 0.18], [cx + 0.17, cy - 0.14]], False), 0.2),
                       fill=self.shade(min(1, cheek)), width=w)
            if g("AU6") > 0.05:
                ox, oy = lm[36 if side < 0 else 45]
                for k in (-1, 0, 1):
                    d.line(P([[ox + side * 0.03, oy + 0.02 * k], [ox + side * 0.14, oy + 0.06 * k]], 0.0),
                           fill=self.shade(min(1, g("AU6") * 1.3)), width=w)

    def folds(self, d: ImageDraw.ImageDraw) -> None:
        """Nasolabial folds (deeper with AU10 / AU12 / AU6), AU15 marionette lines, AU23/AU24
        lines above and below the lips, the chin shadow of AU26."""
        P, g, lm, w = self.P, self.g, self.lm, self.line_w
        fold = min(1.0, 0.15 + 0.7 * g("AU12") + 0.8 * g("AU10") + 0.2 * g("AU6"))
        if self.ident.age > 0:  # deeper folds at rest
            fold = min(1.0, fold + 0.35 * self.ident.age)
        for wing, corner, side in ((31, 48, -1), (35, 54, 1)):
            a, b = lm[wing], lm[corner]
            mid = (a + b) / 2 + np.array([side * 0.06, 0.0])
            d.line(P(_smooth([a + [side * 0.03, -0.01], mid, b + [side * 0.05, 0.02]], False), 0.25),
                   fill=self.shade(fold), width=w + int(fold > 0.5))
        if g("AU15") > 0.05:
            for corner, side in ((48, -1), (54, 1)):
                c0 = lm[corner]
                d.line(P([c0 + [side * 0.02, 0.03], c0 + [side * 0.05, 0.16]], 0.15),
                       fill=self.shade(min(1, g("AU15") * 1.4)), width=w)
        if g("AU24") > 0.05 or g("AU23") > 0.05:
            k = min(1, 1.3 * max(g("AU24"), 0.7 * g("AU23")))
            d.line(P(_smooth([lm[58] + [0, 0.05], lm[57] + [0, 0.07], lm[56] + [0, 0.05]], False), 0.2),
                   fill=self.shade(k), width=w)
            d.line(P(_smooth([lm[50] + [0, -0.04], lm[51] + [0, -0.05], lm[52] + [0, -0.04]], False), 0.3),
                   fill=self.shade(0.7 * k), width=w)
        if g("AU26") > 0.05:
            d.ellipse(_bbox(P([lm[57] + [-0.12, 0.05], lm[57] + [0.12, 0.12 + 0.1 * g("AU26")]], 0.2)),
                      fill=self.shade(0.4 * g("AU26")))

    def nose(self, d: ImageDraw.ImageDraw) -> None:
        """Bridge shade, wings, nostrils (with ``Identity.relief``: the shaded nose)."""
        if self.ident.relief > 0:
            return self.shaded_nose(d)
        P, lm, w = self.P, self.lm, self.line_w
        d.line(P(lm[27:31], DEPTH[27:31]), fill=self.shade(0.25), width=w)
        d.line(P(_smooth(lm[31:36], False), DEPTH[31:36]), fill=self.shade(0.6), width=w)
        for i in (32, 34):
            q = lm[i] + [0, -0.015]
            d.ellipse(_bbox(P([q - [0.035, 0.018], q + [0.035, 0.018]], 0.4)), fill=_c(self.skin, 0.35))

    def shaded_nose(self, d: ImageDraw.ImageDraw) -> None:
        """A nose with the cues of a real one, each drawn at its depth so that it turns with the head:
        shaded sides from beside the bridge down to the wings, a lit ridge and tip, the alar creases
        around the wings, the base and the nostrils. The line nose of the flat drawing is next to
        invisible to a landmark model trained on photos: dlib places its nose points from the eyes
        and mouth (they follow a tenth of a sideways move of the drawn nose, 0.65 of this one's), and
        so reads a turned head as nearly frontal."""
        P, lm, w, k = self.P, self.lm, self.line_w, self.ident.relief
        light = (255, 240, 230)
        for s, wing in ((-1, 31), (1, 35)):
            side = [[s * 0.045, lm[27, 1] + 0.04], [s * 0.06, lm[28, 1]], [s * 0.075, lm[29, 1]],
                    lm[wing] + [-s * 0.015, -0.07]]
            d.line(P(_smooth(side, False), [0.3, 0.36, 0.42, 0.38]), fill=self.shade(0.45 * k), width=2 * w, joint="curve")
        tip = lm[30]
        d.ellipse(_bbox(P([tip + [-0.045, -0.04], tip + [0.045, 0.035]], DEPTH[30])), fill=_blend(self.skin, light, 0.25 * k))
        for s, wing in ((-1, 31), (1, 35)):
            c = lm[wing] + [-s * 0.025, -0.02]
            arc = np.array([c + [0.035 * s * math.cos(t), -0.04 * math.sin(t)] for t in np.linspace(-0.6, 0.9 * math.pi, 7)])
            d.line(P(_smooth(arc, False), 0.37), fill=self.shade(0.7 * k), width=w + 1, joint="curve")
        d.line(P(_smooth(lm[31:36], False), DEPTH[31:36]), fill=self.shade(0.6), width=w)
        # the nostrils: discs that open downwards and forwards (at 45 degrees), so more of them shows
        # with the chin up and none once they turn away from the camera (chin well down)
        pose = self.pose
        if (math.sin(pose.pitch) + math.cos(pose.pitch)) * math.cos(pose.yaw) > 0.05:
            t = np.linspace(0.0, 2 * math.pi, 16, endpoint=False)
            for i in (32, 34):
                q = lm[i] + [0, -0.012]
                disc = np.c_[q[0] + 0.05 * np.cos(t), q[1] - 0.024 * np.sin(t)]
                d.polygon(P(disc, DEPTH[i] + 0.024 * np.sin(t)), fill=_c(self.skin, 0.3))
        d.line(P(lm[27:31], DEPTH[27:31]), fill=_blend(self.skin, light, 0.2 * k), width=w + 1)

    def eyes(self, img: Image.Image, d: ImageDraw.ImageDraw) -> None:
        """Sclera, iris clipped to the lids, lid lines; AU7 darkens and bulges the tense lower lid."""
        P, g, ident, w = self.P, self.g, self.ident, self.line_w
        for base in (36, 42):
            eye = self.lm[base:base + 6]
            poly = P(_smooth(eye), 0.12)
            d.polygon(poly, fill=(236, 234, 228))
            centre = eye.mean(axis=0)
            r = ident.lid_h * 1.05

            def iris(ld, centre=centre, r=r):
                ld.ellipse(_bbox(P([centre - r, centre + r], 0.15)), fill=_c(ident.iris))
                ld.ellipse(_bbox(P([centre - r * 0.45, centre + r * 0.45], 0.15)), fill=(15, 12, 12))

            _paint_inside(img, poly, iris)
            d.line(P(_smooth(eye[[0, 1, 2, 3]], False), 0.12), fill=(35, 25, 22), width=w + 1)
            d.line(P(_smooth(eye[[3, 4, 5, 0]], False), 0.12),
                   fill=_blend(self.skin, (60, 40, 35), 0.45 + 0.5 * g("AU7")), width=w + int(g("AU7") > 0.4))
            if g("AU7") > 0.05:
                d.line(P(_smooth(eye[[3, 4, 5, 0]] + [0, 0.035], False), 0.12),
                       fill=self.shade(min(1, g("AU7") * 1.2)), width=w)

    def brows(self, d: ImageDraw.ImageDraw) -> None:
        colour = _c(self.ident.hair, 0.8) if self.ident.brow_colour is None else _c(self.ident.brow_colour)
        for idx in (range(17, 22), range(22, 27)):
            d.line(self.P(_smooth(self.lm[list(idx)], False), DEPTH[list(idx)]), fill=colour,
                   width=self.brow_w, joint="curve")

    def mouth(self, img: Image.Image, d: ImageDraw.ImageDraw) -> None:
        """Lips; when they part, the cavity and the upper teeth."""
        P, ident = self.P, self.ident
        d.polygon(P(_smooth(self.lm[48:60]), 0.3), fill=_c(ident.lips))
        inner = self.lm[60:68]
        open_gap = float(np.mean(inner[[5, 6, 7], 1] - inner[[3, 2, 1], 1]))
        if open_gap > 0.01:
            inner_poly = P(_smooth(inner), 0.3)
            d.polygon(inner_poly, fill=(60, 20, 25))
            top_y = inner[[1, 2, 3], 1].min()
            _paint_inside(img, inner_poly, lambda ld: ld.rectangle(
                _bbox(P([[inner[0, 0], top_y - 0.05], [inner[4, 0], top_y + 0.045]], 0.3)), fill=(238, 236, 226)))
        else:
            d.line(P(_smooth(inner[[0, 1, 2, 3, 4]], False), 0.3), fill=_c(ident.lips, 0.55), width=self.line_w)


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
