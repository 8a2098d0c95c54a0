"""The results table's columns (one row per face; OpenFace / py-feat names) and its assembly
from predicted frames.

    source, frame, time, face, track, status, face_score, x, y, w, h, yaw, pitch, roll,
    AU01 AU02 AU04 AU06 AU07 AU10 AU12 AU15 AU23 AU24 AU25 AU26   (probabilities)
    neutral anger disgust fear happiness sadness surprise other   (probabilities)
    emotion, explanation, explanation_consistent,
    x_0 … x_67, y_0 … y_67                                        (landmarks, image pixels)

``face`` is the face's size rank in its frame; ``track`` its identity within the source (the same
person keeps one number across a video's frames, ``mf2.prediction.tracking``; for an image, the
face's rank; missing when tracking was off); ``yaw, pitch, roll`` the head pose in degrees
(``mf2.prediction.pose``). A frame without a face has one row with ``status`` 'no face' and
missing values after ``status``. ``explanation_consistent`` says whether the explanation names what the heads say
(``mf2.captions.consistency``; empty without ``--explain``). ``TableBuilder`` gathers rows as batches come out of the model, column-wise (one
float32 vector per face), so a long video's table costs about 700 bytes a row.
"""

from __future__ import annotations

import numpy as np

from mf2.data.labels import AUS, EMOTIONS

AU_COLUMNS = tuple(f"AU{int(a[2:]):02d}" for a in AUS)  # "AU1" -> "AU01"
EMOTION_COLUMNS = tuple(e.lower() for e in EMOTIONS)
LANDMARK_COLUMNS = tuple(f"x_{i}" for i in range(68)) + tuple(f"y_{i}" for i in range(68))
BOX_COLUMNS = ("x", "y", "w", "h")
POSE_COLUMNS = ("yaw", "pitch", "roll")
ID_COLUMNS = ("source", "frame", "time", "face", "track", "status", "face_score")
TEXT_COLUMNS = ("emotion", "explanation", "explanation_consistent")
COLUMNS = (*ID_COLUMNS, *BOX_COLUMNS, *POSE_COLUMNS, *AU_COLUMNS, *EMOTION_COLUMNS, *TEXT_COLUMNS, *LANDMARK_COLUMNS)
# the float32 block of a row, in this order
NUMERIC_COLUMNS = (*BOX_COLUMNS, *POSE_COLUMNS, *AU_COLUMNS, *EMOTION_COLUMNS, *LANDMARK_COLUMNS)

DTYPES = {"source": "string", "frame": "Int64", "time": "float64", "face": "Int64", "track": "Int64",
          "status": "string",
          "face_score": "float64", **{c: "float32" for c in NUMERIC_COLUMNS}, "emotion": "string",
          "explanation": "string", "explanation_consistent": "boolean"}

OK, NO_FACE = "ok", "no face"



class TableBuilder:
    """Rows of predicted frames, kept column-wise until ``columns()``."""

    def __init__(self):
        self.ids: dict[str, list] = {c: [] for c in (*ID_COLUMNS, *TEXT_COLUMNS)}
        self.numeric: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.numeric)

    def add(self, frame, faces) -> int:
        """The rows of one predicted frame (``faces``: its ``AlignedFace``s, largest first);
        returns how many were added."""
        if not faces:
            self._row(frame, None, None, NO_FACE, None, None, None, None,
                      np.full(len(NUMERIC_COLUMNS), np.nan, np.float32))
            return 1
        for i, f in enumerate(faces):
            x0, y0, x1, y1 = f.box
            values = np.concatenate([[x0, y0, x1 - x0, y1 - y0], f.pose, f.aus, f.emotions,
                                     np.asarray(f.landmarks, np.float64).T.ravel()]).astype(np.float32)
            self._row(frame, i, f.track, OK, f.score, f.emotion.lower(), f.explanation, f.explanation_consistent, values)
        return len(faces)

    def _row(self, frame, face, track, status, score, emotion, explanation, consistent, values):
        for name, value in (("source", frame.source), ("frame", frame.frame), ("time", frame.time), ("face", face),
                            ("track", track), ("status", status), ("face_score", score), ("emotion", emotion),
                            ("explanation", explanation), ("explanation_consistent", consistent)):
            self.ids[name].append(value)
        self.numeric.append(values)

    def columns(self) -> dict:
        """Column name -> values (lists for the identifying columns, float32 arrays for the rest),
        in ``COLUMNS`` order."""
        block = np.stack(self.numeric) if self.numeric else np.zeros((0, len(NUMERIC_COLUMNS)), np.float32)
        out = {c: self.ids[c] for c in ID_COLUMNS}
        out.update({c: block[:, k] for k, c in enumerate(NUMERIC_COLUMNS)})
        return {c: out.get(c, self.ids.get(c)) for c in COLUMNS}
