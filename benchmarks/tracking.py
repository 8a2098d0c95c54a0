"""Faces and identities across the frames of videos of several people (issue 22): per-frame face
recall, IDF1 and identity switches (``motmetrics``), and faces/s with and without tracking, on
clips generated here with known identities; then the faces each detector finds on a group photo.

    python benchmarks/tracking.py [--checkpoint RUN] [--seconds 8] [--rate 12] [--detectors hog,mtcnn]
                                  [--tiny] [--out benchmarks/results]

* People: SynthFACS identities (each with its own expressions, head turns and nods over the
  clip) and three real faces cut from photos that ship with the dependencies (the astronaut of
  ``skimage.data.astronaut()``, the cameraman of ``skimage.data.camera()``, Grace Hopper from
  matplotlib's sample data), each with a soft elliptical mask, on a textured background.
* Clips (``CLIPS``): people moving and bouncing, crossing in front of each other (the front one
  hides the other), leaving the frame and coming back after a few seconds, at widths 640 (a
  multiple of 16), 700, 854 and 998 (not), in yuv420p, yuv444p and grey (H.264).
* Truth per frame: each person's face box (the box of its 68 landmarks, brows to chin) where at
  least half of it is in the frame and not hidden; hidden or mostly outside faces are "don't
  care" (a detection there counts neither way).
* A detection matches a true face at IoU >= 0.3 (detector boxes and landmark boxes are drawn
  differently). Per-frame recall counts faces of at least 40 px (the side of the box's area);
  IDF1, identity switches and MOTA come from ``motmetrics`` over all frames; switches are also
  given per 100 track-frames (true face-frames).
* Faces/s: every frame of every clip through ``mf2.Detector.detect`` (AUs, emotions, pose),
  with tracking on and off, and per detector. The machine's load average is recorded beside it.
* MTCNN's cascade (``cascade_comparison``): as published (mf2's default), with finer first
  stages and pyramid alone, and finer with a face only they find confirmed by dlib's CNN:
  recall, false positives and time on the same decoded frames, and false faces on a real photo's
  video (``--tiny``: 8 of its frames).
* Head pose: ``pose_errors()``, on SynthFACS renders of known yaw, pitch and roll within +-30
  degrees, from the renderer's landmarks and end to end (faces drawn with their relief, and flat).
* Group photo: the six faces of ``group_photo()`` (the three real faces at several sizes and a
  mirror image, composed on one canvas): faces each detector keeps and near-misses, and an
  annotated picture (``--annotate DIR``).

Writes ``tracking-<device>.{json,md}`` to ``--out`` (``--tiny``: one short clip, for the tests;
``tracking-<device>-tiny.*``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import table  # noqa: E402


@dataclass
class Sprite:
    rgba: np.ndarray  # [h, w, 4] uint8
    box: tuple  # the face's landmark box inside the sprite (x0, y0, x1, y1)


def _mask(size, lm: np.ndarray, grow: float = 1.5) -> np.ndarray:
    """A soft ellipse over the head: wider than the landmarks, from the hair to below the chin."""
    x0, x1 = lm[:, 0].min(), lm[:, 0].max()
    top, chin = lm[17:27, 1].min(), lm[:, 1].max()
    cx, w = (x0 + x1) / 2, (x1 - x0) * grow / 2
    h = (chin - top) * 0.5 * 1.9
    cy = chin + 0.15 * (chin - top) - h
    m = Image.new("L", size, 0)
    ImageDraw.Draw(m).ellipse((cx - w, cy - h, cx + w, cy + h), fill=255)
    return np.asarray(m.filter(ImageFilter.GaussianBlur(float(max(1.0, w * 0.06)))))


def _sprite(image: np.ndarray, lm: np.ndarray) -> Sprite:
    alpha = _mask((image.shape[1], image.shape[0]), lm)
    ys, xs = np.nonzero(alpha)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    rgba = np.dstack([image, alpha])[y0:y1, x0:x1]
    box = (lm[:, 0].min() - x0, lm[17:27, 1].min() - y0, lm[:, 0].max() - x0, lm[:, 1].max() - y0)
    return Sprite(np.ascontiguousarray(rgba), box)


def synthfacs_people(n: int, keyframes: int, seed: int) -> list[list[Sprite]]:
    """``n`` SynthFACS people, each ``keyframes`` sprites (expressions, yaw, pitch, roll)."""
    from mf2.data.synthfacs import render_spec, sample_specs

    rng = np.random.default_rng(seed)
    specs = sample_specs(n * keyframes, seed, images_per_video=keyframes)
    people = []
    for p in range(n):
        sprites = []
        for spec in specs[p * keyframes:(p + 1) * keyframes]:
            spec.pose.yaw, spec.pose.pitch, spec.pose.roll = rng.uniform(-0.4, 0.4), rng.uniform(-0.25, 0.25), \
                rng.normal(0, 0.08)
            image, lm = render_spec(spec, 224)
            sprites.append(_sprite(image, lm))
        people.append(sprites)
    return people


def real_people() -> list[list[Sprite]]:
    """The astronaut, the cameraman and Grace Hopper, each as one sprite (landmarks by dlib)."""
    import matplotlib.cbook as cbook
    from skimage import data

    from mf2.features.face_align import FaceFinder
    from mf2.features.pixels import to_rgb

    finder = FaceFinder("hog")
    out = []
    for image, box in ((data.astronaut(), (175, 76, 265, 166)), (data.camera(), (216, 130, 268, 182)),
                       (np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg"))), (180, 139, 366, 325))):
        rgb = to_rgb(image)
        out.append([_sprite(rgb, finder.landmarks(rgb, box))])
    return out


@dataclass
class Walk:
    """One person's path: a sprite sequence, face size (px), start, velocity (px/s), depth (a
    larger depth is drawn in front), and times it is away (outside the picture)."""

    sprites: list
    size: float
    start: tuple
    velocity: tuple
    depth: int
    away: tuple = ()  # (t0, t1) pairs

    def at(self, t: float, w: int, h: int):
        """Face box (x0, y0, x1, y1) at time t, bouncing inside the frame (None: away)."""
        for t0, t1 in self.away:
            if t0 <= t < t1:
                return None
        x, y = self.start[0] + self.velocity[0] * t, self.start[1] + self.velocity[1] * t
        span_x, span_y = w - self.size, h - self.size
        x = abs((x % (2 * span_x)) - span_x) if span_x > 0 else 0
        x = span_x - x if span_x > 0 else 0
        y = abs((y % (2 * span_y)) - span_y) if span_y > 0 else 0
        y = span_y - y if span_y > 0 else 0
        return (x, y, x + self.size, y + self.size)


# (name, width, pixel format, people: (kind, index, face size px, start xy, velocity xy, depth, away))
CLIPS = [
    ("cross", 700, "yuv420p", [("synth", 0, 110, (40, 120), (70, 0), 1, ()),
                                ("synth", 1, 90, (560, 140), (-70, 0), 0, ()),
                                ("real", 0, 80, (300, 20), (0, 8), 2, ())]),
    ("leave-and-return", 854, "yuv444p", [("synth", 2, 100, (100, 100), (30, 12), 0, ((2.5, 5.0),)),
                                          ("real", 2, 120, (500, 60), (-20, 10), 1, ()),
                                          ("synth", 3, 60, (380, 300), (25, -15), 2, ())]),
    ("occlude", 998, "gray", [("synth", 4, 70, (420, 140), (5, 0), 0, ()),
                              ("synth", 5, 150, (0, 110), (110, 0), 1, ()),
                              ("real", 1, 70, (800, 300), (-15, -10), 2, ())]),
    ("four-people", 640, "yuv420p", [("synth", 6, 75, (30, 40), (35, 20), 0, ()),
                                     ("synth", 7, 55, (400, 40), (-30, 25), 1, ()),
                                     ("real", 0, 95, (200, 230), (40, -10), 2, ((3.0, 4.5),)),
                                     ("synth", 1, 65, (520, 260), (-25, -20), 3, ())]),
]
TINY = [("tiny", 602, "yuv420p", [("synth", 0, 90, (40, 60), (80, 0), 1, ()),
                                   ("real", 0, 80, (420, 150), (-60, 0), 0, ((0.6, 1.0),))])]


def background(w: int, h: int, seed: int) -> np.ndarray:
    """A textured background: scikit-image's brick wall, tinted and blurred a little."""
    from skimage import data

    rng = np.random.default_rng(seed)
    brick = Image.fromarray(data.brick()).resize((w, h)).filter(ImageFilter.GaussianBlur(1.5))
    tint = rng.uniform(0.5, 1.0, 3)
    return (np.asarray(brick, np.float32)[..., None] * tint[None, None]).astype(np.uint8)


