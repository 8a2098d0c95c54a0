"""``mf2.Faces``: the results of ``Detector.detect``, a pandas DataFrame of one row per face.

Columns (``mf2.prediction.table``; OpenFace / py-feat names): ``source, frame, time, face,
track, status, face_score, x, y, w, h``, ``yaw, pitch, roll`` (head pose, degrees), ``AU01 …
AU26`` (probabilities), ``neutral, anger, disgust,
fear, happiness, sadness, surprise, other`` (probabilities), ``emotion`` (the top one),
``explanation``, ``explanation_consistent`` (whether the explanation names the heads' emotion and
active AUs) and the 68 landmarks ``x_0 … x_67, y_0 … y_67`` (image pixels). Probabilities,
box and landmarks are float32, ``frame`` and ``face`` nullable integers, text columns pandas
strings. A frame without a face is one row with ``status`` 'no face'.

What ``detect`` knows beyond the rows is in ``faces.attrs`` (``faces.info`` hands out the part
that says how the rows were made): ``checkpoint``, ``counts`` (files, frames, faces, frames
without a face, near-misses), ``skipped`` (inputs that could not be read, and why),
``near_misses``, ``threshold`` (the per-AU thresholds), ``face_detector``, ``min_face_score``,
``tracking`` and ``versions``.

``to_csv(path)`` / ``read_faces`` round-trip the table exactly (float32 values are written in
their shortest exact form) and its ``attrs``: beside ``faces.csv`` goes ``faces.csv.json`` (the
attrs and the CSV's SHA-256), which ``read_faces`` reads back and checks; the CSV ``mf2 predict``
writes is this table. ``to_openface`` writes OpenFace 2.x's CSV columns (``mf2.prediction.interop``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mf2.data.labels import AUS, EMOTIONS, per_au
from mf2.io import AtomicFile, refuse_overlap
from mf2.prediction import plots
from mf2.prediction.table import AU_COLUMNS, COLUMNS, DTYPES, EMOTION_COLUMNS, LANDMARK_COLUMNS, OK, POSE_COLUMNS

_CORE = ("source", "frame", "face", "status")  # a selection without these is a plain DataFrame


def _faces_or_frame(*args, **kwargs):
    """pandas' constructor for results of operations on ``Faces``: still ``Faces`` while the
    identifying columns are there, a plain DataFrame otherwise (``faces.aus``, ``faces[["AU12"]]``)."""
    df = pd.DataFrame(*args, **kwargs)
    return Faces(df) if all(c in df.columns for c in _CORE) else df


class Faces(pd.DataFrame):
    """One row per face (see the module docstring for the columns)."""

    @property
    def _constructor(self):
        return _faces_or_frame

    # -- building and reading -------------------------------------------------------------
    @classmethod
    def from_columns(cls, columns: dict, attrs: dict | None = None) -> "Faces":
        """A table from ``TableBuilder.columns()`` (column -> values), with the schema's dtypes."""
        faces = cls({c: pd.Series(columns[c], dtype=DTYPES[c]) for c in COLUMNS})
        faces.attrs.update(attrs or {})
        return faces

    @classmethod
    def read_csv(cls, path) -> "Faces":
        """A table written by ``to_csv`` (or by ``mf2 predict --out x.csv``), with its dtypes."""
        try:
            header = pd.read_csv(path, nrows=0).columns
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
            # (OSError: a file named .gz that is not gzip, and its siblings)
            raise ValueError(f"{path}: not a CSV table ({str(exc).splitlines()[0]})") from None
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}: not an mf2 faces table (missing columns: {', '.join(missing[:5])}"
                             f"{' …' if len(missing) > 5 else ''})")
        # only an empty field is missing: a file may be called "NA.png" and an explanation "None"
        table = pd.read_csv(path, dtype={c: DTYPES.get(c, "string") for c in header}, keep_default_na=False,
                            na_values=[""])
        faces = cls(table[list(COLUMNS) + [c for c in header if c not in COLUMNS]])
        faces.attrs.update(_read_sidecar(path))
        return faces

    @classmethod
    def concat(cls, parts) -> "Faces":
        """Tables one after another (e.g. the per-frame tables of ``Detector.detect_frames``), with
        their settings kept and counts added (tables of different settings are refused). Images
        given in memory are named by their place in one ``detect`` call (``<image 0>``, ...): where
        two tables both hold an ``<image k>``, they are different pictures, and the later
        table's is renamed ``<image k of table j>`` (j from 0), so that ``summary``, ``tracks`` and
        ``to_openface`` do not take them for one."""
        if isinstance(parts, pd.DataFrame):  # one table: list() would give its column names
            raise ValueError("concat: expected a list (or an iterable) of tables, got one table: wrap it, [faces]")
        parts = list(parts)
        bad = [type(p).__name__ for p in parts if not isinstance(p, pd.DataFrame)]
        if bad:
            raise ValueError(f"concat: expected tables (Faces), got a {bad[0]} among them")
        if not parts:
            return cls.from_columns({c: [] for c in COLUMNS})
        parts = _distinct_images(parts)
        joined = cls(pd.concat(parts, ignore_index=True))
        joined.attrs = _joined_attrs([p.attrs for p in parts])
        return joined

    def to_csv(self, path_or_buf=None, *, index: bool = False, **kwargs):
        """``DataFrame.to_csv`` without the index by default; a path is written atomically, with
        the table's ``attrs`` beside it in ``<path>.json`` (thresholds, model, detector, counts),
        which ``read_faces`` reads back."""
        if isinstance(path_or_buf, (str, os.PathLike)):
            path_or_buf = os.fspath(path_or_buf)
            compression = kwargs.get("compression", "infer")
            if compression not in ("infer", None) or compression == "infer" and \
                    Path(path_or_buf).suffix.lower() in COMPRESSED_SUFFIXES:
                raise ValueError(f"to_csv: {path_or_buf}: tables are written uncompressed (the sidecar that keeps "
                                 "their thresholds checks the CSV's own bytes): write a .csv and compress it after")
            self._refuse_sources("table", path_or_buf, f"{path_or_buf}.json")
            text = pd.DataFrame.to_csv(self, None, index=index, **kwargs)
            with AtomicFile(path_or_buf, "w") as f:
                f.write(text)
            _write_sidecar(path_or_buf, text, self.attrs)
            return None
        return pd.DataFrame.to_csv(self, path_or_buf, index=index, **kwargs)

    def to_openface(self, path) -> list[Path]:
        """OpenFace 2.x's CSV (``frame, face_id, timestamp, confidence, success``, pose, landmarks,
        ``AUxx_c``; see ``mf2.prediction.interop``): one file per source -- ``path`` itself when the
        table holds one source and ``path`` ends in .csv, else ``path/<name>.csv`` for each, as
        OpenFace writes a folder. Returns the files written."""
        from mf2.prediction.interop import write_openface

        self._refuse_sources("OpenFace output", path)
        return write_openface(self, path, self._threshold)

    def _refuse_sources(self, what: str, *paths) -> None:
        """Every writer's rule: never over (or into a folder holding) a photo or video this table
        was read from (``mf2.io.refuse_overlap``, the commands' rule) -- a PathConflict before
        anything is written."""
        sources = [x for x in pd.unique(self["source"].dropna()) if isinstance(x, str)] if "source" in self else []
        # a relative source as read, from the folder current then: a chdir since changes nothing
        folders = [c for c in self.attrs.get("cwd", []) if isinstance(c, str)]
        sources += [os.path.join(c, x) for c in folders for x in sources if not os.path.isabs(x) and not x.startswith("<")]
        refuse_overlap({"source": sources}, {what: [p for p in paths if isinstance(p, (str, os.PathLike))]})

    # -- accessors ------------------------------------------------------------------------
    @property
    def aus(self) -> pd.DataFrame:
        """AU probabilities, ``AU01 … AU26`` [rows, 12]."""
        return pd.DataFrame(self[list(AU_COLUMNS)])

    @property
    def emotions(self) -> pd.DataFrame:
        """Emotion probabilities, ``neutral … other`` [rows, 8] (``faces.emotions.plot()`` draws them)."""
        return pd.DataFrame(self[list(EMOTION_COLUMNS)])

    @property
    def landmarks(self) -> pd.DataFrame:
        """The 68 landmarks, ``x_0 … x_67, y_0 … y_67`` [rows, 136], image pixels."""
        return pd.DataFrame(self[list(LANDMARK_COLUMNS)])

    @property
    def poses(self) -> pd.DataFrame:
        """Head pose in degrees, ``yaw, pitch, roll`` [rows, 3] (py-feat's ``.poses``)."""
        return pd.DataFrame(self[list(POSE_COLUMNS)])

    @property
    def facebox(self) -> pd.DataFrame:
        """py-feat's face box columns: ``FaceRectX, FaceRectY, FaceRectWidth, FaceRectHeight,
        FaceScore`` (``x, y, w, h, face_score``)."""
        return pd.DataFrame({"FaceRectX": self["x"], "FaceRectY": self["y"], "FaceRectWidth": self["w"],
                             "FaceRectHeight": self["h"], "FaceScore": self["face_score"]})

    @property
    def info(self) -> dict:
        """How these rows were made: the model (checkpoint, class, vision backbone), the per-AU
        thresholds, the face detector and its score threshold, tracking, and the versions."""
        keys = ("checkpoint", "model", "vision", "threshold", "face", "face_detector", "min_face_score", "tracking",
                "smooth", "versions")
        return {k: self.attrs[k] for k in keys if k in self.attrs}

    def active_aus(self, threshold=None) -> pd.DataFrame:
        """Whether each AU's probability reaches ``threshold`` (one number, or one per AU; default:
        the thresholds the detector used, the run's tuned ones) [rows, 12] (bool; False without a face)."""
        from mf2._checks import au_thresholds

        t = self._threshold if threshold is None else per_au(au_thresholds("threshold", threshold))
        return pd.DataFrame(self.aus.ge(pd.Series(t, index=list(AU_COLUMNS))).fillna(False).astype(bool))

    def tracks(self) -> pd.DataFrame:
        """One row per person (``source``, ``track``): the frames it was seen in, its first and
        last frame and time, and the mean of every probability over its faces, with its most
        frequent top emotion."""
        ok = pd.DataFrame(self[(self["status"] == OK).to_numpy(bool) & self["track"].notna().to_numpy(bool)])
        keys = ["source", "track"]
        if ok.empty:
            return pd.DataFrame(columns=[*keys, "frames", "first_frame", "last_frame", "first_time", "last_time",
                                         "emotion", *AU_COLUMNS, *EMOTION_COLUMNS]).set_index(keys)
        g = ok.groupby(keys, sort=True)
        out = pd.DataFrame({"frames": g.size().astype("int64"), "first_frame": g["frame"].min(),
                            "last_frame": g["frame"].max(), "first_time": g["time"].min(), "last_time": g["time"].max(),
                            "emotion": g["emotion"].agg(lambda e: e.value_counts().index[0])})
        return out.join(g[list(AU_COLUMNS) + list(EMOTION_COLUMNS)].mean())

    def smooth(self, seconds: float) -> "Faces":
        """The table with each track's AU and emotion probabilities averaged over a centred window
        of ``seconds`` of its own frames (a face's top ``emotion`` follows); rows without a track
        or a time (images) are left as they are. ``attrs["smooth"]`` records the window. A
        ``ValueError`` for a table with nothing to smooth (only images), with faces of videos that
        have no track (detected with tracking off: they would be left as they are), or one already
        smoothed (a second window would make a filter that one number cannot record)."""
        from mf2.prediction.interop import smoothed

        return smoothed(self, seconds)

    def summary(self, by: str = "source") -> pd.DataFrame:
        """Per source (or ``by='track'``: per person, as ``tracks()``): frames, faces, the mean of
        every probability over its faces, and the share of its faces whose top emotion is each
        emotion (``share_<emotion>``)."""
        if by == "track":
            return self.tracks()
        if by != "source":
            raise ValueError(f"by: expected 'source' or 'track', got {by!r}")
        ok = self[(self["status"] == OK).to_numpy(bool)]
        sources = pd.Index(pd.unique(self["source"]), name="source")
        frames = self.drop_duplicates(["source", "frame"]).groupby("source", sort=False).size()
        out = pd.DataFrame({"frames": frames.reindex(sources).astype("int64"),
                            "faces": ok.groupby("source", sort=False).size().reindex(sources, fill_value=0)
                            .astype("int64")}, index=sources)
        means = pd.DataFrame(ok[["source", *AU_COLUMNS, *EMOTION_COLUMNS]]).groupby("source", sort=False).mean()
        shares = pd.crosstab(pd.Series(ok["source"].to_numpy(object), name="source"),
                             pd.Series(ok["emotion"].to_numpy(object), name="emotion"), normalize="index")
        shares = shares.reindex(columns=list(EMOTION_COLUMNS), fill_value=0.0).add_prefix("share_")
        return out.join(means).join(shares)

    # -- plots -----------------------------------------------------------------------------
    def plot_detections(self, i: int = 0, *, image=None, path=None):
        """Row ``i``'s frame as ``mf2 predict --annotate`` draws it (boxes, AU regions, active AUs,
        top emotion), with face ``i``'s emotion probabilities as bars beside it; a matplotlib
        Figure of 1000 x 500 px, saved as PNG to ``path`` if given. The frame is read again from
        its file; pass ``image`` (RGB [H, W, 3]) for an in-memory input."""
        from mf2._checks import number
        from mf2.prediction.sources import as_rgb

        if not len(self):
            raise ValueError("plot_detections: no rows to draw")
        i = number("i", i, integer=True, low=-len(self), high=len(self) - 1, note="(a row position)")
        fig = plots.detections_figure(self, i, None if image is None else as_rgb(image), self._threshold,
                                      self.attrs.get("au_window", 1.0))
        return self._saved(fig, path)

    def plot_timeline(self, source: str | None = None, *, track: int | None = None, face: int | None = None, aus=None,
                      path=None):
        """A video's emotion probabilities and AUs (``aus``: an AU name, 'AU12' or 'AU1', or a list
        of them; default those that reach the threshold) over time, one line each, with the top
        emotion as a band and its legend; for one person, ``track`` (default: the track seen in
        most frames), or with ``face`` the ``face``-th largest face of each frame (default the
        first video of the table). 1000 x 600 px. An image's faces have no time line: a
        ``ValueError`` says so (``plot_detections`` draws them)."""
        return self._saved(plots.timeline_figure(self, source, face, aus, self._threshold, track=track), path)

    def plot_aus(self, *, path=None):
        """Mean AU probabilities over the table's faces as bars. 800 x 400 px."""
        return self._saved(plots.aus_figure(self, self._threshold), path)

    def save_plots(self, folder) -> list[Path]:
        """For each source: ``<name>_aus.png``, and ``<name>_detections.png`` (its first row) for an
        image file or, for a video, ``<name>_track<k>_timeline.png`` for each of the 8 people seen
        longest (``<name>_timeline.png`` when no face was tracked), into ``folder``; returns the paths.
        Where a file of one of a source's names is already in ``folder`` (the user's own, an
        earlier run's), that source's plots are all named ``<name>_2…`` (``mf2.io.fresh_base``):
        none is overwritten."""
        from mf2.io import fresh_base, output_folder

        folder = output_folder(folder, "plots")
        written, used = [], set()
        for source in pd.unique(self["source"]):
            rows = np.flatnonzero((self["source"] == source).to_numpy(bool))
            part = self.iloc[rows]
            base = "_".join(str(source).strip("<>").split()) if str(source).startswith("<") else Path(source).stem
            figures = []  # (the file's suffix, a function that draws it)
            if part["frame"].notna().any():  # a video: a timeline per person (the 8 seen longest)
                people = plots.tracks_by_length(part)
                if not people:
                    figures.append(("_timeline.png", lambda p=part, s=source: plots.timeline_figure(
                        p, s, 0, None, self._threshold)))
                for track in people[:8]:
                    figures.append((f"_track{track}_timeline.png", lambda p=part, s=source, k=track:
                                    plots.timeline_figure(p, s, None, None, self._threshold, track=k)))
            elif not str(source).startswith("<"):  # an image file (in-memory images are not kept)
                figures.append(("_detections.png", lambda p=part: plots.detections_figure(
                    p, 0, None, self._threshold, self.attrs.get("au_window", 1.0))))
            title = f"{Path(str(source)).name}: mean AU probabilities ({int((part['status'] == OK).sum())} faces)"
            figures.append(("_aus.png", lambda p=part, t=title: plots.aus_figure(p, self._threshold, t)))
            name = fresh_base(folder, base, [suffix for suffix, _ in figures], used)
            for suffix, draw in figures:
                written.append(plots.save_figure(draw(), folder / f"{name}{suffix}"))
        return written

    @property
    def _threshold(self) -> np.ndarray:
        """The per-AU thresholds the detector used [12] (0.5 for a table without them, e.g. a CSV
        read without its ``.json``)."""
        return per_au(self.attrs.get("threshold", 0.5))

    def _saved(self, fig, path):
        if path is not None:
            self._refuse_sources("plot", path)
            plots.save_figure(fig, path)
        return fig

    # -- the JSON of mf2 predict ------------------------------------------------------------
    def json_rows(self) -> list[dict]:
        """Rows as ``mf2 predict --out x.json`` writes them: ``box`` [x0, y0, x1, y1],
        ``aus`` {AU1: p, …}, ``emotions`` {Neutral: p, …}, ``emotion``, ``landmarks`` [[x, y] × 68]."""
        out = []
        values = {c: self[c].to_numpy(object) for c in ("source", "frame", "time", "face", "track", "status",
                                                        "face_score", "emotion", "explanation",
                                                        "explanation_consistent")}
        pose = self[list(POSE_COLUMNS)].to_numpy(np.float64)
        box = self[["x", "y", "w", "h"]].to_numpy(np.float64)
        aus = self[list(AU_COLUMNS)].to_numpy(np.float64)
        emotions = self[list(EMOTION_COLUMNS)].to_numpy(np.float64)
        landmarks = self[list(LANDMARK_COLUMNS)].to_numpy(np.float64).reshape(-1, 2, 68).transpose(0, 2, 1)

        def plain(v):
            return None if pd.isna(v) else v.item() if isinstance(v, np.generic) else v

        for k in range(len(self)):
            row = {c: plain(values[c][k]) for c in ("source", "frame", "time", "face", "track", "status")}
            if row["status"] == OK:
                x, y, w, h = box[k]
                row.update(face_score=plain(values["face_score"][k]),
                           box=[round(float(v), 1) for v in (x, y, x + w, y + h)],
                           pose={a: None if np.isnan(v) else round(float(v), 2) for a, v in zip(POSE_COLUMNS, pose[k])},
                           aus={a: float(aus[k, j]) for j, a in enumerate(AUS)},
                           emotions={e: float(emotions[k, j]) for j, e in enumerate(EMOTIONS)},
                           emotion=EMOTIONS[int(np.argmax(emotions[k]))],
                           landmarks=np.round(landmarks[k], 1).tolist())
                if plain(values["explanation"][k]) is not None:
                    row["explanation"] = values["explanation"][k]
                    row["explanation_consistent"] = plain(values["explanation_consistent"][k])
            out.append(row)
        return out

    def write_json(self, path) -> Path:
        """``{"checkpoint", "rows": json_rows(), "skipped"}`` to ``path``, atomically."""
        self._refuse_sources("JSON output", path)
        with AtomicFile(path, "w") as f:
            json.dump({"checkpoint": self.attrs.get("checkpoint"), "info": self.info, "rows": self.json_rows(),
                       "skipped": self.attrs.get("skipped", []), "near_misses": self.attrs.get("near_misses", [])}, f)
            f.write("\n")
        return Path(path)


