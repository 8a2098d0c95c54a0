"""Reading Aff-Wild2 / ABAW annotations (every challenge edition's layout; see DATA.md).

* AU files: header ``AU1,...,AU26`` (12 names), then one line per frame of 12 values 0/1/-1.
* EXPR files: header of 8 names (7 without ``Other`` in ABAW1/2), then one integer per frame
  (-1 = not annotated).
* Frame k (1-based) <-> data line k <-> ``cropped_aligned/<video>/<k:05d>.jpg``; frames with no
  face are absent from the folder: they are skipped and counted, indices never shift.
* ``_left`` / ``_right`` videos are separate people of one recording.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mf2.data.labels import AUS, EMOTIONS, MISSING

AU_DIRS = ("AU_Set", "AU_Detection_Challenge")
EXPR_DIRS = ("EXPR_Set", "EXPR_Classification_Challenge", "EXPR_Recognition_Challenge")
SET_DIRS = ("Train_Set", "Training_Set", "Validation_Set")
IMAGE_SUFFIXES = (".jpg", ".png")


class AffWild2Error(ValueError):
    """A problem with an Aff-Wild2 tree, as one line naming the file."""


@dataclass
class ReadReport:
    videos_au_only: list = field(default_factory=list)
    videos_expr_only: list = field(default_factory=list)
    line_count_mismatch: dict = field(default_factory=dict)  # video -> [AU lines, EXPR lines]
    frames: Counter = field(default_factory=Counter)  # annotated, expr_missing, au_missing, no_image, ...

    def as_dict(self) -> dict:
        return {"videos_au_only": sorted(self.videos_au_only), "videos_expr_only": sorted(self.videos_expr_only),
                "line_count_mismatch": dict(sorted(self.line_count_mismatch.items())), "frames": dict(self.frames)}


def _walk_dirs(root: Path, max_depth: int = 4):
    root_depth = len(root.parts)
    for dirpath, dirnames, _ in os.walk(root):
        if len(Path(dirpath).parts) - root_depth >= max_depth:
            dirnames[:] = []
        dirnames.sort()
        for name in dirnames:
            yield Path(dirpath) / name


def find_annotations(root: Path) -> tuple[Path, Path]:
    """The (AU folder, EXPR folder) of one annotation edition under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise AffWild2Error(f"{root}: not a folder")
    au = [d for d in _walk_dirs(root) if d.name in AU_DIRS]
    expr = [d for d in _walk_dirs(root) if d.name in EXPR_DIRS]
    pairs = [(a, e) for a in au for e in expr if a.parent == e.parent]
    if not pairs:
        raise AffWild2Error(
            f"{root}: no ABAW annotations found (looked for {' or '.join(AU_DIRS)} beside "
            f"{' or '.join(EXPR_DIRS)}, each with Train_Set/Training_Set and Validation_Set)")
    if len(pairs) > 1:
        editions = ", ".join(str(a.parent.relative_to(root)) for a, _ in pairs)
        raise AffWild2Error(f"{root}: several annotation editions found ({editions}); pass --annotations with one of them")
    return pairs[0]


def find_frames(root: Path) -> Path:
    """The ``cropped_aligned`` folder under ``root`` (holding one sub-folder per video)."""
    for d in [Path(root) / "cropped_aligned", *_walk_dirs(Path(root), 3)]:
        if d.name == "cropped_aligned" and d.is_dir():
            inner = d / "cropped_aligned"
            return inner if inner.is_dir() else d
    raise AffWild2Error(f"{root}: no cropped_aligned/ frames folder found; pass --frames")


def _annotation_files(challenge_dir: Path) -> dict[str, Path]:
    files = {}
    for set_name in SET_DIRS:
        d = challenge_dir / set_name
        if d.is_dir():
            for f in sorted(d.glob("*.txt")):
                files.setdefault(f.stem, f)
    if not files:
        raise AffWild2Error(f"{challenge_dir}: no annotation files in {', '.join(SET_DIRS)}")
    return files


def _split_header(line: str) -> list[str]:
    return [h.strip() for h in line.strip().split(",") if h.strip()]