def render_clip(spec, people_synth, people_real, seconds: float, rate: float, seed: int):
    """Frames [n, h, w, 3] and the truth per frame: [(person, box, visible)]."""
    name, w, pix_fmt, cast = spec
    h = 360 if w < 800 else 540
    rng = np.random.default_rng(seed)
    walks = []
    for kind, k, size, start, vel, depth, away in cast:
        sprites = (people_synth if kind == "synth" else people_real)[k % len(people_synth if kind == "synth"
                                                                                 else people_real)]
        walks.append(Walk(sprites, size, start, vel, depth, away))
    bg = background(w, h, seed)
    frames, truth = [], []
    for f in range(int(round(seconds * rate))):
        t = f / rate
        canvas = bg.astype(np.float32)
        drawn = []
        for p in sorted(range(len(walks)), key=lambda i: walks[i].depth):
            walk = walks[p]
            box = walk.at(t, w, h)
            if box is None:
                continue
            sprite = walk.sprites[int(t / 1.0) % len(walk.sprites)]  # a new expression each second
            sx0, sy0, sx1, sy1 = sprite.box
            scale = walk.size / max(sx1 - sx0, sy1 - sy0)
            sw, sh = sprite.rgba.shape[1] * scale, sprite.rgba.shape[0] * scale
            ox = box[0] - sx0 * scale + (walk.size - (sx1 - sx0) * scale) / 2
            oy = box[1] - sy0 * scale + (walk.size - (sy1 - sy0) * scale) / 2
            patch = np.asarray(Image.fromarray(sprite.rgba).resize((max(1, int(round(sw))), max(1, int(round(sh)))),
                                                                    Image.Resampling.BILINEAR), np.float32)
            x0, y0 = int(round(ox)), int(round(oy))
            fx0, fy0 = max(0, x0), max(0, y0)
            fx1, fy1 = min(w, x0 + patch.shape[1]), min(h, y0 + patch.shape[0])
            if fx1 <= fx0 or fy1 <= fy0:
                continue
            part = patch[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
            a = part[..., 3:] / 255
            canvas[fy0:fy1, fx0:fx1] = canvas[fy0:fy1, fx0:fx1] * (1 - a) + part[..., :3] * a
            face = (ox + sx0 * scale, oy + sy0 * scale, ox + sx1 * scale, oy + sy1 * scale)
            drawn.append((p, face, (fx0, fy0, a[..., 0])))
        # visibility: the part of each face box inside the frame and not under a later (front) sprite
        people = []
        for idx, (p, face, layer) in enumerate(drawn):
            people.append((p, face, _visible(face, layer, [front for _, _, front in drawn[idx + 1:]], w, h)))
        noise = rng.normal(0, 2.0, canvas.shape)
        frames.append(np.clip(canvas + noise, 0, 255).astype(np.uint8))
        truth.append(people)
    return frames, truth, pix_fmt


def _visible(face, own, front, w, h) -> float:
    """The share of a face that can be seen: of the points of its box (a 24 x 24 grid) its own
    sprite covers (``own``: (x0, y0, alpha [h, w] in 0..1) as pasted; alpha 0.5 or more), those
    inside the frame and under no sprite drawn in front (``front``, the same) -- what is hidden is
    the head and hair around a face in front, as drawn, and a box's corners outside the head do
    not count as face."""
    x0, y0, x1, y1 = face
    xs, ys = np.meshgrid(np.linspace(x0, x1, 24), np.linspace(y0, y1, 24))

    def covered(layer):
        lx0, ly0, alpha = layer
        c, r = np.floor(xs).astype(int) - lx0, np.floor(ys).astype(int) - ly0
        inside = (c >= 0) & (c < alpha.shape[1]) & (r >= 0) & (r < alpha.shape[0])
        out = np.zeros(xs.shape, bool)
        out[inside] = alpha[r[inside], c[inside]] >= 0.5
        return out

    drawn = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    face_points = covered(own) | ~drawn  # a part outside the frame is face we do not see
    seen = face_points & drawn
    for layer in front:
        seen &= ~covered(layer)
    return float(seen.sum() / max(1, face_points.sum()))


def write_clip(path: Path, frames, pix_fmt: str, rate: float) -> Path:
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=int(rate), options={"crf": "18", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def evaluate(faces, truth, min_side: float = 40.0, iou_min: float = 0.3):
    """Per-frame recall (faces >= ``min_side`` px), IDF1, switches, MOTA (motmetrics), and the
    clip's motmetrics accumulator."""
    import motmetrics as mm

    from mf2.prediction.tracking import iou

    ok = faces[(faces["status"] == "ok").to_numpy(bool)]
    acc = mm.MOTAccumulator(auto_id=True)
    found = counted = gt_frames = 0
    for f, people in enumerate(truth):
        rows = ok[(ok["frame"] == f).to_numpy(bool)]
        det = rows[["x", "y", "w", "h"]].to_numpy(np.float64)
        det_boxes = np.c_[det[:, :2], det[:, :2] + det[:, 2:]] if len(det) else np.zeros((0, 4))
        tracks = rows["track"].to_numpy("float64", na_value=-1).astype(int) if len(rows) else np.zeros(0, int)
        shown = [(p, b) for p, b, v in people if v >= 0.5]
        hidden = [b for p, b, v in people if v < 0.5]
        if hidden and len(det_boxes):  # detections on "don't care" faces count neither way
            det_boxes, tracks = _drop_dont_care(det_boxes, tracks, [b for _, b in shown], hidden, iou_min)
        gt = np.array([b for _, b in shown]) if shown else np.zeros((0, 4))
        overlap = iou(gt, det_boxes) if len(gt) and len(det_boxes) else np.zeros((len(gt), len(det_boxes)))
        dist = np.where(overlap >= iou_min, 1 - overlap, np.nan)
        acc.update([p for p, _ in shown], tracks.tolist(), dist)
        gt_frames += len(shown)
        for k, (_, b) in enumerate(shown):
            if np.sqrt((b[2] - b[0]) * (b[3] - b[1])) >= min_side:
                counted += 1
                found += int(bool(len(det_boxes)) and overlap[k].max() >= iou_min)
    mh = mm.metrics.create()
    summary = mh.compute(acc, metrics=["idf1", "num_switches", "mota", "recall", "precision"], name="clip")
    s = summary.iloc[0]
    return {"truth_faces": int(gt_frames), "truth_faces_40px": int(counted), "found_40px": int(found),
            "recall_40px": found / max(1, counted), "idf1": float(s["idf1"]), "switches": int(s["num_switches"]),
            "switches_per_100": 100 * int(s["num_switches"]) / max(1, gt_frames), "mota": float(s["mota"]),
            "precision": float(s["precision"])}, acc


def _drop_dont_care(det_boxes, tracks, shown: list, hidden: list, iou_min: float):
    """The detections left once those matched to a "don't care" face are dropped: detections are
    matched to the shown and hidden faces together (Hungarian, IoU >= ``iou_min``, as
    MOTChallenge treats its distractors), so the detection of a face in front is not dropped for
    the hidden face behind it; one left unmatched is dropped if it overlaps only hidden faces."""
    from scipy.optimize import linear_sum_assignment

    from mf2.prediction.tracking import iou

    overlap = iou(det_boxes, np.array(shown + hidden))
    rows, cols = linear_sum_assignment(np.where(overlap >= iou_min, -overlap, 0.0))
    n = len(shown)
    # unassigned: dropped if only on a don't-care face
    drop = (overlap[:, n:].max(1) >= iou_min) & ((overlap[:, :n].max(1) if n else 0) < iou_min)
    for r, c in zip(rows, cols):
        drop[r] = overlap[r, c] >= iou_min and c >= n
    return det_boxes[~drop], tracks[~drop]


def _jitter(faces) -> float:
    """Mean absolute change of the AU and emotion probabilities between a track's consecutive faces."""
    from mf2.prediction.table import AU_COLUMNS, EMOTION_COLUMNS

    ok = faces[(faces["status"] == "ok").to_numpy(bool) & faces["track"].notna().to_numpy(bool)]
    steps = []
    for _, part in ok.groupby("track"):
        values = part.sort_values("frame")[list(AU_COLUMNS) + list(EMOTION_COLUMNS)].to_numpy(np.float64)
        if len(values) > 1:
            steps.append(np.abs(np.diff(values, axis=0)).ravel())
    return round(float(np.concatenate(steps).mean()), 5) if steps else float("nan")


def group_photo() -> np.ndarray:
    """Six real faces on one 1200 x 600 canvas: the astronaut, the cameraman and Grace Hopper at
    two sizes each (one of each mirrored), on the brick background."""
    canvas = Image.fromarray(background(1200, 600, 1))
    people = real_people()
    places = [(0, 60, 120, 150, False), (1, 330, 90, 130, False), (2, 560, 80, 160, False),
              (0, 820, 200, 90, True), (1, 1000, 260, 80, True), (2, 180, 380, 85, True)]
    for k, x, y, side, flip in places:
        sprite = people[k][0]
        sx0, sy0, sx1, sy1 = sprite.box
        scale = side / max(sx1 - sx0, sy1 - sy0)
        im = Image.fromarray(sprite.rgba)
        im = im.resize((int(im.width * scale), int(im.height * scale)), Image.Resampling.LANCZOS)
        if flip:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        canvas.paste(im, (x, y), im)
    return np.asarray(canvas)


def pose_errors(n: int = 40, seed: int = 11, detector: str = "mtcnn", size: int = 224) -> dict:
    """Mean absolute yaw, pitch and roll error (degrees) of ``head_pose`` on ``n`` SynthFACS
    renders (``size`` px) with yaw, pitch and roll drawn uniformly within +-30 degrees: from the renderer's own
    landmarks (the fit), and from the detector's and dlib's landmarks on the rendered images, drawn
    with the face's relief (``Identity.relief`` = 1: the shaded nose a landmark model finds) and
    flat (``flat_*``: relief 0, as the default data set is drawn)."""
    import dataclasses

    from mf2.data.synthfacs import landmarks_of, render_spec, sample_specs
    from mf2.features.face_align import FaceFinder
    from mf2.prediction.pose import head_pose

    rng = np.random.default_rng(seed)
    finder = FaceFinder(detector)
    exact, found = [], {"detected": [], "flat": []}
    for spec in sample_specs(n, seed):
        angles = rng.uniform(-np.pi / 6, np.pi / 6, 3)
        spec.pose = dataclasses.replace(spec.pose, yaw=angles[0], pitch=angles[1], roll=angles[2])
        truth = np.degrees(angles)
        exact.append((np.array(head_pose(landmarks_of(spec, size))), truth))
        for key, relief in (("detected", 1.0), ("flat", 0.0)):
            spec.identity = dataclasses.replace(spec.identity, relief=relief)
            faces = finder.detect(render_spec(spec, size)[0], None)
            if faces:
                found[key].append((np.array(head_pose(faces[0].landmarks)), truth))
    out = {"renders": n, "seed": seed, "size": size}
    for key, pairs in (("exact", exact), *found.items()):
        got, true = (np.array([p[k] for p in pairs]) for k in (0, 1)) if pairs else (np.full((0, 3), np.nan),) * 2
        e = np.abs(got - true).mean(0) if pairs else np.full(3, np.nan)
        out.update({f"{key}_{axis}": round(float(v), 2) for axis, v in zip(("yaw", "pitch", "roll"), e)})
        # how far the read pitch follows the true one (least-squares slope; 1: all the way)
        out[f"{key}_pitch_gain"] = round(float(np.polyfit(true[:, 1], got[:, 1], 1)[0]), 2) if len(pairs) > 1 else float("nan")
        if key != "exact":
            out[f"{key}_found"] = len(pairs)
    out["found"] = out.pop("detected_found")
    return out


def _pose_table(pose: dict) -> list[str]:
    """Markdown lines: one ``pose_errors`` result."""
    return [f"## Head pose on {pose['renders']} SynthFACS renders within ±30°, seed {pose['seed']} (mean absolute "
            "error, degrees)", "",
            table([{"landmarks": "the renderer's own (the fit alone)", "yaw": pose["exact_yaw"],
                    "pitch": pose["exact_pitch"], "roll": pose["exact_roll"], "pitch gain": pose.get("exact_pitch_gain")},
                   {"landmarks": f"MTCNN + dlib's on the renders, faces with relief ({pose['found']} found)",
                    "yaw": pose["detected_yaw"], "pitch": pose["detected_pitch"], "roll": pose["detected_roll"],
                    "pitch gain": pose.get("detected_pitch_gain")},
                   {"landmarks": f"the same, faces drawn flat (relief 0, as the default data set; "
                                 f"{pose['flat_found']} found)",
                    "yaw": pose["flat_yaw"], "pitch": pose["flat_pitch"], "roll": pose["flat_roll"],
                    "pitch gain": pose.get("flat_pitch_gain")}],
                  ["landmarks", "yaw", "pitch", "roll", "pitch gain"]),
            "", "pitch gain: the least-squares slope of the read pitch against the true one (1: it follows all the way)."]


def pose_only(args) -> None:
    """``--pose-only``: ``pose_errors`` on two seeds, to pose-<device>.{json,md}."""
    n = 8 if args.tiny else 60
    poses = []
    for seed in (11, 12):
        poses.append(pose_errors(n, seed))
        print(json.dumps({"pose": poses[-1]}), flush=True)
    suffix = f"{args.device.split(':')[0]}{'-tiny' if args.tiny else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"pose-{suffix}.json").write_text(json.dumps({"machine": _machine(args.device), "pose": poses},
                                                             indent=1) + "\n")
    md = [f"# Head pose against SynthFACS's known angles ({args.device})", "",
          "yaw, pitch and roll drawn uniformly within ±30° per render (`benchmarks/tracking.py --pose-only`); "
          "end to end: MTCNN's box, dlib's 68 landmarks, `mf2.prediction.pose.head_pose`.", ""]
    for pose in poses:
        md += [*_pose_table(pose), ""]
    (args.out / f"pose-{suffix}.md").write_text("\n".join(md))


