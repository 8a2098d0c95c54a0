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

Two more readings measure the text itself (``mf2 evaluate --explain``): whether each AU
sentence is that AU's own, in its state (``au_sentence_correct``: "AU12 (Lip Corner Puller): "
followed by one of AU12's active descriptions in the FACS vocabulary, or its at-rest one for an
AU at rest), and whether a sentence repeats a word n-gram (``repeats``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mf2.captions.facs import ACTIVE, ADJECTIVE, CUE, EMOTION_READING, REST_FORMS, AT_REST as REST_WORDS
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


def words(text: str) -> list[str]:
    """Lower-case words and numbers (punctuation and case dropped): how texts are compared."""
    return re.findall(r"[a-z0-9]+", text.lower())


_LABEL = re.compile(r"^\s*au\s?(\d+)\b(?:\s*\(([^)]*)\))?(.*)$", re.I | re.S)


def _descriptions(au: str) -> tuple[list, list]:
    """(active, at rest) descriptions of ``au`` as word lists, after its label."""
    active = [words(t) for t in ACTIVE[au]] + [words(CUE[au])]
    label = len(words(f"{au} ({AU_NAMES[au]})"))
    rest = [words(f.format(au=au, name=AU_NAMES[au], what=REST_WORDS[au]))[label:] for f in REST_FORMS]
    return active, rest


DESCRIPTIONS = {au: _descriptions(au) for au in AUS}


def au_sentence_correct(au: str, sentence: str, active: bool) -> bool:
    """``sentence`` is AU ``au``'s own and says its state: it opens with the AU's label ("AU12",
    with its FACS name when it gives one) and goes on with one of that AU's descriptions in the
    FACS vocabulary -- an active wording or its cue when ``active``, its at-rest sentence when
    not (case and punctuation aside)."""
    m = _LABEL.match(sentence)
    if not m or f"AU{int(m.group(1))}" != au:
        return False
    if m.group(2) is not None and words(m.group(2)) != words(AU_NAMES[au]):
        return False
    return words(m.group(3)) in DESCRIPTIONS[au][0 if active else 1]


def sentences(text: str) -> list[str]:
    """``text`` split into sentences (at '.', '!' or '?' before a space, and at line breaks)."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def repeats(sentence: str, n: int = 3) -> bool:
    """Whether a word n-gram occurs twice in ``sentence``."""
    w = words(sentence)
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    return len(set(grams)) < len(grams)


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
