"""The label vocabulary: the 12 Aff-Wild2 AUs, the 8 emotions, EMFACS prototypes, and the
caption vocabulary (the three caption types, their manifest columns and Table VI's token caps)."""

from __future__ import annotations

import math

import numpy as np

# Aff-Wild2 order; every array of AU labels or features in mf2 follows it.
AUS = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")
AU_INDEX = {au: i for i, au in enumerate(AUS)}
N_AU = len(AUS)

AU_NAMES = {
    "AU1": "Inner Brow Raiser",
    "AU2": "Outer Brow Raiser",
    "AU4": "Brow Lowerer",
    "AU6": "Cheek Raiser",
    "AU7": "Lid Tightener",
    "AU10": "Upper Lip Raiser",
    "AU12": "Lip Corner Puller",
    "AU15": "Lip Corner Depressor",
    "AU23": "Lip Tightener",
    "AU24": "Lip Pressor",
    "AU25": "Lips Part",
    "AU26": "Jaw Drop",
}

# Index order of the emotion labels (ABAW EXPR).
EMOTIONS = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
EMOTION_INDEX = {name.lower(): i for i, name in enumerate(EMOTIONS)}
N_EMOTIONS = len(EMOTIONS)
MISSING = -1

# Captions (paper §II-A, Appendix A-C): three types per face, each in its manifest column, and
# the 12 per-AU sentences AU-VL aligns each AU's local features with.
CAPTION_TYPES = ("au", "emotion", "key_au")
CAPTION_COLUMN = {"au": "caption_au", "emotion": "caption_emotion", "key_au": "caption_key_au"}
CAPTION_COLUMNS = tuple(CAPTION_COLUMN.values())
# Token caps: Table VI gives AU 169 and emotion 61; the paper gives none for key-AU captions
# (169, like the AU caption) nor for the per-AU sentences (32: one sentence).
TOKEN_CAPS = {"au": 169, "emotion": 61, "key_au": 169}
TEXT_CAPS = {**TOKEN_CAPS, "au_sentences": 32}

# EMFACS prototypes restricted to the 12 AUs (AU5, AU9, AU17, AU20 are not in the set).
# Optional AUs often accompany the prototype but do not define it.
PROTOTYPES = {
    "Happiness": (("AU6", "AU12"), ("AU25",)),
    "Sadness": (("AU1", "AU4", "AU15"), ()),
    "Surprise": (("AU1", "AU2", "AU25", "AU26"), ()),
    "Fear": (("AU1", "AU2", "AU4", "AU7", "AU25", "AU26"), ()),
    "Anger": (("AU4", "AU7", "AU23", "AU24"), ()),
    "Disgust": (("AU10", "AU15"), ("AU25",)),
}


def parse_emotion(value) -> int:
    """An emotion given as a name (any case), an index 0..7 or -1 -> its index.

    Raises ValueError with the accepted values on anything else."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        raise ValueError(f"unknown emotion {value!r}")
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        if not math.isfinite(float(value)):
            raise ValueError(f"emotion index {value!r} outside -1..{len(EMOTIONS) - 1}")
        index = int(float(value))
        if float(value) != index or not (index == MISSING or 0 <= index < len(EMOTIONS)):
            raise ValueError(f"emotion index {value!r} outside -1..{len(EMOTIONS) - 1}")
        return index
    if isinstance(value, str) and value.strip().lower() in EMOTION_INDEX:
        return EMOTION_INDEX[value.strip().lower()]
    raise ValueError(f"unknown emotion {value!r} (expected one of {', '.join(EMOTIONS)}, an index 0..7, or -1)")


def parse_au_value(value) -> int:
    """An AU label 1/0/-1 (int, float or string) -> int; anything else raises ValueError."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):  # JSON true/false are not labels
        raise ValueError(f"AU value {value!r} outside {{0, 1, -1}}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"AU value {value!r} outside {{0, 1, -1}}") from None
    if number not in (0.0, 1.0, -1.0):
        raise ValueError(f"AU value {value!r} outside {{0, 1, -1}}")
    return int(number)


def per_au(threshold) -> np.ndarray:
    """A threshold for each of the 12 AUs [12] from one number or 12 (the run's tuned ones)."""
    t = np.broadcast_to(np.asarray(threshold, np.float64), (len(AUS),)).copy()
    if not np.all((t >= 0) & (t <= 1)):
        raise ValueError(f"threshold: expected probabilities between 0 and 1, got {threshold!r}")
    return t