def _frames(path: Path, n: int | None = None, step: int = 1) -> list:
    """Every ``step``-th decoded frame of the clip at ``path`` (RGB arrays), ``n`` of them at most
    (None: all)."""
    import av

    from mf2.features.pixels import to_rgb

    with av.open(str(path)) as container:
        return [to_rgb(f) for k, f in enumerate(container.decode(video=0)) if k % step == 0][:n]


def descriptor_speed(images: list, repeats: int = 3) -> dict:
    """dlib's own ``compute_face_descriptor`` against mf2's PyTorch run of the same network
    (``mf2.prediction.face_descriptor``) on the chips of every face MTCNN finds in ``images``:
    milliseconds per face for each (the two interleaved, ``repeats`` rounds, the faster round of
    each), their ratio, and the largest difference of a descriptor and of a distance between two."""
    import dlib
    import face_recognition_models

    from mf2.features.face_align import FaceFinder
    from mf2.prediction import face_descriptor as fd

    finder = FaceFinder("mtcnn")
    chips = np.array([fd.chip(image, f.box, f.landmarks) for image in images for f in finder.detect(image, None)])
    model = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
    fd.describe_chip(chips[0])  # loaded and warm
    own = np.array([model.compute_face_descriptor(c) for c in chips], np.float64)
    theirs_s, ours_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for c in chips:
            model.compute_face_descriptor(c)
        t1 = time.perf_counter()
        ours = np.array([fd.describe_chip(c) for c in chips])
        t2 = time.perf_counter()
        theirs_s.append(t1 - t0)
        ours_s.append(t2 - t1)
    dist = lambda d: np.linalg.norm(d[:, None] - d[None], axis=2)  # noqa: E731
    theirs_ms, ours_ms = 1000 * min(theirs_s) / len(chips), 1000 * min(ours_s) / len(chips)
    return {"faces": len(chips), "dlib_ms_per_face": round(theirs_ms, 1), "mf2_torch_ms_per_face": round(ours_ms, 1),
            "speedup": round(theirs_ms / ours_ms, 2), "max_abs_difference": float(f"{np.abs(ours - own).max():.1e}"),
            "max_distance_difference": float(f"{np.abs(dist(ours) - dist(own)).max():.1e}"),
            "load_avg": round(os.getloadavg()[0], 2)}


