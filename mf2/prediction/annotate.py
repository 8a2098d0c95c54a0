"""``mf2 predict --annotate DIR``: each frame with its faces drawn, at the input's size.

Per face: the box, the AU regions the model pooled (the window around each AU's two centres,
mapped back from the aligned crop; active AUs bold and named), and the top emotion with its
probability. Images keep their format (PNG or JPEG; others become PNG); video frames are
written as ``<video>_f<frame>.jpg``. Names never overwrite each other within a run.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mf2.data.labels import AUS
from mf2.data.landmarks import au_centres, ruler
from mf2.features.faces import apply, invert
from mf2.io import save_image


@lru_cache(maxsize=8)
def _font(size: int):
    """Pillow's built-in font at ``size`` px, loaded once per size (not once per video frame)."""
    return ImageFont.load_default(size=size)


BOX, ACTIVE, REGION, TEXT_BG = (60, 220, 90), (255, 140, 0), (150, 190, 255), (0, 0, 0)


class Annotator:
    def __init__(self, folder, threshold: float = 0.5, au_window: float = 1.0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.threshold, self.au_window = threshold, au_window
        self.used: set[str] = set()
        self.written = 0

    def _name(self, frame) -> str:
        path = Path(frame.source)
        if frame.frame is not None:
            base, ext = f"{path.stem}_f{frame.frame:06d}", ".jpg"
        else:
            ext = ".jpg" if path.suffix.lower() in (".jpg", ".jpeg") else ".png"
            base = path.stem
        name, k = base + ext, 1
        while name in self.used:
            k += 1
            name = f"{base}_{k}{ext}"
        self.used.add(name)
        return name

    def draw(self, image: np.ndarray, faces) -> Image.Image:
        im = Image.fromarray(image).convert("RGB")
        draw = ImageDraw.Draw(im)
        w = max(1, round(min(im.size) / 300))
        font = _font(max(10, round(min(im.size) / 40)))
        if not faces:
            draw.text((4 * w, 4 * w), "no face", fill=ACTIVE, font=font, stroke_width=w, stroke_fill=TEXT_BG)
        for face in faces:
            x0, y0, x1, y1 = face.box
            draw.rectangle((x0, y0, x1, y1), outline=BOX, width=2 * w)
            inverse = invert(face.transform)
            scale = float(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))  # crop px -> image px
            half = 0.5 * self.au_window * float(ruler(face.crop_landmarks)) * scale
            centres = apply(inverse, au_centres(face.crop_landmarks))  # [12, 2, 2] image px
            aus = face.result.get("aus", {})
            active = [a for a in AUS if aus.get(a, 0.0) >= self.threshold]
            for k, au in enumerate(AUS):
                on = au in active
                for cx, cy in centres[k]:
                    draw.rectangle((cx - half, cy - half, cx + half, cy + half), outline=ACTIVE if on else REGION,
                                   width=2 * w if on else w)
                if on:
                    cx, cy = centres[k].mean(0)
                    draw.text((cx, cy), au, fill=ACTIVE, font=font, anchor="mm", stroke_width=w, stroke_fill=TEXT_BG)
            if face.result:
                label = f"{face.result['emotion']} {face.result['emotions'][face.result['emotion']]:.2f}"
                draw.text((x0, y0 - 2 * w), label, fill=BOX, font=font, anchor="lb", stroke_width=w,
                          stroke_fill=TEXT_BG)
                draw.text((x0, y1 + 2 * w), " ".join(active) or "no active AU", fill=ACTIVE, font=font, anchor="lt",
                          stroke_width=w, stroke_fill=TEXT_BG)
        return im

    def write(self, frame, faces) -> Path:
        path = self.folder / self._name(frame)
        image = self.draw(frame.image, faces)
        save_image(path, image, **({"quality": 92} if path.suffix == ".jpg" else {}))
        self.written += 1
        return path
