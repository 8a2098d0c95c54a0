"""What a data set holds: images and videos per split and per emotion class, AU positive rates
(the ``stats.json`` of ``mf2 synth`` and ``mf2 build-dataset``)."""

from __future__ import annotations

from collections import Counter, defaultdict

from mf2.data.labels import AUS, EMOTIONS


def dataset_stats(rows: list[dict]) -> dict:
    """Images and videos per split and per class, and AU positive rates."""
    per_split = defaultdict(lambda: {"images": 0, "videos": set(), "classes": Counter()})
    for r in rows:
        s = per_split[r.get("split") or "unsplit"]
        s["images"] += 1
        s["videos"].add(r["video"])
        emo = r["emotion"]
        s["classes"][emo if isinstance(emo, str) else EMOTIONS[emo] if emo >= 0 else "missing"] += 1
    splits = {name: {"images": s["images"], "videos": len(s["videos"]),
                     "per_class": {e: s["classes"].get(e, 0) for e in EMOTIONS}}
              for name, s in sorted(per_split.items())}
    au_rate = {au: round(sum(r[au] == 1 for r in rows) / max(1, sum(r[au] != -1 for r in rows)), 4) for au in AUS}
    return {"images": len(rows), "videos": len({r["video"] for r in rows}), "splits": splits,
            "au_positive_rate": au_rate}