def read_au_file(path: Path) -> np.ndarray:
    """[frames, 12] int8 AU labels (-1 = not annotated)."""
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    if not lines or _split_header(lines[0]) != list(AUS):
        got = lines[0].strip() if lines else "an empty file"
        raise AffWild2Error(f"{path}: bad AU header: expected {','.join(AUS)}, got {got!r}")
    out = np.empty((len(lines) - 1, len(AUS)), dtype=np.int8)
    for k, line in enumerate(lines[1:]):
        values = [v.strip() for v in line.split(",")]
        try:
            numbers = [int(float(v)) for v in values]
        except ValueError:
            numbers = None
        if numbers is None or len(numbers) != len(AUS) or any(v not in (0, 1, -1) for v in numbers):
            raise AffWild2Error(f"{path}:line {k + 2}: expected {len(AUS)} values in {{0, 1, -1}}, got {line.strip()!r}")
        out[k] = numbers
    return out


def read_expr_file(path: Path) -> np.ndarray:
    """[frames] int8 emotion indices (-1 = not annotated); 7- and 8-class headers."""
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    header = _split_header(lines[0]) if lines else []
    if header not in (list(EMOTIONS), list(EMOTIONS[:7])):
        got = lines[0].strip() if lines else "an empty file"
        raise AffWild2Error(f"{path}: bad EXPR header: expected {','.join(EMOTIONS)} (or the 7 without Other), got {got!r}")
    n_classes = len(header)
    out = np.empty(len(lines) - 1, dtype=np.int8)
    for k, line in enumerate(lines[1:]):
        try:
            value = int(line.strip())
        except ValueError:
            value = None
        if value is None or not (value == MISSING or 0 <= value < n_classes):
            raise AffWild2Error(f"{path}:line {k + 2}: expected an integer in -1..{n_classes - 1}, got {line.strip()!r}")
        out[k] = value
    return out


def recording(video: str) -> str:
    """The recording a video belongs to: ``video59_right`` -> ``video59``."""
    for suffix in ("_left", "_right"):
        if video.endswith(suffix):
            return video[: -len(suffix)]
    return video


def read_affwild2(root, annotations=None, frames=None) -> tuple[list[dict], ReadReport, dict]:
    """All frames that have an emotion, all 12 AUs and an image on disk, as manifest rows
    with absolute image paths; plus what was dropped and why, and the folders used."""
    root = Path(root)
    au_dir, expr_dir = find_annotations(Path(annotations) if annotations else root)
    frames_dir = Path(frames) if frames else find_frames(root)
    if not frames_dir.is_dir():
        raise AffWild2Error(f"{frames_dir}: frames folder not found")
    au_files, expr_files = _annotation_files(au_dir), _annotation_files(expr_dir)
    report = ReadReport(videos_au_only=[v for v in au_files if v not in expr_files],
                        videos_expr_only=[v for v in expr_files if v not in au_files])
    rows = []
    for video in sorted(set(au_files) & set(expr_files)):
        aus, expr = read_au_file(au_files[video]), read_expr_file(expr_files[video])
        if len(aus) != len(expr):
            report.line_count_mismatch[video] = [len(aus), len(expr)]
            report.frames["beyond_shorter_file"] += abs(len(aus) - len(expr))
        folder = frames_dir / video
        present = set(os.listdir(folder)) if folder.is_dir() else set()
        for k in range(min(len(aus), len(expr))):
            report.frames["annotated"] += 1
            if expr[k] == MISSING:
                report.frames["expr_missing"] += 1
                continue
            if (aus[k] == MISSING).any():
                report.frames["au_missing"] += 1
                continue
            name = next((f"{k + 1:05d}{s}" for s in IMAGE_SUFFIXES if f"{k + 1:05d}{s}" in present), None)
            if name is None:
                report.frames["no_image"] += 1
                continue
            rows.append({"id": f"{video}/{k + 1:05d}", "image": str(folder / name), "video": video,
                         "emotion": int(expr[k]), **{au: int(v) for au, v in zip(AUS, aus[k])}})
    report.frames["kept"] = len(rows)
    return rows, report, {"annotations": str(au_dir.parent), "frames": str(frames_dir)}
