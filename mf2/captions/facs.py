"""FACS knowledge for captions: what each AU looks like, in several wordings, and what each
emotion's key AUs say about it."""

from __future__ import annotations

import hashlib

from mf2.data.labels import AU_NAMES, AUS, EMOTIONS, PROTOTYPES

# What an active AU looks like (several wordings each; one is picked per image).
ACTIVE = {
    "AU1": ["the inner ends of the eyebrows are pulled upward", "the inner brows are raised, creasing the middle of the forehead",
            "the inner corners of the brows lift"],
    "AU2": ["the outer ends of the eyebrows are raised", "the outer brows lift, arching the eyebrows",
            "the outer parts of the brows are pulled up, creasing the sides of the forehead"],
    "AU4": ["the brows are lowered and drawn together", "the eyebrows are pulled down and toward each other, with creases between them",
            "the brows knit and lower"],
    "AU6": ["the cheeks are raised, narrowing the eyes from below", "the cheeks lift and crow's-feet wrinkles appear at the eye corners",
            "raised cheeks push up under the eyes"],
    "AU7": ["the eyelids are tightened", "the lower lids tense and rise, narrowing the eyes", "the lids tighten around the eyes"],
    "AU10": ["the upper lip is raised", "the upper lip lifts, deepening the folds beside the nose", "the upper lip is pulled up"],
    "AU12": ["the lip corners are pulled up and back", "the corners of the mouth are drawn upward into a smile",
             "the mouth corners pull up"],
    "AU15": ["the lip corners are pulled down", "the corners of the mouth turn downward", "the mouth corners are depressed"],
    "AU23": ["the lips are tightened and narrowed", "the lips tense and thin", "the lip margins tighten"],
    "AU24": ["the lips are pressed together", "the lips press firmly against each other", "the mouth is pressed shut"],
    "AU25": ["the lips are parted", "the lips separate slightly", "the mouth is slightly open"],
    "AU26": ["the jaw is dropped", "the jaw lowers, opening the mouth", "the mouth falls open as the jaw drops"],
}
# A short cue phrase per AU for emotion captions.
CUE = {
    "AU1": "raised inner brows", "AU2": "raised outer brows", "AU4": "knitted brows", "AU6": "raised cheeks",
    "AU7": "tightened eyelids", "AU10": "a raised upper lip", "AU12": "lip corners pulled up", "AU15": "down-turned lip corners",
    "AU23": "tightened lips", "AU24": "pressed lips", "AU25": "parted lips", "AU26": "a dropped jaw",
}
# How an inactive AU looks (for AU-VL's per-AU sentences).
AT_REST = {
    "AU1": "the inner brows are not raised", "AU2": "the outer brows are not raised", "AU4": "the brows are not lowered",
    "AU6": "the cheeks are not raised", "AU7": "the eyelids are not tightened", "AU10": "the upper lip is not raised",
    "AU12": "the lip corners are not pulled up", "AU15": "the lip corners are not pulled down",
    "AU23": "the lips are not tightened", "AU24": "the lips are not pressed together", "AU25": "the lips are not parted",
    "AU26": "the jaw is not dropped",
}
REST_FORMS = ["{au} ({name}) is at rest: {what}.", "{au} ({name}) is not active; {what}.", "{au} ({name}) shows no movement: {what}."]

ADJECTIVE = {"Neutral": "neutral", "Anger": "angry", "Disgust": "disgusted", "Fear": "afraid", "Happiness": "happy",
             "Sadness": "sad", "Surprise": "surprised", "Other": "in an ambiguous state"}
EMOTION_READING = {
    "Neutral": "a calm, neutral expression", "Anger": "anger", "Disgust": "disgust", "Fear": "fear",
    "Happiness": "happiness", "Sadness": "sadness", "Surprise": "surprise", "Other": "a mixed expression that fits no basic emotion",
}
# What the decisive AUs produce together.
WHY = {
    "Happiness": "a genuine smile",
    "Sadness": "a downcast, sorrowful look",
    "Surprise": "an astonished look with opened eyes and mouth",
    "Fear": "a tense, alarmed look around the eyes and mouth",
    "Anger": "a hard, tense glare",
    "Disgust": "a look of aversion",
}


def pick(options: list[str], *key) -> str:
    """A deterministic choice among wordings for this image and purpose."""
    digest = hashlib.sha256("\x1f".join(map(str, key)).encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def au_label(au: str) -> str:
    return f"{au} ({AU_NAMES[au]})"


def active_sentence(au: str, key: str, choose=pick) -> str:
    """'AU12 (Lip Corner Puller): The lip corners are pulled up and back.' (``choose``: how a
    wording is chosen; ``pick`` by default)."""
    return f"{au_label(au)}: " + choose([text[0].upper() + text[1:] for text in ACTIVE[au]], key, au) + "."


def rest_sentence(au: str, key: str, choose=pick) -> str:
    return choose([form.format(au=au, name=AU_NAMES[au], what=AT_REST[au]) for form in REST_FORMS], key, au, "rest")


def key_aus(emotion: int, active: list[str]) -> list[str]:
    """The active AUs that decide the emotion: those of its EMFACS prototype."""
    name = EMOTIONS[emotion]
    if name not in PROTOTYPES:
        return []
    core, optional = PROTOTYPES[name]
    decisive = [au for au in AUS if au in active and au in core]
    return decisive or [au for au in AUS if au in active and au in optional]
