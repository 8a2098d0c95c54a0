"""``mf2 predict --annotate DIR``: each frame with its faces drawn, at the input's size.

Per face: the box with the person's track id, the AU regions the model pooled (the window
around each AU's two centres, mapped back from the aligned crop; active AUs bold, named inside
the face where a name covers no other; on small faces none; the active AUs always listed under
the box), and the top emotion with its probability; lines and
text are sized by the face, so a group photo's labels do not pile up; a legend says what each
colour is. Images keep their format (PNG or JPEG; others become PNG); video frames are
written as ``<video>_f<frame>.jpg``; in-memory images as ``image_<k>.png``. A name that
this run already wrote, or that a file in the folder already has (the user's own, an earlier
run's), gets ``_2``, ``_3``, ... (``mf2.io.fresh_base``): nothing there is overwritten.

``face_from_row`` rebuilds a drawable face from a row of results (box, landmarks and
probabilities), so a plot drawn later from the table matches what ``--annotate`` drew.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mf2.data.labels import AUS, EMOTIONS, per_au
from mf2.data.landmarks import au_centres, ruler
from mf2.features.face_align import _ALIGN_POINTS, apply, canonical_landmarks, invert, similarity
from mf2.io import fresh_base, output_folder, save_image


@lru_cache(maxsize=8)
def _font(size: int):
    """Pillow's built-in font at ``size`` px, loaded once per size (not once per video frame)."""
    return ImageFont.load_default(size=size)


BOX, ACTIVE, REGION, TEXT_BG = (60, 220, 90), (255, 140, 0), (150, 190, 255), (0, 0, 0)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _wrap(draw, words: list, font, width: float) -> list[str]:
    """``words`` in lines no wider than ``width`` (one word per line at least)."""
    lines, line = [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line]


def _place(draw, size, text: str, font, fw: int, spots: list, taken: list) -> tuple:
    """The first of ``spots`` ((x, y, anchor)) where ``text`` lies inside the picture and covers
    nothing of ``taken`` (boxes); else the first inside the picture; else the first. Returns
    (x, y, anchor, the text's box)."""
    fits = []
    for x, y, anchor in spots:
        bbox = draw.multiline_textbbox((x, y), text, font=font, anchor=anchor, spacing=fw, stroke_width=fw)
        inside = bbox[0] >= 0 and bbox[1] >= 0 and bbox[2] <= size[0] and bbox[3] <= size[1]
        if inside and not any(_overlap(bbox, b) for b in taken):
            return x, y, anchor, bbox
        fits.append((inside, (x, y, anchor, bbox)))
    return next((spot for inside, spot in fits if inside), fits[0][1])


