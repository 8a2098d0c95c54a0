"""Manifests: the one internal dataset format (SPEC §3.1), JSONL or CSV.

One row per face image: ``id``, ``image`` (path relative to the manifest), ``video`` (group for
splitting; defaults to the id), ``split`` (train/val/test, optional), ``emotion`` (name or index,
-1 = missing), the 12 AU columns (1/0, -1 = missing), optional ``landmarks`` (68 x 2 image
pixels) and optional captions ``caption_au``, ``caption_emotion``, ``caption_key_au`` plus
``au_sentences`` (12 per-AU sentences for AU-VL).

Rows are validated on load. A bad row is a one-line ``ManifestError`` naming file, line and
column; with ``skip_bad=True`` it becomes a recorded, counted skip instead. Two rows that reach
the same image file (two spellings of a path, a symbolic or hard link) are one image: with the
same labels the later row is merged into the first (read once, counted in ``Manifest.merged``);
with other labels it is a bad row (one image cannot be in two classes, nor in two splits).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mf2.data.labels import AUS, CAPTION_COLUMNS, EMOTIONS, MISSING, parse_au_value, parse_emotion
from mf2.io import atomic_write_text

SPLITS = ("train", "val", "test")
_AU_COLUMN = re.compile(r"^AU\d+$")


class ManifestError(ValueError):
    """A manifest problem, as one line: ``file:line N: column: what is wrong``."""


@dataclass
class Manifest:
    rows: list[dict]
    root: Path  # folder the image paths are relative to
    path: Path | None = None
    skipped: list[dict] = field(default_factory=list)  # {"line": N, "reason": "..."}
    merged: list[dict] = field(default_factory=list)  # {"line": N, "same_as": M, "image": ...}: read once

    def __len__(self):
        return len(self.rows)

    def image_path(self, row: dict) -> Path:
        return self.root / row["image"]

    def notes(self) -> list[str]:
        """What reading the manifest set aside, as lines for a command's report."""
        out = []
        if self.skipped:
            out.append(f"{len(self.skipped)} bad manifest rows skipped (first: line {self.skipped[0]['line']}: "
                       f"{self.skipped[0]['reason']})")
        if self.merged:
            m = self.merged[0]
            out.append(f"{len(self.merged)} manifest rows name an image an earlier row names, with the same labels: "
                       f"read once (first: line {m['line']}, the image of line {m['same_as']})")
        return out


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs):
    """A JSON object whose keys are each given once (json.loads would keep the last silently)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"key {key!r} appears more than once in the row")
        out[key] = value
    return out


def _load_rows(path: Path):
    """(line number, raw dict) pairs from a JSONL or CSV file."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line, object_pairs_hook=_unique_keys)
                except (json.JSONDecodeError, _DuplicateKey) as exc:
                    yield number, exc
                    continue
                yield number, row if isinstance(row, dict) else ValueError("row is not a JSON object")
    elif suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            names = reader.fieldnames or []
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:  # the last column of a name would win, silently
                raise ManifestError(f"{path}:line 1: column {', '.join(map(repr, twice))} appears more than once")
            for number, row in enumerate(reader, 2):  # line 1 is the header
                yield number, row
    else:
        raise ManifestError(f"{path}: unsupported manifest type {suffix!r} (use .jsonl or .csv)")


# Bounds on what a row may carry: names and paths, texts (the encoders read at most a few hundred
# tokens of a caption), and landmark coordinates (pixels of an image mf2 will open, see
# features.face_align.MAX_PIXELS).
MAX_NAME = 1024
MAX_TEXT = 20_000
MAX_COORDINATE = 100_000


def _number(c) -> bool:
    return isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and abs(c) <= MAX_COORDINATE


def _parse_landmarks(value):
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = json.loads(value)
    shape_ok = isinstance(value, list) and len(value) == 68 and all(
        isinstance(p, (list, tuple)) and len(p) == 2 for p in value)
    if not shape_ok:
        got = f"{len(value)} entries" if isinstance(value, list) else type(value).__name__
        raise ValueError(f"expected 68 x 2 numbers, got {got}")
    bad = next((c for p in value for c in p if not _number(c)), None)
    if bad is not None or any(not _number(c) for p in value for c in p):
        raise ValueError(f"expected 68 x 2 finite pixel coordinates (|value| <= {MAX_COORDINATE:,}), got {bad!r}")
    return [[float(x), float(y)] for x, y in value]


