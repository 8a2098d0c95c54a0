"""Building an MFA-style dataset (paper §II, SPEC §3.3) from Aff-Wild2 or any labelled faces.

1. keep faces with an emotion, all 12 AUs (!= -1) and an image on disk;
2. split by recording (``_left``/``_right`` people of one recording stay together) so that the
   validation share of images, of videos and of every class is near the requested fraction
   (a seeded search over recording subsets); with a test fraction, a test split of other
   recordings is held out first, the same way;
3. balance the 8 classes in each split by seeded down-sampling to a target per class;
4. write ``manifest.jsonl`` (image paths relative to it) and ``stats.json``.
The paper: 34,696 images from 151 videos; train 31,320 / 134 videos; val 3,376 / 17.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from mf2.data.affwild2 import recording
from mf2.data.labels import AUS, EMOTIONS, MISSING
from mf2.data.manifest import write_manifest
from mf2.data.stats import dataset_stats
from mf2.io import atomic_write_text, refuse_overlap

PAPER = {"images": 34696, "videos": 151, "train": {"images": 31320, "videos": 134}, "val": {"images": 3376, "videos": 17}}


def filter_complete(rows: list[dict]) -> tuple[list[dict], Counter]:
    """Rows with an emotion and all 12 AUs; the others counted by reason."""
    kept, dropped = [], Counter()
    for r in rows:
        if r["emotion"] == MISSING:
            dropped["expr_missing"] += 1
        elif any(r[a] == MISSING for a in AUS):
            dropped["au_missing"] += 1
        else:
            kept.append(r)
    return kept, dropped


def split_by_recording(rows: list[dict], val_fraction: float, seed: int, trials: int = 3000,
                       test_fraction: float = 0.0) -> dict[str, str]:
    """recording -> 'train' | 'val' (| 'test'). Among seeded random orders, each filled with
    recordings until the validation images reach the fraction, keep the one whose image, video
    and per-class validation shares are nearest to ``val_fraction``. With ``test_fraction``, the
    test recordings are chosen first the same way, then val among the others (both fractions
    are shares of all images)."""
    if test_fraction > 0:
        test = _held_out(rows, test_fraction, [seed, 1], trials)
        rest = [r for r in rows if recording(r["video"]) not in test]
        share = val_fraction / max(1e-9, 1 - sum(recording(r["video"]) in test for r in rows) / len(rows))
        assignment = split_by_recording(rest, min(share, 0.95), seed, trials) if rest else {}
        return {**assignment, **{rec: "test" for rec in test}}
    val = _held_out(rows, val_fraction, seed, trials)
    return {rec: "val" if rec in val else "train" for rec in sorted({recording(r["video"]) for r in rows})}


def _held_out(rows: list[dict], fraction: float, seed, trials: int) -> set:
    """The recordings of a held-out split whose image, video and class shares are nearest to
    ``fraction`` (see ``split_by_recording``); none when there are fewer than two recordings."""
    recs = sorted({recording(r["video"]) for r in rows})
    if fraction <= 0 or len(recs) < 2:
        return set()
    index = {rec: i for i, rec in enumerate(recs)}
    images = np.zeros(len(recs))
    videos = np.zeros(len(recs))
    classes = np.zeros((len(recs), len(EMOTIONS)))
    seen_videos = set()
    for r in rows:
        i = index[recording(r["video"])]
        images[i] += 1
        classes[i, r["emotion"]] += 1
        if r["video"] not in seen_videos:
            seen_videos.add(r["video"])
            videos[i] += 1
    total_img, total_vid, total_cls = images.sum(), videos.sum(), classes.sum(0)
    present = total_cls > 0
    rng = np.random.default_rng(seed)
    best, best_score = None, np.inf
    for _ in range(trials):
        order = rng.permutation(len(recs))
        cum = np.cumsum(images[order])
        n = int(np.searchsorted(cum, fraction * total_img)) + 1
        n = min(max(n, 1), len(recs) - 1)
        for m in {n - 1, n} - {0}:
            chosen = order[:m]
            img_share = images[chosen].sum() / total_img
            vid_share = videos[chosen].sum() / total_vid
            cls_share = classes[chosen].sum(0)[present] / total_cls[present]
            score = (abs(img_share - fraction) + abs(vid_share - fraction)
                     + 0.5 * np.abs(cls_share - fraction).mean()) / fraction
            if score < best_score:
                best, best_score = set(chosen.tolist()), score
    return {rec for rec, i in index.items() if i in best}


def balance(rows: list[dict], target: int, seed: int) -> tuple[list[dict], dict]:
    """At most ``target`` rows per class, drawn without replacement (seeded); row order kept."""
    rng = np.random.default_rng(seed)
    by_class = defaultdict(list)
    for i, r in enumerate(rows):
        by_class[r["emotion"]].append(i)
    keep = []
    for c in sorted(by_class):
        idx = by_class[c]
        keep.extend(idx if len(idx) <= target else rng.choice(idx, size=target, replace=False).tolist())
    shortfall = {EMOTIONS[c]: target - len(by_class.get(c, [])) for c in range(len(EMOTIONS))
                 if len(by_class.get(c, [])) < target}
    return [rows[i] for i in sorted(keep)], shortfall


def summary_line(stats: dict) -> str:
    """'34,696 images from 151 videos; train 31,320 images / 134 videos; val 3,376 / 17'"""
    sp = stats["splits"]
    text = f"{stats['images']:,} images from {stats['videos']:,} videos"
    if "train" in sp:
        text += f"; train {sp['train']['images']:,} images / {sp['train']['videos']:,} videos"
    if "val" in sp:
        text += f"; val {sp['val']['images']:,} / {sp['val']['videos']:,}"
    if "test" in sp:
        text += f"; test {sp['test']['images']:,} / {sp['test']['videos']:,}"
    return text


def _written_here(out: Path) -> bool:
    """Whether ``out`` is a dataset folder an earlier build-dataset wrote (its stats.json says so)."""
    try:
        return "per_class_target" in json.loads((out / "stats.json").read_text())
    except (OSError, ValueError):
        return False


def build_mfa(rows: list[dict], out, *, per_class: int | None = None, val_fraction: float = 0.1, seed: int = 0,
              keep_splits: bool = False, source: dict | None = None, dropped: dict | None = None,
              inputs: dict | None = None, test_fraction: float = 0.0) -> dict:
    """Filter, split, balance and write the MFA manifest and stats. ``rows`` carry absolute
    (or cwd-relative) image paths; the manifest stores them relative to ``out``. ``out`` may not
    be, hold or lie inside any input (``inputs``: the source manifest or Aff-Wild2 folders, and
    every image), and an ``out`` that holds a manifest build-dataset did not write is refused."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
    if not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(f"test_fraction: expected a value in [0, 1) that leaves training recordings beside "
                         f"val_fraction {val_fraction}, got {test_fraction}")
    if keep_splits and test_fraction:
        raise ValueError("--test-fraction splits the faces again; with --keep-splits the manifest's own split column "
                         "(train, val, test) is kept")
    out = Path(out)
    refuse_overlap({**(inputs or {}), "images": [r["image"] for r in rows]},
                   {"--out": out, "--out manifest": out / "manifest.jsonl"})
    if (out / "manifest.jsonl").exists() and not _written_here(out):
        raise ValueError(f"{out} holds a manifest.jsonl that mf2 build-dataset did not write; choose another --out")
    complete, filtered = filter_complete(rows)
    if not complete:
        raise ValueError("no faces with an emotion and all 12 AUs were found")
    if keep_splits:
        missing = sum(1 for r in complete if r.get("split") not in ("train", "val", "test"))
        if missing:
            raise ValueError(f"--keep-splits: {missing} rows have no split")
    else:
        assignment = split_by_recording(complete, val_fraction, seed, test_fraction=test_fraction)
        complete = [{**r, "split": assignment[recording(r["video"])]} for r in complete]
    share = Counter(r["split"] for r in complete)
    counts = Counter(r["emotion"] for r in complete)
    target_total = per_class if per_class is not None else min(counts.get(c, 0) for c in range(len(EMOTIONS)))
    if target_total < 1:
        absent = [EMOTIONS[c] for c in range(len(EMOTIONS)) if counts.get(c, 0) == 0]
        raise ValueError(f"cannot balance: no images of {', '.join(absent)}; pass --per-class to set a target")
    balanced, shortfalls, targets = [], {}, {}
    for split in sorted(share):
        part = [r for r in complete if r["split"] == split]
        targets[split] = max(1, round(target_total * share[split] / len(complete)))
        kept, short = balance(part, targets[split], seed)
        balanced.extend(kept)
        if short:
            shortfalls[split] = short
    out.mkdir(parents=True, exist_ok=True)
    manifest_rows = [{**r, "image": os.path.relpath(os.path.abspath(r["image"]), out.resolve())} for r in balanced]
    write_manifest(manifest_rows, out / "manifest.jsonl")
    stats = dataset_stats(balanced)
    stats.update({
        "dropped": {**(dropped or {}), **{f"filtered_{k}": v for k, v in filtered.items()},
                    "balanced_away": len(complete) - len(balanced)},
        "per_class_target": {"total": target_total, **targets}, "per_class_shortfall": shortfalls,
        "settings": {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed,
                     "keep_splits": keep_splits},
        "source": source or {}, "paper": PAPER,
    })
    stats["summary"] = summary_line(stats)
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=2) + "\n")
    return stats
