"""Plots of a results table (``mf2.Faces``), headless (matplotlib's Agg canvas, no pyplot state).

* ``detections_figure``: a frame as ``--annotate`` draws it (boxes, AU regions, active AUs, top
  emotion) with the emotion probabilities of one face as bars beside it; 1000 x 500 px.
* ``timeline_figure``: one video's emotion probabilities and chosen AUs over time, one line
  each, with the top emotion as a coloured band above; 1000 x 600 px.
* ``aus_figure``: mean AU probabilities as bars, the activation threshold drawn; 800 x 400 px.

A figure's pixel size is fixed (``SIZES`` at ``DPI``), so a file's size says which plot it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mf2.data.labels import AU_NAMES, AUS, per_au
from mf2.io import AtomicFile
from mf2.prediction.annotate import Annotator, face_from_row
from mf2.prediction.table import AU_COLUMNS, EMOTION_COLUMNS, OK

DPI = 100
SIZES = {"detections": (1000, 500), "timeline": (1000, 600), "aus": (800, 400)}  # pixels
EMOTION_COLOURS = dict(zip(EMOTION_COLUMNS, ("#7f7f7f", "#d62728", "#8c564b", "#9467bd", "#ff7f0e", "#1f77b4",
                                             "#17becf", "#bcbd22")))


def _figure(kind: str):
    from matplotlib.figure import Figure

    w, h = SIZES[kind]
    return Figure(figsize=(w / DPI, h / DPI), dpi=DPI)


def save_figure(fig, path) -> Path:
    """A figure to a PNG at its own size, written atomically."""
    path = Path(path)
    with AtomicFile(path, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)
    return path


def _landmarks(row) -> np.ndarray:
    """[68, 2] landmarks of a row (x_0 … x_67, y_0 … y_67)."""
    values = np.array([row[f"{axis}_{i}"] for axis in "xy" for i in range(68)], dtype=np.float64)
    return values.reshape(2, 68).T


def drawn_faces(table, rows) -> list:
    """``DrawnFace``s of the table rows ``rows`` (positions) that hold a face."""
    faces = []
    for k in rows:
        row = table.iloc[k]
        if row["status"] != OK:
            continue
        box = (row["x"], row["y"], row["x"] + row["w"], row["y"] + row["h"])
        faces.append(face_from_row(box, _landmarks(row), aligned=bool(np.isnan(row["face_score"])),
                                   aus=row[list(AU_COLUMNS)].to_numpy(np.float64),
                                   emotions=row[list(EMOTION_COLUMNS)].to_numpy(np.float64),
                                   track=None if pd.isna(row["track"]) else int(row["track"])))
    return faces


def frame_image(row) -> np.ndarray:
    """The pixels a row was predicted on, read again from its source file."""
    from mf2.features.face_align import ImageError, load_image
    from mf2.prediction.sources import video_frame

    source = row["source"]
    if str(source).startswith("<"):
        raise ImageError(f"{source} was an in-memory image: pass it as image=")
    frame = row["frame"]
    return load_image(source) if pd.isna(frame) else video_frame(source, int(frame))


def detections_figure(table, i: int = 0, image: np.ndarray | None = None, threshold: float = 0.5,
                      au_window: float = 1.0):
    """Row ``i``'s frame with every face of that frame drawn, and face ``i``'s emotion bars."""
    row = table.iloc[i]
    if image is None:
        image = frame_image(row)
    same = (table["source"] == row["source"]).to_numpy(bool)
    frames = table["frame"]
    same &= (frames.isna() if pd.isna(row["frame"]) else (frames == row["frame"]).fillna(False)).to_numpy(bool)
    drawn = Annotator(None, threshold, au_window).draw(image, drawn_faces(table, np.flatnonzero(same)))
    fig = _figure("detections")
    grid = fig.add_gridspec(1, 2, width_ratios=(3, 2), left=0.02, right=0.97, bottom=0.1, top=0.9, wspace=0.25)
    ax = fig.add_subplot(grid[0])
    ax.imshow(np.asarray(drawn))
    ax.set_axis_off()
    name = Path(str(row["source"])).name
    ax.set_title(name if pd.isna(row["frame"]) else f"{name}, frame {row['frame']}", fontsize=10)
    bars = fig.add_subplot(grid[1])
    if row["status"] == OK:
        p = row[list(EMOTION_COLUMNS)].to_numpy(np.float64)
        top = int(np.argmax(p))
        bars.barh(range(len(p)), p, color=[EMOTION_COLOURS[e] if k == top else "#c7c7c7"
                                           for k, e in enumerate(EMOTION_COLUMNS)])
        bars.set_title(f"face {row['face']}: {row['emotion']} {p[top]:.2f}", fontsize=10)
    else:
        bars.text(0.5, 3.5, "no face", ha="center", va="center")
        bars.set_title("no face", fontsize=10)
    bars.set_yticks(range(len(EMOTION_COLUMNS)), EMOTION_COLUMNS)
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    bars.set_xlabel("probability")
    return fig


def chosen_aus(table, threshold: float = 0.5, most: int = 6) -> list[str]:
    """The AU columns worth a line: those that reach ``threshold`` somewhere, by mean
    probability (at most ``most``); else the 4 of highest mean."""
    values = table[list(AU_COLUMNS)]
    reached = [c for c, t in zip(AU_COLUMNS, per_au(threshold)) if values[c].max() >= t]
    order = sorted(reached or AU_COLUMNS, key=lambda c: -float(values[c].mean()))
    return order[:most] if reached else order[:4]


def au_names(aus) -> list[str] | None:
    """``aus`` as AU column names: None stays None; one name ('AU12', or the label's 'AU1') is
    one AU, not its letters; a list of names; any other is a ``ValueError`` listing the model's AUs."""
    if aus is None:
        return None
    spelled = dict(zip(AUS, AU_COLUMNS)) | {c: c for c in AU_COLUMNS}
    given = [aus] if isinstance(aus, str) else aus
    try:
        given = list(given)
    except TypeError:
        raise ValueError(f"aus: expected an AU name or a list of them ({', '.join(AU_COLUMNS)}), got {aus!r}") from None
    unknown = [a for a in given if not isinstance(a, str) or a.upper() not in spelled]
    if unknown or not given:
        raise ValueError(f"aus: expected names among {', '.join(AU_COLUMNS)}, got "
                         f"{', '.join(map(repr, unknown)) if unknown else 'none'}")
    return list(dict.fromkeys(spelled[a.upper()] for a in given))


def tracks_by_length(table) -> list[int]:
    """The track ids of ``table``'s faces, the one seen in most frames first."""
    ok = table[(table["status"] == OK).to_numpy(bool) & table["track"].notna().to_numpy(bool)]
    if ok.empty:
        return []
    counts = pd.Series(ok["track"].to_numpy(np.int64)).value_counts(sort=False)
    return sorted(counts.index.tolist(), key=lambda k: (-counts[k], k))


def timeline_figure(table, source: str | None = None, face: int | None = 0, aus=None, threshold: float = 0.5,
                    track: int | None = None):
    """Emotion probabilities (one line each) with the top emotion as a band (and its legend), and
    the AUs ``aus`` (default: ``chosen_aus``) over one video's time, for one person: ``track``
    (default, when ``face`` is None too: the track seen in most frames), or the ``face``-th
    largest face of each frame."""
    from mf2._checks import number

    track = number("track", track, integer=True, low=0, none=True)
    face = number("face", face, integer=True, low=0, none=True)
    aus = au_names(aus)
    videos = table.loc[table["frame"].notna(), "source"]
    if source is None:
        if videos.empty:
            raise ValueError("plot_timeline: no video in these results (rows with a frame number); for an image's "
                             "faces, plot_detections(i) or plot_aus()")
        source = videos.iloc[0]
    rows = table[(table["source"] == source).to_numpy(bool)]
    if rows.empty:
        known = ", ".join(map(str, pd.unique(table["source"])[:5]))
        raise ValueError(f"plot_timeline: no rows of {source!r} (sources: {known})")
    if rows["frame"].isna().all():
        raise ValueError(f"plot_timeline: {source} is an image (one frame, no time line); plot_detections(i) draws its "
                         "faces, plot_aus() their mean AUs")
    if track is None and face is None:
        people = tracks_by_length(rows)
        track, face = (people[0], None) if people else (None, 0)
    frames = rows.drop_duplicates("frame")[["frame", "time"]].sort_values("frame")
    ok = (rows["status"] == OK).to_numpy(bool)
    if track is not None:
        chosen = (rows["track"] == track).fillna(False).to_numpy(bool)
        if not (ok & chosen).any():
            known = tracks_by_length(rows)
            raise ValueError(f"plot_timeline: no track {track} in {source} (tracks: "
                             f"{', '.join(map(str, sorted(known))) or 'none'})")
        who = f"track {track}"
    else:
        chosen = (rows["face"] == face).fillna(False).to_numpy(bool)
        who = f"face {face} (by size in each frame)"
    mine = rows[ok & chosen].drop_duplicates("frame")
    mine = frames.merge(mine.drop(columns="time"), on="frame", how="left")  # frames without the face: gaps
    t = mine["time"].to_numpy(np.float64)
    if np.isnan(t).all():
        t = mine["frame"].to_numpy(np.float64)
    aus = aus if aus is not None else chosen_aus(rows[ok & chosen], threshold)
    fig = _figure("timeline")
    grid = fig.add_gridspec(3, 1, height_ratios=(0.35, 3, 3), hspace=0.12, left=0.07, right=0.75, top=0.93,
                            bottom=0.09)
    band, emo, au = fig.add_subplot(grid[0]), fig.add_subplot(grid[1]), fig.add_subplot(grid[2])
    emo.sharex(band)
    au.sharex(band)
    edges = np.append(t, t[-1] + (np.median(np.diff(t)) if len(t) > 1 else 1.0))
    seen = []
    for k, name in enumerate(mine["emotion"].tolist()):
        if isinstance(name, str):
            band.axvspan(edges[k], edges[k + 1], color=EMOTION_COLOURS[name], lw=0)
            seen += [name] if name not in seen else []
    band.set_yticks([0.5], ["top"], fontsize=8)
    band.set_ylim(0, 1)
    band.set_xlim(edges[0], edges[-1])
    band.tick_params(labelbottom=False)
    band.set_title(f"{Path(str(source)).name}: {who}", fontsize=10)
    if seen:  # the band's colours, in the order they first appear
        from matplotlib.patches import Patch

        band.legend(handles=[Patch(color=EMOTION_COLOURS[e], label=e) for e in seen], loc="lower left",
                    bbox_to_anchor=(1.01, -0.4), fontsize=8, frameon=False, title="top emotion", title_fontsize=8)
    for e in EMOTION_COLUMNS:
        emo.plot(t, mine[e].to_numpy(np.float64), label=e, color=EMOTION_COLOURS[e], lw=1.2, marker="o", ms=2)
    emo.set_ylim(0, 1)
    emo.set_ylabel("emotion")
    emo.tick_params(labelbottom=False)
    emo.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    names = dict(zip(AU_COLUMNS, AUS))
    for a in aus:
        au.plot(t, mine[a].to_numpy(np.float64), label=f"{a} {AU_NAMES[names[a]]}", lw=1.2, marker="o", ms=2)
    thresholds = dict(zip(AU_COLUMNS, per_au(threshold)))
    for line, a in zip(au.get_lines(), aus):  # each AU's threshold, dashed in its colour
        au.axhline(thresholds[a], color=line.get_color(), lw=0.8, ls="--")
    au.set_ylim(0, 1)
    au.set_ylabel("AU")
    au.set_xlabel("time (s)" if not np.isnan(mine["time"].to_numpy(np.float64)).all() else "frame")
    au.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def aus_figure(table, threshold: float = 0.5, title: str | None = None):
    """Mean probability of each AU over the faces of ``table``, as bars."""
    ok = table[(table["status"] == OK).to_numpy(bool)]
    means = ok[list(AU_COLUMNS)].mean().to_numpy(np.float64) if len(ok) else np.full(len(AU_COLUMNS), np.nan)
    fig = _figure("aus")
    ax = fig.add_axes((0.08, 0.33, 0.9, 0.58))
    t = per_au(threshold)
    ax.bar(range(len(AU_COLUMNS)), np.nan_to_num(means), color=["#ff8c00" if m >= tk else "#96bef0"
                                                               for m, tk in zip(np.nan_to_num(means), t)])
    ax.hlines(t, np.arange(len(t)) - 0.4, np.arange(len(t)) + 0.4, color="#444444", lw=0.8, ls="--")  # each AU's
    names = dict(zip(AU_COLUMNS, AUS))
    ax.set_xticks(range(len(AU_COLUMNS)), [f"{a}\n{AU_NAMES[names[a]]}" for a in AU_COLUMNS], rotation=60,
                  fontsize=7, ha="right", rotation_mode="anchor")
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean probability")
    ax.set_title(title or f"mean AU probabilities ({len(ok)} faces)", fontsize=10)
    return fig
