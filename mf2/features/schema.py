"""The feature cache's schema: the name of every array a store holds, in one place.

``extract-features`` writes these arrays, ``FeatureStore`` checks them, and the reader, the
linear probe, evaluation and export read them. Per row (along the store's first axis):

- ``meta/…``: the manifest's ``ids``, ``video``, ``split``, ``image``, ``emotion`` (int8) and
  ``aus`` (int8, 12 per row), written when the store is created; ``face_found``, ``valid`` and
  ``error``, written as rows are extracted;
- ``vision/tokens`` [T, C] (float16: the global token first), ``vision/au_tokens`` [12, R², C_au]
  and ``vision/landmarks`` [68, 2]; with ``--augment flip`` the mirrored face's
  ``vision/tokens_flip`` and ``vision/au_tokens_flip``;
- ``text/<kind>/ids`` [L], ``…/mask`` [L] and ``…/hidden`` [L, D] for each caption kind the
  manifest holds (``emotion``, ``au``, ``key_au``) and ``text/au_sentences/…`` [12, L, …].
"""

from __future__ import annotations

IDS, VIDEO, SPLIT, IMAGE = "meta/ids", "meta/video", "meta/split", "meta/image"
EMOTION, AUS = "meta/emotion", "meta/aus"
FACE_FOUND, VALID, ERROR = "meta/face_found", "meta/valid", "meta/error"
TOKENS, AU_TOKENS, LANDMARKS = "vision/tokens", "vision/au_tokens", "vision/landmarks"
AU_SENTENCES = "au_sentences"  # the text kind of the per-AU sentences
TEXT_PARTS = ("ids", "mask", "hidden")


def flipped(name: str) -> str:
    """The array of the mirrored view (``--augment flip``) beside ``name``."""
    return f"{name}_flip"


def text(kind: str, part: str | None = None) -> str:
    """``text/<kind>`` (the group) or ``text/<kind>/<part>`` (one of ``TEXT_PARTS``)."""
    if part is not None and part not in TEXT_PARTS:
        raise ValueError(f"text part: expected one of {', '.join(TEXT_PARTS)}, got {part!r}")
    return f"text/{kind}" + (f"/{part}" if part else "")