def _distinct_images(parts: list) -> list:
    """``parts`` with each ``<image k>`` of a later table that an earlier table holds too renamed
    ``<image k of table j>`` (see ``Faces.concat``)."""
    import re

    seen, out = set(), []
    for j, part in enumerate(parts):
        names = set(part["source"].dropna().unique()) if "source" in part else set()
        images = {n for n in names if isinstance(n, str) and re.fullmatch(r"<image \d+( of table \d+)?>", n)}
        renamed = {}
        for n in sorted(images & seen):  # a name taken: the first "<image k of table i>" free, i from j
            base, i = re.sub(r" of table \d+>$", ">", n)[:-1], j
            while f"{base} of table {i}>" in seen or f"{base} of table {i}>" in names:
                i += 1
            renamed[n] = f"{base} of table {i}>"
            seen.add(renamed[n])
        if renamed:
            part = part.copy()
            part["source"] = part["source"].map(lambda n: renamed.get(n, n)).astype(parts[j]["source"].dtype)
        seen |= images
        out.append(part)
    return out


COMPRESSED_SUFFIXES = {".gz", ".bz2", ".zip", ".xz", ".zst", ".tar"}  # pandas' inferred compressions
_LISTED = ("skipped", "near_misses", "cwd")  # attrs that accumulate as lists, joined
_ACCUMULATED = ("counts", "annotated", "videos", *_LISTED)  # counts added, videos' records merged, lists joined


