"""An analysis script of the kind written against OpenFace 2.x's CSV output (its documented
columns: https://github.com/TadasBaltrusaitis/OpenFace/wiki/Output-Format), kept as such scripts
are: it knows nothing of mf2. ``tests/test_tracking.py`` runs it, unchanged, on the files of
``mf2 predict --format openface``.

    python openface_analysis.py processed/clip.csv [more.csv …]

Per person (``face_id``) of each file: the frames tracked with success, the time span, how often
each AU is present (``AUxx_c``), the mean head rotation (``pose_Rx/Ry/Rz``, radians, shown in
degrees) and the mean inter-ocular distance from the 2-D landmarks (``x_36`` … ``x_45``). Exits 1
when a file lacks a column the analysis needs.
"""

import re
import sys

import numpy as np
import pandas as pd

NEEDED = ["frame", "face_id", "timestamp", "confidence", "success", "pose_Rx", "pose_Ry", "pose_Rz",
          "x_36", "y_36", "x_45", "y_45"]


def analyse(path: str) -> list[str]:
    df = pd.read_csv(path)
    df.columns = [c.strip() for c in df.columns]  # OpenFace writes ", " between fields
    missing = [c for c in NEEDED if c not in df.columns]
    aus = sorted(c for c in df.columns if re.fullmatch(r"AU\d\d_c", c))
    if missing or not aus:
        raise SystemExit(f"{path}: not an OpenFace 2.x CSV (missing {', '.join(missing) or 'AUxx_c columns'})")
    good = df[(df.success == 1) & (df.confidence >= 0.8)]
    out = [f"{path}: {len(df)} rows, {df.frame.nunique()} frames, {len(good)} good face-frames"]
    for face_id, person in good.groupby("face_id"):
        present = person[aus].mean()
        pose = np.degrees(person[["pose_Rx", "pose_Ry", "pose_Rz"]].mean())
        iod = np.hypot(person.x_45 - person.x_36, person.y_45 - person.y_36).mean()
        top = ", ".join(f"{c[:-2]} {v:.0%}" for c, v in present.sort_values(ascending=False).head(3).items())
        out.append(f"  face {face_id}: {len(person)} frames, {person.timestamp.min():.2f}-{person.timestamp.max():.2f} s, "
                   f"most present {top}; pose Rx {pose.pose_Rx:+.1f} Ry {pose.pose_Ry:+.1f} Rz {pose.pose_Rz:+.1f} "
                   f"deg; inter-ocular {iod:.1f} px")
    return out


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print("\n".join(analyse(name)))
