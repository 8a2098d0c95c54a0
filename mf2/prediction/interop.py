"""Results in other tools' terms: OpenFace 2.x's CSV, and per-track temporal smoothing.

OpenFace 2.x (``FeatureExtraction``, ``FaceLandmarkVidMulti``) writes one CSV per video with a
", " separator (its header names carry a leading space after each comma), and scripts written
against it read these columns; ``write_openface`` writes them, in OpenFace's order:

    frame, face_id, timestamp, confidence, success,
    pose_Rx, pose_Ry, pose_Rz, x_0 … x_67, y_0 … y_67, AU01_c AU02_c AU04_c AU06_c AU07_c
    AU10_c AU12_c AU15_c AU23_c AU24_c AU25_c AU26_c

* ``frame``: 1-based, as OpenFace counts (mf2's ``frame`` + 1; 1 for an image); ``face_id``: the
  face's ``track`` (its rank where there is none); ``timestamp``: seconds (0 for an image).
* ``confidence``: the detection's certainty in 0-1 -- MTCNN's face probability as it is; for
  dlib's HOG and CNN scores (margins, 0 at dlib's own threshold) ``1 - exp(-2 x score)``, so
  the default threshold 0.25 is 0.39, a clear face (score 1) 0.86 and 1.5 and above 0.95+; 1
  for ``--face aligned`` crops (no detection); 0 where no face was found.
* ``success``: 1 for a face, 0 for a frame without one (whose other values are 0, as OpenFace
  writes them).
* ``pose_Rx, pose_Ry, pose_Rz``: radians in OpenFace's camera axes (x right, y down, z away from
  the camera): ``-pitch``, ``-yaw``, ``roll`` of mf2's degrees. ``pose_Tx/Ty/Tz`` (millimetres
  from the camera) need the camera's focal length and are not written.
* ``AUxx_c``: 1 where the AU's probability reaches the threshold the table was made with (the
  run's tuned per-AU thresholds), else 0 -- OpenFace's presence column.
* ``AUxx_r`` is OpenFace's intensity (0-5, from a regressor trained on intensity labels). mf2
  predicts the probability that an AU is present, which is not an intensity: scaling it to 0-5
  would read as one, so no ``_r`` column is written (mf2's own CSV keeps the probabilities).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mf2.io import AtomicFile, OutputPathError, fresh_base, output_folder
from mf2.prediction.table import AU_COLUMNS, EMOTION_COLUMNS, OK

OPENFACE_COLUMNS = ("frame", "face_id", "timestamp", "confidence", "success", "pose_Rx", "pose_Ry", "pose_Rz",
                    *[f"x_{i}" for i in range(68)], *[f"y_{i}" for i in range(68)],
                    *[f"{a}_c" for a in AU_COLUMNS])


def confidence(scores: np.ndarray, detector: str | None) -> np.ndarray:
    """Detection scores -> OpenFace's 0-1 ``confidence`` (see the module docstring)."""
    s = np.asarray(scores, np.float64)
    c = s if detector == "mtcnn" else 1.0 - np.exp(-2.0 * np.clip(s, 0.0, None))
    return np.where(np.isnan(s), 1.0, np.clip(c, 0.0, 1.0))


def openface_table(faces, thresholds) -> pd.DataFrame:
    """The OpenFace 2.x columns of ``faces`` (one source's rows), as numbers."""
    ok = (faces["status"] == OK).to_numpy(bool)
    n = len(faces)
    frame = faces["frame"].to_numpy("float64", na_value=np.nan)
    time = faces["time"].to_numpy("float64", na_value=np.nan)
    track = faces["track"].to_numpy("float64", na_value=np.nan)
    rank = faces["face"].to_numpy("float64", na_value=np.nan)
    out = {"frame": np.where(np.isnan(frame), 0, frame).astype(np.int64) + 1,
           "face_id": np.where(ok, np.where(np.isnan(track), np.nan_to_num(rank), track), 0).astype(np.int64),
           "timestamp": np.nan_to_num(time),
           "confidence": np.where(ok, confidence(faces["face_score"].to_numpy("float64", na_value=np.nan),
                                                 faces.attrs.get("face_detector")), 0.0),
           "success": ok.astype(np.int64)}
    radians = np.radians(faces[["pitch", "yaw", "roll"]].to_numpy(np.float64))
    for name, k, sign in (("pose_Rx", 0, -1.0), ("pose_Ry", 1, -1.0), ("pose_Rz", 2, 1.0)):
        out[name] = np.where(ok, np.nan_to_num(sign * radians[:, k]), 0.0)
    for axis in "xy":
        for i in range(68):
            out[f"{axis}_{i}"] = np.where(ok, np.nan_to_num(faces[f"{axis}_{i}"].to_numpy(np.float64)), 0.0)
    probs = faces[list(AU_COLUMNS)].to_numpy(np.float64)
    active = (probs >= np.asarray(thresholds, np.float64)[None]) & ok[:, None]
    for k, a in enumerate(AU_COLUMNS):
        out[f"{a}_c"] = active[:, k].astype(np.int64)
    return pd.DataFrame(out, index=range(n))[list(OPENFACE_COLUMNS)]


