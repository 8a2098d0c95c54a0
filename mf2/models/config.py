"""Model configurations: MF² (architecture presets and loss switches) and DFN (its side
pathways); kept apart from training settings (``mf2.training.loop.TrainConfig``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from mf2.data.labels import N_AU
from mf2.models.losses import MF2_LOSSES, check_weights

# The paper's Q-Former is BERT-base sized (Table VI; 186.7M trainable parameters per branch).
PRESETS = {
    "paper": dict(hidden=768, layers=12, heads=12, ffn=3072, queries=32, au_queries=32, au_align_per_image=12),
    "small": dict(hidden=128, layers=2, heads=4, ffn=512, queries=8, au_queries=4, au_align_per_image=3),
}
EMOTION_READS = ("global", "global+au")
# The losses each model trains with, by name, and the key of the weight each takes
# (``mf2.models.losses``): MF²'s ``loss_weights`` and DFN's weights use these keys only.
PAPER_PARAMS = {"emo_vl": 186.7e6, "au_vl": 186.7e6, "mf2": 373.4e6}


def check(prefix: str, name: str, value, kinds, ok=None, expected: str = "") -> None:
    """A config value of the right type (and, with ``ok``, range); a one-line ValueError naming it
    otherwise ('model.hidden: expected a positive integer, got -3'). bool is not an int here."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    right_type = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds) and not (
        isinstance(value, float) and not math.isfinite(value))  # NaN and infinity are not settings
    if not right_type or (ok is not None and value is not None and not _holds(ok, value)):
        what = expected or " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        shown = repr(value)
        raise ValueError(f"{prefix}.{name}: expected {what}, got {shown if len(shown) <= 60 else shown[:40] + '...'}")


def _holds(ok, value) -> bool:
    """``ok(value)``, where a value the test cannot even compute (an integer too large for a
    float, ...) fails it rather than escaping as a traceback."""
    try:
        return bool(ok(value))
    except (ArithmeticError, TypeError, ValueError):
        return False


def positive(prefix: str, obj, *names: str) -> None:
    for name in names:
        check(prefix, name, getattr(obj, name), int, lambda v: v > 0, "a positive integer")
PAPER_DFN_PARAMS = 52.88e6


