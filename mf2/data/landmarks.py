"""68-point (iBUG) landmarks and the AU centres derived from them (DATA.md).

0-based indices: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, outer lips 48-59, inner lips
60-67. ``ruler`` is the distance between the inner eye corners 39 and 42. Each AU has two
centres; image y grows downward, so "up" subtracts. (Adapted from JAA-Net's 49-point table.)
"""

from __future__ import annotations

import numpy as np

from mf2.data.labels import AUS

# AU -> (landmark a, landmark b, vertical shift in rulers; negative = up)
AU_CENTRE_RULES = {
    "AU1": (21, 22, -1 / 2),
    "AU2": (18, 25, -1 / 3),
    "AU4": (19, 24, 1 / 3),
    "AU6": (41, 46, 1.0),
    "AU7": (38, 43, 0.0),
    "AU10": (61, 63, 0.0),
    "AU12": (48, 54, 0.0),
    "AU15": (48, 54, 0.0),
    "AU23": (51, 57, 0.0),
    "AU24": (51, 57, 0.0),
    "AU25": (51, 57, 0.0),
    "AU26": (56, 58, 1 / 2),
}

# Per-AU region tables: each AU's two centres (each the mean of a few landmarks, moved down by a
# shift in rulers; negative = up) and its sampling window, as a factor of ``--au-window``.
# ``table``: DATA.md's centres (AU_CENTRE_RULES) with one window for every AU -- the reading every
# store before the option was extracted with. ``small-face``: where the evidence of the small
# muscles sits on a face tens of pixels wide -- AU7 on the lower lid (the eye's centre, a small
# window), AU15 below the lip corners (the depressor pulls them down), AU23 a small window on the
# lips, AU26 on the chin below the lower lip, which the jaw drop moves.
AURegion = tuple  # ((landmarks of centre a), (landmarks of centre b), shift in rulers, window factor)
AU_REGIONS = {
    "table": {au: ((a,), (b,), shift, 1.0) for au, (a, b, shift) in AU_CENTRE_RULES.items()},
    "small-face": {
        **{au: ((a,), (b,), shift, 1.0) for au, (a, b, shift) in AU_CENTRE_RULES.items()},
        "AU7": ((37, 38, 40, 41), (43, 44, 46, 47), 0.1, 0.6),
        "AU15": ((48,), (54,), 1 / 3, 0.8),
        "AU23": ((51,), (57,), 0.0, 0.6),
        "AU26": ((57,), (8,), 0.0, 1.0),
    },
}


def au_regions(name: str = "table") -> dict:
    """The region table ``name`` (``AU_REGIONS``): AU -> (centre a's landmarks, centre b's, shift in
    rulers, window factor)."""
    if name not in AU_REGIONS:
        raise ValueError(f"au_regions: expected one of {', '.join(AU_REGIONS)}, got {name!r}")
    return AU_REGIONS[name]


def au_window_factors(name: str = "table") -> np.ndarray:
    """Each AU's sampling window [12] as a factor of ``--au-window``, in the order of ``AUS``."""
    table = au_regions(name)
    return np.array([table[au][3] for au in AUS], dtype=np.float64)


REGIONS = {
    "jaw": range(0, 17), "right_brow": range(17, 22), "left_brow": range(22, 27),
    "nose": range(27, 36), "right_eye": range(36, 42), "left_eye": range(42, 48),
    "outer_lips": range(48, 60), "inner_lips": range(60, 68),
}


def ruler(landmarks: np.ndarray) -> np.ndarray:
    """Inner-eye-corner distance of [..., 68, 2] landmarks -> [...]."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    return np.linalg.norm(landmarks[..., 39, :] - landmarks[..., 42, :], axis=-1)


def au_centres(landmarks: np.ndarray, regions: str = "table") -> np.ndarray:
    """AU centres of [..., 68, 2] landmarks -> [..., 12, 2, 2] (AU, centre a/b, x/y), in the
    landmarks' units, AUs in the order of ``AUS``, by the region table ``regions``."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape[-2:] != (68, 2):
        raise ValueError(f"landmarks: expected [..., 68, 2], got {landmarks.shape}")
    table = au_regions(regions)
    r = ruler(landmarks)[..., None]
    out = np.empty(landmarks.shape[:-2] + (len(AUS), 2, 2))
    for i, au in enumerate(AUS):
        a, b, shift, _ = table[au]
        for j, points in enumerate((a, b)):
            point = landmarks[..., points[0], :] if len(points) == 1 else landmarks[..., list(points), :].mean(-2)
            out[..., i, j, 0] = point[..., 0]
            out[..., i, j, 1] = point[..., 1] + shift * r[..., 0]
    return out


# Where each iBUG point goes when a face is mirrored left-right: the subject's right brow becomes
# its left one, and so on (points on the midline map to themselves).
MIRROR = np.array(
    list(range(16, -1, -1))  # jaw 0..16 -> 16..0
    + list(range(26, 16, -1))  # brows 17..26 -> 26..17
    + [27, 28, 29, 30]  # nose bridge
    + [35, 34, 33, 32, 31]  # nose base
    + [45, 44, 43, 42, 47, 46]  # right eye 36..41 -> left eye (outer, upper x2, inner, lower x2)
    + [39, 38, 37, 36, 41, 40]  # left eye 42..47 -> right eye
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)


def mirror_landmarks(landmarks: np.ndarray, width: float) -> np.ndarray:
    """The landmarks [..., 68, 2] of the horizontally mirrored image (``width`` wide): x -> width - x,
    and the points renumbered so that each index keeps its anatomical meaning. The AU centres of
    the result are the mirrored originals, each AU's left and right centres swapped (the two
    midline centres of AU23/24/25, upper and lower lip, stay in place)."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    out = landmarks[..., MIRROR, :].copy()
    out[..., 0] = width - out[..., 0]
    return out