def _openface_text(table: pd.DataFrame) -> str:
    """OpenFace's layout: ", " between fields, fixed decimals as its recorder writes them."""
    formats = {"frame": "{:d}", "face_id": "{:d}", "timestamp": "{:.3f}", "confidence": "{:.2f}", "success": "{:d}"}
    lines = [", ".join(table.columns)]
    cols = [(table[c].to_numpy(), formats.get(c, "{:d}" if c.endswith("_c") else "{:.3f}" if c.startswith("pose")
                                              else "{:.1f}")) for c in table.columns]
    for k in range(len(table)):
        lines.append(", ".join(fmt.format(v[k]) for v, fmt in cols))
    return "\n".join(lines) + "\n"


def write_openface(faces, path, thresholds) -> list[Path]:
    """``faces`` as OpenFace 2.x CSVs: ``path`` (ending .csv) for one source, else one
    ``path/<name>.csv`` per source (``<name>_2.csv`` ... where a file of that name is already in the
    folder: none is overwritten). Returns the paths written."""
    path = Path(path)
    sources = list(pd.unique(faces["source"]))
    if not sources:
        raise ValueError("to_openface: no rows to write")
    single = path.suffix.lower() == ".csv"
    if single and len(sources) > 1:
        raise ValueError(f"to_openface: {len(sources)} sources, and OpenFace writes one CSV per video: give a folder "
                         f"instead of {path}")
    if single and path.is_dir():
        raise OutputPathError(f"to_openface: {path} is a folder: give another x.csv, or a path not ending in .csv "
                              "for a folder of CSVs")
    if not single:
        if path.exists() and not path.is_dir():
            raise OutputPathError(f"to_openface: {path} is a file; OpenFace's CSVs go to x.csv (one source) or into a "
                                  "folder (one CSV per source)")
        output_folder(path, "to_openface:")
    written, used = [], set()
    for source in sources:
        rows = faces.iloc[np.flatnonzero((faces["source"] == source).to_numpy(bool))]
        if single:
            target = path
        else:
            base = "_".join(str(source).strip("<>").split()) if str(source).startswith("<") else Path(str(source)).stem
            target = path / (fresh_base(path, base, [".csv"], used) + ".csv")  # never over a file already there
        with AtomicFile(target, "w") as f:
            f.write(_openface_text(openface_table(rows, thresholds)))
        written.append(target)
    return written


def smoothed(faces, seconds: float):
    """``Faces.smooth``: each track's probabilities averaged over a centred window of ``seconds``."""
    from mf2._checks import number

    seconds = number("smooth", seconds, low=0, low_open=True, note="(seconds)")
    if faces.attrs.get("smooth") is not None:  # a window over a window is no window that one number could record
        raise ValueError(f"smooth: these results are already smoothed ({faces.attrs['smooth']:g} s): smooth the "
                         "unsmoothed table instead (e.g. detect again, or keep the table before .smooth)")
    timed = faces["time"].notna().to_numpy(bool)
    if not timed.any():
        raise ValueError("smooth: no video frames in these results (only images, which have no time): nothing to "
                         "smooth over time")
    face = (faces["status"] == OK).to_numpy(bool)
    untracked = face & timed & faces["track"].isna().to_numpy(bool)
    if untracked.any():
        raise ValueError(f"smooth: {int(untracked.sum())} faces of videos have no track (tracking was off), and "
                         "smoothing averages each person's track over time: detect with tracking on")
    out = faces.copy()
    out.attrs = dict(faces.attrs, smooth=float(seconds))
    columns = list(AU_COLUMNS) + list(EMOTION_COLUMNS)
    ok = face & timed & faces["track"].notna().to_numpy(bool)
    if not ok.any():
        return out
    values = faces[columns].to_numpy(np.float64)
    result = values.copy()
    keys = pd.DataFrame({"s": faces["source"].to_numpy(object), "t": faces["track"].to_numpy(object)})[ok]
    times = faces["time"].to_numpy("float64", na_value=np.nan)
    for _, idx in keys.groupby(["s", "t"], sort=False).groups.items():
        rows = np.asarray(idx)
        order = rows[np.argsort(times[rows], kind="stable")]
        t = times[order]
        csum = np.vstack([np.zeros(len(columns)), np.cumsum(values[order], 0)])
        lo = np.searchsorted(t, t - seconds / 2, "left")
        hi = np.searchsorted(t, t + seconds / 2, "right")
        result[order] = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    for k, c in enumerate(columns):
        out[c] = pd.Series(result[:, k], index=out.index, dtype="float32")
    emotions = result[:, len(AU_COLUMNS):]
    top = np.array(EMOTION_COLUMNS, dtype=object)[np.argmax(np.nan_to_num(emotions, nan=-1.0), 1)]
    out["emotion"] = pd.Series(np.where(ok, top, out["emotion"].to_numpy(object)), index=out.index, dtype="string")
    return out