class Annotator:
    def __init__(self, folder=None, threshold=0.5, au_window: float = 1.0, au_regions: str = "auto"):
        """``folder``: where ``write`` puts images (None: ``draw`` only). ``au_regions``: 'all',
        'active' (only the active AUs' windows), 'none', or 'auto' (all on faces of 160 px and
        more; none on smaller faces, where 24 windows would hide the face: their active AUs are
        listed under the box)."""
        if au_regions not in ("auto", "all", "active", "none"):
            raise ValueError(f"au_regions: expected 'auto', 'all', 'active' or 'none', got {au_regions!r}")
        self.au_regions = au_regions
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            output_folder(self.folder, "annotate")
        self.thresholds, self.au_window = per_au(threshold), au_window
        self.used: set[str] = set()
        self.written = 0

    def _name(self, frame) -> str:
        path = Path(frame.source)
        if frame.source.startswith("<"):  # an in-memory image, "<image 3>" or "<frames>"
            base = "_".join(frame.source.strip("<>").split())
            base, ext = (f"{base}_f{frame.frame:06d}" if frame.frame is not None else base), ".png"
        elif frame.frame is not None:
            base, ext = f"{path.stem}_f{frame.frame:06d}", ".jpg"
        else:
            ext = ".jpg" if path.suffix.lower() in (".jpg", ".jpeg") else ".png"
            base = path.stem
        return fresh_base(self.folder, base, [ext], self.used) + ext

    def draw(self, image: np.ndarray, faces) -> Image.Image:
        im = Image.fromarray(image).convert("RGB")
        draw = ImageDraw.Draw(im)
        w = max(1, round(min(im.size) / 400))
        big = max(10, round(min(im.size) / 40))
        if not faces:
            draw.text((4 * w, 4 * w), "no face", fill=ACTIVE, font=_font(big), stroke_width=w, stroke_fill=TEXT_BG)
        regions_drawn = False
        texts = []  # (face box, label, AU names inside the face, AU lines, font, line width): drawn last
        for k, face in enumerate(faces):
            x0, y0, x1, y1 = face.box
            side = max(1.0, min(x1 - x0, y1 - y0))
            fw = max(1, round(side / 120))  # lines and text sized by the face, not the picture
            font = _font(int(np.clip(side / 7, 10, big)))
            draw.rectangle((x0, y0, x1, y1), outline=BOX, width=2 * fw)
            predicted = face.aus is not None
            active = [a for j, a in enumerate(AUS) if predicted and face.aus[j] >= self.thresholds[j]]
            regions = self.au_regions if self.au_regions != "auto" else "all" if side >= 160 else "none"
            inside = []
            if regions != "none":
                inverse = invert(face.transform)
                scale = float(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))  # crop px -> image px
                half = 0.5 * self.au_window * float(ruler(face.crop_landmarks)) * scale
                centres = apply(inverse, au_centres(face.crop_landmarks))  # [12, 2, 2] image px
                for j, au in enumerate(AUS):
                    on = au in active
                    if not on and regions == "active":
                        continue
                    regions_drawn = True
                    for cx, cy in centres[j]:
                        draw.rectangle((cx - half, cy - half, cx + half, cy + half), outline=ACTIVE if on else REGION,
                                       width=2 * fw if on else fw)
                    if on and side >= 120:
                        inside.append((au, tuple(centres[j].mean(0))))
            name = f"#{face.track}" if getattr(face, "track", None) is not None else f"face {k}"
            label = f"{name} {face.emotion} {float(np.max(face.emotions)):.2f}" if predicted else name
            lines = _wrap(draw, active or ["no active AU"], font, max(x1 - x0, draw.textlength("AU00 AU00", font=font))) \
                if predicted else []
            texts.append(((x0, y0, x1, y1), label, inside, lines, font, fw))
        # text on top of every line, each where it covers no other text and no other face
        boxes, placed = [box for box, *_ in texts], []  # the faces; the text drawn so far
        for n, (box, label, inside, lines, font, fw) in enumerate(texts):
            x0, y0, x1, y1 = box
            others = boxes[:n] + boxes[n + 1:]
            spots = [(x0, y0 - 2 * fw, "lb"), (x0 + 2 * fw, y0 + 2 * fw, "la"), (x0, y1 + 2 * fw, "la")]
            at = _place(draw, im.size, label, font, fw, spots, others + placed)
            placed.append(at[3])
            draw.text(at[:2], label, fill=BOX, font=font, anchor=at[2], stroke_width=fw, stroke_fill=TEXT_BG)
            names: list[tuple] = []
            for au, (cx, cy) in inside:  # a name inside the face only where it covers no other name
                bbox = draw.textbbox((cx, cy), au, font=font, anchor="mm", stroke_width=fw)
                if not any(_overlap(bbox, b) for b in names):
                    names.append(bbox)
                    draw.text((cx, cy), au, fill=ACTIVE, font=font, anchor="mm", stroke_width=fw,
                              stroke_fill=TEXT_BG)
            if lines:  # the active AUs: under the box, else above its label, else beside it
                text = "\n".join(lines)
                top = placed[-1][1]
                spots = [(x0, y1 + 2 * fw, "la"), (x0, top - 2 * fw, "ld"), (x1 + 3 * fw, y0, "la"),
                         (x0 - 3 * fw, y0, "ra")]
                at = _place(draw, im.size, text, font, fw, spots, others + placed)
                placed.append(at[3])
                draw.multiline_text(at[:2], text, fill=ACTIVE, font=font, anchor=at[2], spacing=fw, stroke_width=fw,
                                    stroke_fill=TEXT_BG)
        if faces:
            self._legend(draw, im.size, regions_drawn, _font(max(10, big // 2 + 2)), w)
        return im

    @staticmethod
    def _legend(draw, size, regions: bool, font, w: int) -> None:
        """What each colour means, in the picture's lower left corner."""
        entries = [(BOX, "face: #track  emotion  probability")]
        entries += [(ACTIVE, "active AU (named)"), (REGION, "AU region, inactive")] if regions else \
            [(ACTIVE, "active AUs (below the face)")]
        line = font.size + 4 * w
        x, y = 6 * w, size[1] - 6 * w - line * len(entries)
        width = max(draw.textlength(text, font=font) for _, text in entries) + line + 8 * w
        draw.rectangle((x - 3 * w, y - 3 * w, x + width, y + line * len(entries)), fill=TEXT_BG)
        for k, (colour, text) in enumerate(entries):
            yy = y + k * line
            draw.rectangle((x, yy + 2 * w, x + font.size, yy + 2 * w + font.size), outline=colour, width=max(2, w))
            draw.text((x + font.size + 6 * w, yy + 2 * w), text, fill=(255, 255, 255), font=font)

    def write(self, frame, faces) -> Path:
        path = self.folder / self._name(frame)
        image = self.draw(frame.image, faces)
        save_image(path, image, **({"quality": 92} if path.suffix == ".jpg" else {}))
        self.written += 1
        return path


@dataclass
class DrawnFace:
    """What ``Annotator.draw`` needs of a face (``AlignedFace`` has the same fields)."""

    box: tuple  # (x0, y0, x1, y1) image pixels
    transform: np.ndarray  # 2x3, image -> crop
    crop_landmarks: np.ndarray  # [68, 2]
    aus: np.ndarray | None  # [12]
    emotions: np.ndarray | None  # [8]
    track: int | None = None

    @property
    def emotion(self) -> str | None:
        return None if self.emotions is None else EMOTIONS[int(np.argmax(self.emotions))]


def face_from_row(box, landmarks: np.ndarray, aligned: bool, aus=None, emotions=None, size: int = 224,
                  track: int | None = None) -> DrawnFace:
    """A face to draw from its row: box (x0, y0, x1, y1), landmarks [68, 2] in image pixels, and
    whether it was an aligned input (``face='aligned'``, no detection score). The transform to
    the crop is the one prediction used: the landmarks' similarity fit onto the template for a
    detected face; for an aligned input a scale and shift, under which the AU regions are the
    same in image pixels, so the identity stands for it."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if aligned:
        m = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    else:
        m = similarity(landmarks[_ALIGN_POINTS], canonical_landmarks()[_ALIGN_POINTS] * size)
    return DrawnFace(tuple(box), m, apply(m, landmarks), None if aus is None else np.asarray(aus),
                     None if emotions is None else np.asarray(emotions), track)
