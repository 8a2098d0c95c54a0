"""What the models hand to each other and to their trainers, typed, with shapes.

B = images in the batch, T = global visual tokens, T' = an AU's local tokens (2R²), H = the
Q-Former width, Q / Q' = Emo-VL / AU-VL queries, N = Q-Former blocks, C / D = the frozen vision /
text encoder widths, 12 = the AUs (``mf2.data.labels.AUS`` order).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch


@dataclass
class ImageFeatures:
    """MF²'s image-only passes (what prediction reads; the alignment losses reuse them). A
    branch that the model does not have leaves its fields None.

    emo_vision [B, T, H]: Emo-VL's projected global tokens; emo [B, Q, H]: its query outputs.
    au_vision [B*12, T', H]: AU-VL's projected local tokens, the 12 AUs of image b at rows
    12b..12b+11; au [B, 12, Q', H]: its query outputs per AU.
    emo_kv / au_kv (only when asked for): per block, the queries' self-attention (keys, values)
    [B (B*12 for AU-VL), heads, Q, H / heads], which ITG decoding attends to.
    emo_cross / au_cross (with them): per block, the cross-attention (keys, values) of the
    projected visual tokens [B (B*12), heads, T (T'), H / heads], which ITM's rows of the same
    images attend to."""

    emo_vision: torch.Tensor | None = None
    emo: torch.Tensor | None = None
    au_vision: torch.Tensor | None = None
    au: torch.Tensor | None = None
    emo_kv: list | None = None
    au_kv: list | None = None
    emo_cross: list | None = None
    au_cross: list | None = None


@dataclass
class StepOutput:
    """One training forward: the loss to minimise and its parts.

    loss []: the weighted sum; logs: name -> detached scalar (each loss, e.g. ``emo_itc``,
    ``au_cls``, and counts such as ``emo_itc_candidates``), averaged into the epoch's log row
    as ``train_<name>``; emotion_logits [B, 8] and au_logits [B, 12], detached (None where the
    step has none)."""

    loss: torch.Tensor
    logs: dict = field(default_factory=dict)
    emotion_logits: torch.Tensor | None = None
    au_logits: torch.Tensor | None = None


@dataclass
class BlockOutputs:
    """The frozen MF²'s per-block pooled outputs that DFN's side pathways read, with the
    pathways' start vectors (the frozen encoders' last-layer CLS) and the labels. Cached once
    per run in ``dfn_cache.zarr``, one array per field; a branch or a text type the model or
    cache lacks leaves its fields None.

    emotion [B]; aus [B, 12] (labels, -1 = missing);
    emo_v_start [B, C], emo_v_h [B, N, H]: Emo-VL vision (pooled visual token; query means);
    au_v_start [B, 12, C], au_v_h [B, 12, N, H]: AU-VL vision, per AU;
    emo_t_start [B, D], emo_t_h [B, N, H], emo_t_has [B]: Emo-VL text (caption CLS; text CLS
    per block; rows without a caption hold zeros and has = False);
    au_t_start [B, 12, D], au_t_h [B, 12, N, H], au_t_has [B, 12]: AU-VL text, per AU sentence."""

    emotion: torch.Tensor | None = None
    aus: torch.Tensor | None = None
    emo_v_start: torch.Tensor | None = None
    emo_v_h: torch.Tensor | None = None
    au_v_start: torch.Tensor | None = None
    au_v_h: torch.Tensor | None = None
    emo_t_start: torch.Tensor | None = None
    emo_t_h: torch.Tensor | None = None
    emo_t_has: torch.Tensor | None = None
    au_t_start: torch.Tensor | None = None
    au_t_h: torch.Tensor | None = None
    au_t_has: torch.Tensor | None = None

    def arrays(self) -> dict:
        """Field name -> tensor, for the fields that are set."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "BlockOutputs":
        known = {f.name for f in fields(cls)}
        unknown = set(arrays) - known
        if unknown:
            raise ValueError(f"block outputs: unknown arrays {sorted(unknown)}")
        return cls(**arrays)

    def to(self, device, non_blocking: bool = False) -> "BlockOutputs":
        return BlockOutputs(**{k: v.to(device, non_blocking=non_blocking) for k, v in self.arrays().items()})

    def __len__(self) -> int:
        return len(next(iter(self.arrays().values())))