def _text(column: str, value, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ValueError(f"{column}: expected text, got {type(value).__name__}")
    value = str(value)
    if len(value) > limit:
        raise ValueError(f"{column}: {len(value):,} characters, more than the {limit:,} allowed")
    return value


def _parse_au_sentences(value):
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = json.loads(value)
    if not (isinstance(value, list) and len(value) == len(AUS) and all(isinstance(s, str) for s in value)):
        raise ValueError(f"expected a list of {len(AUS)} sentences")
    if any(len(s) > MAX_TEXT for s in value):
        raise ValueError(f"a sentence longer than {MAX_TEXT:,} characters")
    return value


def normalise_row(raw: dict) -> dict:
    """Validate one raw row and return it in canonical form; raises ValueError("column: ...")."""
    def err(column, message):
        return ValueError(f"{column}: {message}")

    for key in raw:
        if _AU_COLUMN.match(str(key)) and key not in AUS:
            raise err(key, f"AU outside the set ({', '.join(AUS)})")
    image = raw.get("image")
    if not image or not isinstance(image, str):
        raise err("image", "missing image path")
    image = _text("image", image, MAX_NAME)
    if "\0" in image:
        raise err("image", "a path with a NUL character")
    row_id = _text("id", raw.get("id") or os.path.splitext(image)[0], MAX_NAME)
    row = {"id": row_id, "image": image, "video": _text("video", raw.get("video") or row_id, MAX_NAME)}
    split = raw.get("split") or ""
    if split and (not isinstance(split, str) or split not in SPLITS):
        raise err("split", f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    row["split"] = split
    try:
        row["emotion"] = parse_emotion(raw.get("emotion"))
    except ValueError as exc:
        raise err("emotion", str(exc)) from None
    for au in AUS:
        try:
            row[au] = parse_au_value(raw.get(au))
        except ValueError as exc:
            raise err(au, str(exc)) from None
    for column, parse in (("landmarks", _parse_landmarks), ("au_sentences", _parse_au_sentences)):
        try:
            value = parse(raw.get(column))
        except (ValueError, json.JSONDecodeError) as exc:
            raise err(column, str(exc)) from None
        if value is not None:
            row[column] = value
    for column in CAPTION_COLUMNS:
        if raw.get(column):
            row[column] = _text(column, raw[column])
    return row


def read_manifest(path, *, skip_bad: bool = False, check_images: bool = True) -> Manifest:
    """Read and validate a manifest. Errors name file, line and column; ``skip_bad`` records
    them in ``Manifest.skipped`` instead of raising."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    root = path.parent
    rows, skipped, merged, seen, files, videos = [], [], [], {}, {}, {}
    for number, raw in _load_rows(path):
        try:
            if isinstance(raw, Exception):
                raise ValueError(f"not valid JSON ({raw})" if isinstance(raw, json.JSONDecodeError) else str(raw))
            row = normalise_row(raw)
            if row["id"] in seen:
                raise ValueError(f"id: duplicate id {row['id']!r} (first on line {seen[row['id']]})")
            if check_images and not (root / row["image"]).is_file():
                raise ValueError(f"image: missing image file {row['image']!r}")
            same = _image_identity(root / row["image"], check_images)
            if same in files:
                first_line, first = files[same]
                if _labels(first) != _labels(row):
                    raise ValueError(f"image: {row['image']!r} is the same file as line {first_line}'s "
                                     f"({first['image']!r}) with other labels: one image cannot carry two labels "
                                     "(nor be in two splits)")
                merged.append({"line": number, "same_as": first_line, "image": row["image"]})
                continue
            if row["split"] and videos.get(row["video"], (row["split"],))[0] != row["split"]:
                other, line = videos[row["video"]]
                raise ValueError(f"split: video {row['video']!r} is in split {other!r} (line {line}) and "
                                 f"{row['split']!r} here: a video's faces belong to one split (else validation "
                                 "scores people it trained on)")
        except ValueError as exc:
            if not skip_bad:
                raise ManifestError(f"{path}:line {number}: {exc}") from None
            skipped.append({"line": number, "reason": str(exc)})
            continue
        seen[row["id"]] = number
        files[same] = (number, row)
        if row["split"]:
            videos.setdefault(row["video"], (row["split"], number))
        rows.append(row)
    if not rows:
        detail = f" ({len(skipped)} bad rows skipped)" if skipped else ""
        raise ManifestError(f"{path}: manifest has no usable rows{detail}")
    return Manifest(rows=rows, root=root, path=path, skipped=skipped, merged=merged)


def _image_identity(path: Path, on_disk: bool):
    """What tells two rows' images apart: the file itself (device and inode: links and other
    spellings of one path are the same file) when it is on disk, else its normalised path."""
    if on_disk:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    return ("path", os.path.normcase(os.path.abspath(path)))


def _labels(row: dict) -> tuple:
    """The labels of a row that a second row of the same image must repeat (its video need not:
    the first row's decides the split the image goes to)."""
    return (row["emotion"], *(row[a] for a in AUS), row.get("split") or "")


def write_manifest(rows: list[dict], path) -> Path:
    """Write rows as JSONL or CSV (by suffix), atomically. Emotions are written as names."""
    path = Path(path)
    out_rows = []
    for row in rows:
        out = dict(row)
        if isinstance(out.get("emotion"), int):
            out["emotion"] = EMOTIONS[out["emotion"]] if out["emotion"] != MISSING else MISSING
        out_rows.append(out)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out_rows)
    elif suffix == ".csv":
        columns = ["id", "image", "video", "split", "emotion", *AUS]
        extra = sorted({k for r in out_rows for k in r} - set(columns))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns + extra, lineterminator="\n")
        writer.writeheader()
        for r in out_rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
        text = buf.getvalue()
    else:
        raise ManifestError(f"{path}: unsupported manifest type {suffix!r} (use .jsonl or .csv)")
    atomic_write_text(path, text)
    return path