def cascade_comparison(clips, device: str = "cpu", real_frames: int = 60, min_side: float = 40.0,
                       iou_min: float = 0.3) -> list[dict]:
    """MTCNN on every frame of the clips three ways: as published (P- and R-Net from 0.6 and 0.7,
    a pyramid of steps 0.709), with finer first stages alone (0.4 and 0.5, steps 0.8), O-Net at
    0.7 both (the first is mf2's default), and finer with confirmation
    (``FaceFinder("mtcnn", stages=FINE_STAGES, factor=FINE_FACTOR).find``: a face only the finer
    stages found kept where dlib's CNN confirms it): recall of the shown faces of ``min_side`` px
    and more, false positives (detections on no face, shown or hidden), seconds (8 frames a
    batch; the confirmed row includes dlib's 68 points and the CNN's looks), and the faces found beyond
    the one in each of ``real_frames`` frames of ``predict.py``'s video (a window over the
    astronaut photo: one real face)."""
    from predict import video_frames

    from mf2.features.face_align import FINE_FACTOR, FINE_STAGES, MTCNN_FACTOR, MTCNN_STAGES, FaceFinder
    from mf2.features.mtcnn import MTCNN
    from mf2.prediction.tracking import iou

    decoded = [(_frames(path), truth) for _, path, truth in clips]
    astronaut = video_frames(5 * real_frames)[::5]
    finder = FaceFinder("mtcnn", device, stages=FINE_STAGES, factor=FINE_FACTOR)
    ways = []
    for name, stages, factor in (("published", MTCNN_STAGES, MTCNN_FACTOR),
                                 ("finer first stages alone", FINE_STAGES, FINE_FACTOR)):
        name += " (mf2's default)" if (stages, factor) == (MTCNN_STAGES, MTCNN_FACTOR) else ""
        det = MTCNN(device, thresholds=(*stages, 0.7), factor=factor)
        ways.append((name, "/".join(f"{v:g}" for v in stages), factor, lambda frames, det=det: [r.boxes for r in det.detect(frames)]))
    ways.append(("finer, confirmed by dlib's CNN", "/".join(f"{v:g}" for v in FINE_STAGES), FINE_FACTOR,
                 lambda frames: [np.array([f.box for f in found.faces]).reshape(-1, 4) for found in finder.find(frames)]))
    rows = []
    for name, stages, factor, boxes_of in ways:
        found = counted = false = 0
        t0 = time.perf_counter()
        results = [[b for i in range(0, len(frames), 8) for b in boxes_of(frames[i:i + 8])] for frames, _ in decoded]
        seconds = time.perf_counter() - t0
        for (frames, truth), result in zip(decoded, results):
            for people, boxes in zip(truth, result):
                every = np.array([b for _, b, _ in people]).reshape(-1, 4)
                for p, b, v in people:
                    if v >= 0.5 and np.sqrt((b[2] - b[0]) * (b[3] - b[1])) >= min_side:
                        counted += 1
                        found += int(len(boxes) > 0 and iou(np.array([b]), boxes).max() >= iou_min)
                if len(boxes):
                    false += int((iou(boxes, every).max(1) < iou_min).sum() if len(every) else len(boxes))
        extra = sum(max(0, len(b) - 1) for b in boxes_of(astronaut))
        rows.append({"cascade": name, "stages": stages, "factor": factor,
                     "recall_40px": round(found / max(1, counted), 4), "false_positives": false,
                     "seconds": round(seconds, 2), "astronaut_video_extra_faces": extra})
    for row in rows[1:]:
        row["time_ratio"] = round(row["seconds"] / rows[0]["seconds"], 2)
    return rows


