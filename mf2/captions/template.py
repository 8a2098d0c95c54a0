"""The offline captioner: deterministic captions built from FACS knowledge and the labels,
with wording varied per image (a stable hash of the image id picks among phrasings)."""

from __future__ import annotations

import re

from mf2.captions.facs import (ADJECTIVE, CUE, EMOTION_READING, WHY, active_sentence, au_label, key_aus, pick,
                               rest_sentence)
from mf2.data.labels import AU_NAMES, AUS, EMOTIONS, MISSING


def _active(row: dict) -> list[str]:
    return [au for au in AUS if row.get(au) == 1]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def au_caption(row: dict, choose=pick) -> str:
    """A numbered list, one line per active AU (FACS name + what it looks like), like the
    paper's AU captions; long lists use the short cue so the caption stays under 169 tokens.
    ``choose(options, *key)`` picks each wording (every caption function takes it; ``pick``,
    a stable hash of the image id, by default)."""
    key, active = row["id"], _active(row)
    if not active:
        return choose(["No facial action unit is active: the face is relaxed and every muscle is at rest.",
                     "The face is at rest; none of the twelve action units is active.",
                     "All facial muscles are relaxed and no action unit is visible."], key, "none")
    intro = choose(["The face shows these facial action units:", "Active facial action units in this image:",
                  "The following FACS action units are visible:"], key, "intro")
    if len(active) <= 6:
        lines = [f"{i}. {active_sentence(au, key, choose)}" for i, au in enumerate(active, 1)]
    else:  # long lists: the AU and its cue only
        lines = [f"{i}. {au}: {CUE[au]}." for i, au in enumerate(active, 1)]
    if len(active) == len(AUS):
        return "\n".join([intro, *lines])
    outro = choose(["All other facial muscles are at rest.", "The remaining action units are inactive.",
                  "No other action unit is active."], key, "outro")
    return "\n".join([intro, *lines, outro])


def _emotion_facts(row: dict, caption: str) -> tuple:
    """(wording key, emotion name, active AUs, decisive AUs) of a row that has an emotion."""
    if row["emotion"] == MISSING:
        raise ValueError(f"{caption} caption needs an emotion label")
    active = _active(row)
    return row["id"], EMOTIONS[row["emotion"]], active, key_aus(row["emotion"], active)


def emotion_caption(row: dict, choose=pick) -> str:
    """Two sentences: the emotion, then the visible cues that show it (under 61 tokens)."""
    key, name, active, decisive = _emotion_facts(row, "emotion")
    cues = [CUE[au] for au in (decisive + [a for a in active if a not in decisive])][:3]
    opening = choose([f"The person in the image appears {ADJECTIVE[name]}.", f"This face looks {ADJECTIVE[name]}.",
                    f"The expression conveys {EMOTION_READING[name]}."], key, "open")
    if name == "Neutral":
        rest = (f"Only slight signs such as {_join(cues)} show, too little for a clear emotion." if cues else
                choose(["The face is relaxed, with no visible muscle movement.",
                      "The brows, eyes and mouth are at rest."], key, "neutral"))
    elif name == "Other":
        rest = (f"The {_join(cues)} do not add up to a basic emotion." if cues else
                "The face shows no pattern of a basic emotion.")
    elif cues:
        rest = choose([f"The {_join(cues)} point to {EMOTION_READING[name]}.",
                     f"This is shown by {_join(cues)}.",
                     f"Cues such as {_join(cues)} suggest {EMOTION_READING[name]}."], key, "cues")
    else:
        rest = f"The overall look of the face suggests {EMOTION_READING[name]}, though no single muscle stands out."
    return f"{opening} {rest}"


def key_au_caption(row: dict, choose=pick) -> str:
    """Which active AUs decide the emotion, and why."""
    key, name, active, decisive = _emotion_facts(row, "key-AU")
    opening = choose([f"The person in the image appears {ADJECTIVE[name]}.",
                      f"The person appears to be experiencing {EMOTION_READING[name]}."], key, "key-open")
    listed = _join([au_label(au) for au in active]) if active else ""
    if name == "Neutral":
        tail = ("No action unit is decisively active, which is what marks the expression as neutral." if not active else
                f"Only {listed} is faintly present; it is too weak to signal an emotion.")
    elif name == "Other":
        tail = (f"The active units {listed} do not form the pattern of any basic emotion, so the expression is classed as other."
                if active else "No action unit pattern of a basic emotion is present.")
    elif len(decisive) == 1:
        tail = f"The action unit that decides this is {au_label(decisive[0])}, part of {WHY[name]}."
    elif decisive:
        tail = f"The action units that decide this are {_join([au_label(au) for au in decisive])}: together they form {WHY[name]}."
    elif active:
        tail = (f"None of the active units ({listed}) belongs to the typical pattern of {EMOTION_READING[name]}, "
                "so the judgment rests on the overall look of the face.")
    else:
        tail = "No single action unit is decisive; the judgment rests on the overall look of the face."
    return f"{opening} {tail}"


_NUMBERING = re.compile(r"^\s*(?:\d+[.)]\s*)?")
_AU_REF = re.compile(r"\bAU\s?(\d+)\b")


def parse_au_lines(caption: str) -> dict[str, str]:
    """AU -> its own line in an AU caption (numbering and markdown emphasis removed)."""
    out = {}
    for line in caption.splitlines():
        match = _AU_REF.search(line)
        if not match:
            continue
        au = f"AU{int(match.group(1))}"
        if au in AU_NAMES and au not in out:
            out[au] = _NUMBERING.sub("", line.replace("**", "")).strip()
    return out


def au_sentences(row: dict, caption_au: str | None = None) -> list[str]:
    """The 12 per-AU sentences AU-VL aligns each AU's local features with: an active AU's own
    line of the AU caption (or the template's), a sentence saying the muscle is at rest for an
    inactive one, and 'not annotated' for a missing label. The labels decide which applies."""
    key = row["id"]
    parsed = parse_au_lines(caption_au) if caption_au else {}
    out = []
    for au in AUS:
        if row.get(au) == 1:
            out.append(parsed.get(au) or active_sentence(au, key))
        elif row.get(au) == 0:
            out.append(rest_sentence(au, key))
        else:
            out.append(f"{au_label(au)}: not annotated.")
    return out


TEMPLATES = {"au": au_caption, "emotion": emotion_caption, "key_au": key_au_caption}
_SLOT = re.compile("\x00(\\d+)\x00")


def lattice(write, *args) -> list[list[str]]:
    """Every text that ``write(*args, choose=...)`` (a caption function above, or
    ``facs.active_sentence``) can produce, as a sequence of parts, each the list of its wordings
    (a fixed piece of text has one): each path through the parts is one caption the template
    writes for these labels, whatever the image id. ``lattice(emotion_caption, row)`` is what
    grounded explanations decode over (``mf2.models.explain``)."""
    options: list[list[str]] = []

    def slot(choices, *key):
        if any(_SLOT.search(c) for c in choices):
            raise ValueError("a wording choice inside another one cannot be laid out as a lattice")
        options.append(list(choices))
        return f"\x00{len(options) - 1}\x00"

    pieces = _SLOT.split(write(*args, choose=slot))
    return [options[int(p)] if i % 2 else [p] for i, p in enumerate(pieces) if i % 2 or p]


class TemplateCaptioner:
    """Offline, deterministic; needs only the labels."""

    name = "template"
    cacheable = False

    def caption(self, caption_type: str, row: dict, image_path=None, timeout: float | None = None) -> str:
        return TEMPLATES[caption_type](row)