def _joined_attrs(attrs: list[dict]) -> dict:
    """The ``attrs`` of tables joined by ``Faces.concat``: counts added up, the lists of skipped
    inputs, near-misses and working folders joined, the videos' records together, and every setting
    (thresholds, model, detector, tracking, ...) kept -- which the tables must share (a
    ``ValueError`` names the first that differs: the joined table could not say which it was made
    with). Pieces of one table (its rows split by source, by a filter: each keeps the whole
    table's attrs, ``tables`` naming it: ids in one string) add its counts once. Tables without attrs add nothing."""
    out: dict = {}
    seen: dict = {}  # table ids, in order (a dict: membership in constant time)
    for a in (a for a in attrs if a):
        ids = a["tables"].split() if isinstance(a.get("tables"), str) else []
        again = bool(ids) and all(i in seen for i in ids)  # a piece of a table already counted
        seen.update(dict.fromkeys(ids))
        for key, value in a.items():
            if key == "tables":
                continue
            if key in _ACCUMULATED:
                if again:
                    continue
                if key == "counts" and isinstance(value, dict):
                    counts = out.setdefault("counts", {})
                    for k, v in value.items():
                        counts[k] = counts.get(k, 0) + v if isinstance(v, (int, float)) else counts.get(k, v)
                elif key == "annotated" and isinstance(value, (int, float)):
                    out[key] = out.get(key, 0) + value
                elif key in _LISTED and isinstance(value, list):
                    out[key] = out.get(key, []) + [v for v in value if key != "cwd" or v not in out.get(key, [])]
                elif key == "videos" and isinstance(value, dict):
                    out[key] = {**value, **out.get(key, {})}
                continue
            if key not in out:
                out[key] = value
            elif out[key] != value:
                raise ValueError(f"concat: the tables were made with different settings ({key}: {out[key]!r} and "
                                 f"{value!r}); join tables of one Detector")
    if seen:
        out["tables"] = " ".join(seen)  # one string: pandas copies attrs on every operation, a string for free
    return out


