"""Model configurations: MF² (architecture presets and loss switches) and DFN (its side
pathways); kept apart from training settings (``mf2.training.loop.TrainConfig``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# The paper's Q-Former is BERT-base sized (Table VI; 186.7M trainable parameters per branch).
PRESETS = {
    "paper": dict(hidden=768, layers=12, heads=12, ffn=3072, queries=32, au_queries=32, au_align_per_image=12),
    "small": dict(hidden=128, layers=2, heads=4, ffn=512, queries=8, au_queries=4, au_align_per_image=3),
}
PAPER_PARAMS = {"emo_vl": 186.7e6, "au_vl": 186.7e6, "mf2": 373.4e6}
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
    vision_dim: int = 0  # from the cache
    text_dim: int = 0  # from the cache
    vocab: list = field(default_factory=list)  # ITG sub-vocabulary: original token ids, index 0 = PAD, 1 = BOS
    max_text_len: int = 169
    emo_vl: bool = True
    au_vl: bool = True
    emo_text: str = "emotion"  # which caption Emo-VL aligns with
    loss_weights: dict = field(default_factory=lambda: {"itc": 1.0, "itm": 1.0, "itg": 1.0, "cls": 1.0})

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "MF2Config":
        if preset not in PRESETS:
            raise ValueError(f"preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
        return cls(preset=preset, **{**PRESETS[preset], **overrides})

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

    def to_dict(self) -> dict:
        return asdict(self)

    def block_indices(self, n_blocks: int) -> list[int]:
        if self.blocks == "all":
            return list(range(n_blocks))
        k = int(self.blocks)
        if not 1 <= k <= n_blocks:
            raise ValueError(f"blocks: expected 'all' or 1..{n_blocks}, got {self.blocks!r}")
        return sorted({int(round(x)) for x in np.linspace(n_blocks - 1, 0, k)[::-1]})