def _machine(device: str) -> dict:
    import torch

    return {"device": device, "torch": torch.__version__, "cores": len(os.sched_getaffinity(0))}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="run or exported model folder (default: a small run made here)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each clip")
    parser.add_argument("--rate", type=float, default=12.0, help="frames per second of the clips (all are read)")
    parser.add_argument("--detectors", default="hog,mtcnn", help="detectors to measure (the first 'auto' row is "
                                                                  "the default's)")
    parser.add_argument("--group-detectors", default="hog,cnn,mtcnn")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny", action="store_true", help="one 1.5 s clip of two people, for the tests")
    parser.add_argument("--annotate", type=Path, help="write the annotated group photo and clip frames here")
    parser.add_argument("--work", type=Path, help="keep clips and the run here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--pose-only", action="store_true", help="only the head pose, on 60 renders (--tiny: 8) "
                                                                 "of each of seeds 11 and 12: pose-<device>.{json,md}")
    args = parser.parse_args()
    if args.pose_only:
        return pose_only(args)

    from predict import make_run

    from mf2 import Detector
    from mf2.features.face_align import FaceFinder

    clips_spec, seconds = (TINY, 1.5) if args.tiny else (CLIPS, args.seconds)
    detectors = ["auto"] if args.tiny else ["auto", *[d for d in args.detectors.split(",") if d]]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        checkpoint = args.checkpoint or make_run(work)
        synth, real = synthfacs_people(8, 4, seed=5), real_people()
        clips = []
        for k, spec in enumerate(clips_spec):
            frames, truth, pix_fmt = render_clip(spec, synth, real, seconds, args.rate, seed=k)
            path = write_clip(work / f"{spec[0]}-{spec[1]}-{pix_fmt}.mp4", frames, pix_fmt, args.rate)
            clips.append((spec, path, truth))
            print(f"clip {path.name}: {len(frames)} frames, {sum(len(t) for t in truth)} faces drawn", flush=True)
        rows, accumulators = [], {}
        for detector in detectors:
            for tracking in ((True, False) if detector == "auto" else (True,)):
                det = Detector.from_run(checkpoint, device=args.device, face_detector=detector, tracking=tracking)
                det.detect(clips[0][1], fps=0, progress=False)  # models load (per worker thread)
                for spec, path, truth in clips:
                    load0 = os.getloadavg()[0]
                    t0 = time.perf_counter()
                    faces = det.detect(path, fps=0, progress=False)
                    wall = time.perf_counter() - t0
                    n = int((faces["status"] == "ok").sum())
                    row = {"clip": spec[0], "width": spec[1], "pix_fmt": spec[2], "detector": detector,
                           "resolved": faces.attrs["face_detector"], "tracking": tracking, "frames": len(truth),
                           "faces": n, "seconds": round(wall, 2), "faces_per_s": round(n / wall, 2),
                           "descriptors": faces.attrs["counts"].get("descriptors", 0),
                           "near_misses": faces.attrs["counts"]["near_misses"],
                           "load_avg": round((load0 + os.getloadavg()[0]) / 2, 2)}
                    metrics, acc = evaluate(faces, truth)
                    row.update({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
                    accumulators.setdefault((detector, tracking), []).append((spec[0], acc))
                    if tracking:  # what smoothing does: frame-to-frame change of each track's probabilities
                        row.update(jitter=_jitter(faces), jitter_smooth_1s=_jitter(faces.smooth(1.0)))
                    else:
                        row.update(idf1=None, switches=None, switches_per_100=None, mota=None)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.annotate and tracking and detector == "auto":
                        args.annotate.mkdir(parents=True, exist_ok=True)
                        faces.save_plots(args.annotate / spec[0])
                det.close()
        cascades = cascade_comparison(clips, args.device, real_frames=8 if args.tiny else 60)
        for row in cascades:
            print(json.dumps(row), flush=True)
        group = []
        photo = group_photo()
        for name in (["hog", "mtcnn"] if args.tiny else args.group_detectors.split(",")):
            finder = FaceFinder(name)
            t0 = time.perf_counter()
            found = finder.find([photo])[0]
            group.append({"detector": name, "faces": len(found.faces), "near_misses": len(found.near_misses),
                          "scores": ", ".join(f"{f.score:.2f}" for f in found.faces),
                          "near_miss_scores": ", ".join(f"{f.score:.2f}" for f in found.near_misses),
                          "seconds": round(time.perf_counter() - t0, 2)})
            print(json.dumps(group[-1]), flush=True)
        speed = descriptor_speed([photo, *_frames(clips[0][1], 2 if args.tiny else 12, step=8)])
        print(json.dumps({"descriptor": speed}), flush=True)
        pose = pose_errors(8 if args.tiny else 60)
        print(json.dumps({"pose": pose}), flush=True)
        if args.annotate:
            Image.fromarray(photo).save(args.annotate / "group.png")
            with Detector.from_run(checkpoint, device=args.device) as det:
                det.detect(args.annotate / "group.png", annotate=args.annotate / "annotated", progress=False)

    summary = _summary(rows, accumulators)
    suffix = f"{args.device.split(':')[0]}{'-tiny' if args.tiny else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": _machine(args.device), "seconds": seconds, "rate": args.rate, "rows": rows,
              "summary": summary, "cascades": cascades, "group_photo": group, "descriptor": speed, "pose": pose}
    (args.out / f"tracking-{suffix}.json").write_text(json.dumps(result, indent=1) + "\n")
    md = [f"# Faces and identities in videos of several people ({args.device}, "
          f"{_machine(args.device)['cores']} cores)", "",
          f"{len(clips_spec)} generated clips of {seconds:g} s at {args.rate:g} fps, every frame read; truth: the "
          "people drawn, by identity. Recall: faces of 40 px and more; IDF1, switches and MOTA: motmetrics.", "",
          "## Per detector, over all clips", "",
          table(summary, ["detector", "tracking", "faces", "recall_40px", "idf1", "switches", "switches_per_100",
                          "faces_per_s", "load_avg"]), "",
          "## Per clip", "",
          table(rows, ["clip", "width", "pix_fmt", "detector", "tracking", "frames", "faces", "recall_40px", "idf1",
                       "switches", "switches_per_100", "mota", "precision", "faces_per_s", "descriptors",
                       "near_misses", "jitter", "jitter_smooth_1s", "load_avg"]), "",
          "jitter: mean absolute change of a track's 20 probabilities from one frame to the next, as predicted "
          "and with `smooth=1` (a centred 1 s window); descriptors: dlib face descriptors the tracker computed.", "",
          "## MTCNN's cascade: as published (mf2's default), with finer first stages alone, and finer with "
          "dlib's CNN confirming what only they find (O-Net at 0.7)", "",
          table(cascades, ["cascade", "stages", "factor", "recall_40px", "false_positives", "seconds", "time_ratio",
                           "astronaut_video_extra_faces"]), "",
          f"astronaut_video_extra_faces: faces found beyond the one real face in {8 if args.tiny else 60} frames of "
          "predict.py's video; seconds: detection alone in the first two rows, with dlib's 68 points and the CNN's "
          "confirmations in the third.", "",
          "## The group photo (six real faces)", "",
          table(group, ["detector", "faces", "near_misses", "scores", "near_miss_scores", "seconds"]), "",
          "## dlib's face descriptor: dlib's own binding against mf2's PyTorch run of its network and weights", "",
          table([{k: f"{v:.1e}" if k.startswith("max_") else v for k, v in speed.items()}], list(speed)), "",
          f"On the chips of the faces MTCNN finds in the group photo and in frames of the first clip; the faster of "
          "3 interleaved rounds of each (`dlib-bin` is built without BLAS and holds the GIL through its pass); "
          "differences: of a descriptor's values and of a distance between two faces' descriptors.", "",
          *_pose_table(pose),
          "",
          "load_avg: the machine's 1-minute load average while each figure was taken (2 = both cores busy); "
          "figures taken beside other work are lower bounds."]
    (args.out / f"tracking-{suffix}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def _summary(rows: list[dict], accumulators: dict) -> list[dict]:
    """Per (detector, tracking), over all clips: recall of the faces >= 40 px, and motmetrics'
    overall IDF1 and switches (its accumulators of every clip together)."""
    import motmetrics as mm

    out = []
    for (detector, tracking), accs in accumulators.items():
        part = [r for r in rows if r["detector"] == detector and r["tracking"] == tracking]
        faces, seconds = sum(r["faces"] for r in part), sum(r["seconds"] for r in part)
        truth = sum(r["truth_faces"] for r in part)
        row = {"detector": detector if detector != "auto" else f"auto ({part[0]['resolved']})", "tracking": tracking,
               "faces": faces, "recall_40px": round(sum(r["found_40px"] for r in part)
                                                    / max(1, sum(r["truth_faces_40px"] for r in part)), 4),
               "faces_per_s": round(faces / seconds, 2),
               "load_avg": round(float(np.mean([r["load_avg"] for r in part])), 2)}
        if tracking:
            overall = mm.metrics.create().compute_many([a for _, a in accs], names=[n for n, _ in accs],
                                                       metrics=["idf1", "num_switches"], generate_overall=True)
            switches = int(overall.loc["OVERALL", "num_switches"])
            row.update(idf1=round(float(overall.loc["OVERALL", "idf1"]), 4), switches=switches,
                       switches_per_100=round(100 * switches / max(1, truth), 3))
        out.append(row)
    return out


if __name__ == "__main__":
    main()
