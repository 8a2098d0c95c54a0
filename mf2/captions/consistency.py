"""Does an explanation say what the model's heads say? (issue 15)

An explanation (``predict --explain``) is Emo-VL's generated caption of the face, then AU-VL's
sentence for each AU the heads call active, prompted with that AU's name. Generated text is
only as good as the model: a weak one writes fluent words that contradict its own heads. This
module reads an explanation back with the caption vocabulary and checks three things:

* **emotion**: the caption names the emotion the heads chose (its name, adjective or reading:
  "happy", "happiness"), and no other;
* **cues**: every AU the caption names (``AU12``, its FACS name, or its cue phrase, "lip corners
  pulled up") is one the heads call active;
* **AU sentences**: no active AU's sentence says that AU is at rest.

A face whose explanation passes all three is ``consistent``. The lexicon is the template
captioner's; captions from a language model are read with the same words, so phrasing it does
not use is not counted against it (a caption that names no emotion fails the emotion check).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mf2.captions.facs import ADJECTIVE, CUE, EMOTION_READING
from mf2.data.labels import AU_NAMES, AUS, EMOTIONS


def _emotion_words() -> dict[str, list[str]]:
    words = {}
    for name in EMOTIONS:
        forms = {name.lower(), ADJECTIVE[name].lower(), EMOTION_READING[name].lower()}
        words[name] = sorted(forms, key=len, reverse=True)
    words["Neutral"] += ["calm"]
    words["Other"] = ["ambiguous", "mixed expression", "no basic emotion", "not add up to a basic emotion",
                      "classed as other", "no pattern of a basic emotion"]
    words["Fear"] += ["fearful", "scared"]
    words["Anger"] += ["angry"]
    return words


EMOTION_WORDS = _emotion_words()
AU_WORDS = {au: [au.lower(), AU_NAMES[au].lower(), CUE[au].lower()] for au in AUS}
AT_REST = re.compile(r"\b(at rest|not active|no movement|is not|are not)\b")


def _says(text: str, phrase: str) -> bool:
    return re.search(r"(?<![a-z0-9])" + re.escape(phrase) + r"(?![a-z0-9])", text) is not None


def emotions_named(text: str) -> set[str]:
    """The emotions whose words occur in ``text``."""
    text = text.lower()
    return {name for name, forms in EMOTION_WORDS.items() if any(_says(text, f) for f in forms)}


def aus_named(text: str) -> set[str]:
    """The AUs ``text`` names by number, FACS name or cue phrase."""
    text = re.sub(r"\bau\s+(\d+)", r"au\1", text.lower())
    return {au for au, forms in AU_WORDS.items() if any(_says(text, f) for f in forms)}


@dataclass
class Consistency:
    emotion: bool  # the caption names the chosen emotion and no other
    cues: bool  # every AU the caption names is active
    au_sentences: bool  # no active AU's sentence says it is at rest

    @property
    def consistent(self) -> bool:
        return self.emotion and self.cues and self.au_sentences

    def as_dict(self) -> dict:
        return {"consistent": self.consistent, "emotion": self.emotion, "cues": self.cues,
                "au_sentences": self.au_sentences}


def check(caption: str, au_sentences: dict[str, str], active: set[str], emotion: str) -> Consistency:
    """``caption``: Emo-VL's text; ``au_sentences``: AU -> AU-VL's sentence, for the active AUs;
    ``active``: the AUs the heads call active; ``emotion``: the heads' emotion (``EMOTIONS``)."""
    return Consistency(emotion=emotions_named(caption) == {emotion},
                       cues=aus_named(caption) <= set(active),
                       au_sentences=not any(AT_REST.search(s.lower()) for au, s in au_sentences.items() if au in active))


def summarise(checks: list[Consistency]) -> dict:
    """Rates over faces, for ``evaluate``."""
    n = len(checks)
    if not n:
        return {"faces": 0}
    return {"faces": n, **{k: round(sum(c.as_dict()[k] for c in checks) / n, 4)
                           for k in ("consistent", "emotion", "cues", "au_sentences")}}
