"""The paper's three-stage prompts (Initial Setup, Output Format, Output Signal), stored as
versioned files in ``mf2/captions/prompts/<version>/<type>.md``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from mf2.data.labels import AUS, EMOTIONS

STAGES = ("Initial Setup", "Output Format", "Output Signal")
DEFAULT_VERSION = "v1"


@dataclass(frozen=True)
class Prompt:
    caption_type: str
    version: str  # "<folder>-<content hash>": any edit of the file changes cache keys
    initial_setup: str
    output_format: str
    output_signal: str

    def messages(self, emotion: int, aus: dict) -> tuple[str, str]:
        """(system text, user text) for an image's ground-truth labels."""
        active = [au for au in AUS if aus.get(au) == 1]
        signal = self.output_signal.format(emotion=EMOTIONS[emotion] if emotion >= 0 else "unknown",
                                           active_aus=", ".join(active) if active else "none")
        return self.initial_setup, f"{self.output_format}\n\n{signal}"


def load_prompt(caption_type: str, version: str = DEFAULT_VERSION) -> Prompt:
    try:
        text = resources.files("mf2.captions").joinpath("prompts", version, f"{caption_type}.md").read_text("utf-8")
    except FileNotFoundError:
        raise ValueError(f"no prompt {version}/{caption_type}.md in mf2/captions/prompts") from None
    sections, current = {}, None
    for line in text.splitlines():
        if line.startswith("## ") and line[3:].strip() in STAGES:
            current = line[3:].strip()
            sections[current] = []
        elif current:
            sections[current].append(line)
    missing = [s for s in STAGES if s not in sections]
    if missing:
        raise ValueError(f"prompt {version}/{caption_type}.md lacks the section(s): {', '.join(missing)}")
    body = {s: "\n".join(sections[s]).strip() for s in STAGES}
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return Prompt(caption_type, f"{version}-{digest}", body["Initial Setup"], body["Output Format"], body["Output Signal"])