@dataclass
class MF2Config:
    preset: str = "small"
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    ffn: int = 512
    queries: int = 8  # Emo-VL learned queries (paper: 32)
    au_queries: int = 4  # AU-VL learned queries per AU sequence (paper: 32)
    # AU sequences per image that take part in ITC/ITM/ITG (active AUs first, then at random);
    # all 12 always train the AU classifier. 12 = the paper; fewer trades alignment signal for
    # speed (the AU-VL alignment passes cost ~12x an Emo-VL one).
    au_align_per_image: int = 3
    embed_dim: int = 256  # ITC projection (BLIP-2: 256)
    dropout: float = 0.1
    temperature: float = 0.07  # learnable, Table VI
    label_smoothing: float = 0.1  # ITG (BLIP-2)
    vision_dim: int = 0  # from the cache: the global tokens' width
    au_vision_dim: int = 0  # from the cache: the AU tokens' width (0 = vision_dim, as in caches before finer AU maps)
    text_dim: int = 0  # from the cache
    vocab: list = field(default_factory=list)  # ITG sub-vocabulary: original token ids, index 0 = PAD, 1 = BOS
    max_text_len: int = 169
    emo_vl: bool = True
    au_vl: bool = True
    emo_text: str = "emotion"  # which caption Emo-VL aligns with
    # What the emotion recognizer reads (§III-A names "an emotion recognizer" without its input):
    # "global+au" = Emo-VL's pooled queries beside each AU sequence's pooled AU-VL queries (the
    # "global and local feature integration" of Table IV's discussion; +10 points of val emotion
    # mean accuracy at 800 SynthFACS training images); "global" = Emo-VL's alone (runs saved
    # before this field, which load with it: ``runs.model_config``).
    emotion_reads: str = "global+au"
    loss_weights: dict = field(default_factory=lambda: {"itc": 1.0, "itm": 1.0, "itg": 1.0, "cls": 1.0})

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "MF2Config":
        if preset not in PRESETS:
            raise ValueError(f"preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
        return cls(preset=preset, **{**PRESETS[preset], **overrides})

    def __post_init__(self):
        p = "model"
        check(p, "preset", self.preset, str)
        positive(p, self, "hidden", "layers", "heads", "ffn", "queries", "au_queries", "embed_dim", "max_text_len")
        check(p, "au_align_per_image", self.au_align_per_image, int, lambda v: 1 <= v <= 12, "an integer 1..12")
        for name in ("vision_dim", "au_vision_dim", "text_dim"):
            check(p, name, getattr(self, name), int, lambda v: v >= 0, "an integer >= 0")
        check(p, "dropout", self.dropout, (int, float), lambda v: 0 <= v < 1, "a number in [0, 1)")
        check(p, "label_smoothing", self.label_smoothing, (int, float), lambda v: 0 <= v < 1, "a number in [0, 1)")
        check(p, "temperature", self.temperature, (int, float), lambda v: v > 0, "a positive number")
        check(p, "vocab", self.vocab, list, lambda v: all(isinstance(i, int) and not isinstance(i, bool) for i in v),
              "a list of token ids")
        for name in ("emo_vl", "au_vl"):
            check(p, name, getattr(self, name), bool)
        check(p, "emo_text", self.emo_text, str, lambda v: v in ("emotion", "au", "key_au"), "emotion, au or key_au")
        check(p, "emotion_reads", self.emotion_reads, str, lambda v: v in EMOTION_READS, " or ".join(EMOTION_READS))
        check(p, "loss_weights", self.loss_weights, dict,
              lambda v: all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0
                            for x in v.values()), "a mapping of loss weight keys to numbers >= 0")
        check_weights(self.loss_weights, sorted(set(MF2_LOSSES.values())), f"{p}.loss_weights")
        if self.hidden % self.heads:
            raise ValueError(f"{p}.hidden: {self.hidden} is not a multiple of heads {self.heads}")

    def emotion_input_dim(self) -> int:
        """The emotion head's input width (see ``models.mf2.emotion_input``)."""
        both = self.emotion_reads == "global+au" and self.emo_vl and self.au_vl
        return self.hidden * (1 + N_AU) if both else self.hidden

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DFNConfig:
    """DFN's side pathways (paper §III-B, Table VI). Readings of the paper chosen: ``blocks`` =
    "all" reads every MF² block (4N cells, §III-B); an integer k reads k evenly spaced blocks
    ending with the last (Table VI's "Number of Adapter Layers: 7" -> ``blocks=7``).
    ``bottleneck`` = 0 uses the Q-Former width (Table VI's input and output dimension 768 with
    no bottleneck named)."""

    blocks: str | int = "all"
    bottleneck: int = 0
    lam: float = 0.1
    alpha_init: float = -3.0  # g = 0.05 at the start: the pathway begins close to the frozen outputs
    align_weight: float = 0.1

    def __post_init__(self):
        p = "dfn"
        check(p, "blocks", self.blocks, (str, int), lambda v: v == "all" or (isinstance(v, int) and v >= 1),
              "'all' or a positive integer")
        check(p, "bottleneck", self.bottleneck, int, lambda v: v >= 0, "an integer >= 0")
        for name in ("lam", "alpha_init"):
            check(p, name, getattr(self, name), (int, float))
        check(p, "align_weight", self.align_weight, (int, float), lambda v: v >= 0, "a number >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    def block_indices(self, n_blocks: int) -> list[int]:
        if self.blocks == "all":
            return list(range(n_blocks))
        k = int(self.blocks)
        if not 1 <= k <= n_blocks:
            raise ValueError(f"blocks: expected 'all' or 1..{n_blocks}, got {self.blocks!r}")
        return sorted({int(round(x)) for x in np.linspace(n_blocks - 1, 0, k)[::-1]})