def read_faces(path) -> Faces:
    """A results table from CSV (``Faces.to_csv`` or ``mf2 predict --out x.csv``), with its
    ``attrs`` from ``<path>.json`` when it is there."""
    return Faces.read_csv(path)


SIDECAR_FORMAT = "mf2-faces-attrs/1"


def sidecar_path(path) -> Path:
    """Where the attrs of the CSV table ``path`` go: ``<path>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _write_sidecar(path, text: str, attrs: dict) -> None:
    import hashlib

    body = {"format": SIDECAR_FORMAT, "csv_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "attrs": json.loads(json.dumps(attrs, default=_plain_json))}
    with AtomicFile(sidecar_path(path), "w") as f:
        json.dump(body, f)
        f.write("\n")


def _plain_json(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _read_sidecar(path) -> dict:
    """The attrs saved beside a CSV table (nothing when there is no sidecar), checked against the
    CSV's bytes: a CSV changed since it was written is refused with its sidecar named."""
    import hashlib

    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        body = json.loads(side.read_text())
        digest, attrs = body["csv_sha256"], body["attrs"]
        if body.get("format") != SIDECAR_FORMAT or not isinstance(attrs, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError(f"{side}: not the attrs file of an mf2 faces table (delete it to read {path} without "
                         f"its thresholds)") from None
    if hashlib.sha256(Path(path).read_bytes()).hexdigest() != digest:
        raise ValueError(f"{path} changed since it was written beside {side.name} (its thresholds and model "
                         f"would not be this table's): delete {side.name} to read the CSV alone")
    return attrs
