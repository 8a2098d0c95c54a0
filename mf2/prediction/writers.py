"""Where ``mf2 predict`` writes its rows: CSV (a file, or stdout) or JSON, streamed through a
temporary file beside the destination (``mf2.io.AtomicFile``) and renamed into place when done."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mf2.data.labels import AUS, EMOTIONS
from mf2.io import AtomicFile

if TYPE_CHECKING:
    from mf2.prediction.predictor import AlignedFace


CSV_COLUMNS = ["source", "frame", "time", "face", "status", "face_score", "x0", "y0", "x1", "y1", *AUS, *EMOTIONS,
               "emotion", "explanation", "landmarks"]


class RowWriter:
    """Rows to CSV (``.csv``, or stdout when ``path`` is None) or JSON (``.json``), streamed."""

    def __init__(self, path, checkpoint: str):
        self.path = Path(path) if path else None
        self.format = "json" if self.path and self.path.suffix.lower() == ".json" else "csv"
        self.atomic = AtomicFile(self.path, "w") if self.path else None
        self.file = self.atomic.file if self.atomic else sys.stdout
        self.rows = 0
        if self.format == "json":
            self.file.write(json.dumps({"checkpoint": checkpoint})[:-1] + ', "rows": [\n')
        else:
            self.csv = csv.DictWriter(self.file, fieldnames=CSV_COLUMNS, lineterminator="\n")
            self.csv.writeheader()

    def write(self, row: dict) -> None:
        if self.format == "json":
            self.file.write((",\n" if self.rows else "") + json.dumps(row))
        else:
            flat = {k: row.get(k) for k in ("source", "frame", "time", "face", "status")}
            if row.get("box"):
                flat.update(zip(("x0", "y0", "x1", "y1"), (round(v, 1) for v in row["box"])),
                            face_score=row["face_score"])
                flat.update({k: round(v, 6) for k, v in {**row["aus"], **row["emotions"]}.items()})
                flat.update(emotion=row["emotion"], explanation=row.get("explanation"),
                            landmarks=json.dumps(row["landmarks"]))
            self.csv.writerow(flat)
        self.rows += 1

    def close(self, skipped: list[dict]) -> None:
        if self.format == "json":
            self.file.write("\n], " + json.dumps({"skipped": skipped})[1:] + "\n")
        if self.atomic:
            self.atomic.commit()
        else:
            self.file.flush()


def face_row(frame, index: int, face: AlignedFace) -> dict:
    return {"source": frame.source, "frame": frame.frame, "time": frame.time, "face": index, "status": "ok",
            "face_score": face.score, "box": [round(v, 1) for v in face.box],
            "landmarks": np.round(face.landmarks, 1).tolist(), **face.result}
