"""MF²: Emo-VL (global tokens + emotion captions) and AU-VL (each AU's local tokens + that AU's
sentence; the 12 AUs as a batch of B x 12 sequences through one Q-Former), and the task heads.

Task heads read whichever branches exist, so each ablation row still predicts both tasks:
emotion from Emo-VL's pooled queries (else AU-VL's, averaged over the AUs; with
``emotion_reads="global+au"`` beside every AU sequence's pooled queries, ``emotion_input``); each
AU from its own AU-VL sequence (else from Emo-VL's pooled queries). Missing labels (-1) are
masked out.
Prediction uses images only (Appendix G).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mf2.data.labels import N_AU, N_EMOTIONS
from mf2.models.config import MF2Config
from mf2.models.losses import MF2_LOSSES, task_losses, weighted_total
from mf2.models.outputs import ImageFeatures, StepOutput
from mf2.models.qformer import CHECKPOINTING, UNK, VLBranch


def emotion_input(cfg: MF2Config, pooled: torch.Tensor | None, au: torch.Tensor | None) -> torch.Tensor:
    """The emotion head's input from Emo-VL's pooled state [B, H] and the AU sequences' pooled
    states [B, 12, H] (either may be None, for the ablations): ``cfg.emotion_reads``, width
    ``cfg.emotion_input_dim()``. Shared by MF² and DFN."""
    if pooled is None:
        return au.mean(1)
    if au is None or cfg.emotion_reads == "global":
        return pooled
    return torch.cat([pooled, au.flatten(1)], 1)


@dataclass
class HeadRegularisation:
    """Small-data regularisers of the task heads while training (``TrainConfig``; all off by
    default): ``emotion_smoothing``, label smoothing of the emotion cross-entropy; ``dropout``, of
    the heads' inputs (the pooled query outputs); ``mixup``, each row's head inputs and labels mixed
    with another row's of the batch, the other's share drawn in [0, ``mixup``] (feature mixup)."""

    emotion_smoothing: float = 0.0
    dropout: float = 0.0
    mixup: float = 0.0

    def mix(self, n: int, device, generator=None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(partner row of each row [n], the partner's share [n]) for this batch, or None (off)."""
        if not self.mixup:
            return None
        perm = torch.randperm(n, generator=generator, device=device)
        return perm, self.mixup * torch.rand(n, generator=generator, device=device)


def _mixed(x: torch.Tensor, mix) -> torch.Tensor:
    perm, share = mix
    w = share.view(-1, *[1] * (x.dim() - 1)).to(x.dtype)
    return (1 - w) * x + w * x.index_select(0, perm)


class MF2(nn.Module):
    LOSSES = MF2_LOSSES  # loss name -> the key of the weight it takes (``cfg.loss_weights``)

    def __init__(self, cfg: MF2Config):
        super().__init__()
        if not (cfg.emo_vl or cfg.au_vl):
            raise ValueError("at least one branch (Emo-VL or AU-VL) is needed")
        if not cfg.vocab:
            raise ValueError("cfg.vocab (the ITG sub-vocabulary) is empty: build it from the cache")
        self.cfg = cfg
        self.emo_vl = VLBranch(cfg, cfg.queries) if cfg.emo_vl else None
        self.au_vl = VLBranch(cfg, cfg.au_queries, cfg.au_vision_dim or cfg.vision_dim) if cfg.au_vl else None
        self.emotion_head = nn.Linear(cfg.emotion_input_dim(), N_EMOTIONS)
        self.au_head = nn.Linear(cfg.hidden, N_AU)
        # cfg.vocab[i] is the original token id of sub-vocabulary index i; negative = special
        # (index 0 PAD keeps id 0, 1 = BOS, 2 = UNK for ids never seen in training)
        ids = torch.tensor(cfg.vocab)
        lookup = torch.full((int(ids.max()) + 1,), UNK, dtype=torch.long)
        lookup[ids[ids >= 0]] = torch.arange(len(ids))[ids >= 0]
        self.register_buffer("vocab_lookup", lookup, persistent=False)

    def set_activation_checkpointing(self, mode: str) -> None:
        """Recompute, in the backward, the ITM passes ("itm"), every pass ("all") or nothing
        ("none"); "itm-selective" / "all-selective" recompute only those passes' element-wise
        operations. The losses and gradients are the same either way."""
        if mode not in CHECKPOINTING:
            raise ValueError(f"activation checkpointing: expected one of {', '.join(CHECKPOINTING)}, got {mode!r}")
        for branch in (self.emo_vl, self.au_vl):
            if branch is not None:
                branch.qformer.checkpointing = mode

    def compile_blocks(self) -> None:
        """Compile each Q-Former block with ``torch.compile`` (dynamic shapes: one graph serves
        every pass and text length): its element-wise chains (residuals, layer norms, dropout,
        GELU) become a few fused kernels. The parameters and their names stay as they are."""
        import torch._dynamo

        # one block's code serves four passes (image, text, ITM, decode) with and without masks,
        # vision and past keys: more variants than dynamo's default limit of 8
        torch._dynamo.config.recompile_limit = max(64, torch._dynamo.config.recompile_limit)
        for branch in (self.emo_vl, self.au_vl):
            if branch is not None:
                for layer in branch.qformer.layers:
                    layer.compile(dynamic=True)

    def sub_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Original token ids -> ITG sub-vocabulary indices."""
        return self.vocab_lookup[ids.long().clamp(0, len(self.vocab_lookup) - 1)]

    def image_features(self, tokens: torch.Tensor | None, au_tokens: torch.Tensor | None,
                       keep_kv: bool = False) -> ImageFeatures:
        """The image-only passes of both branches: global tokens [B, T, C] and AU tokens
        [B, 12, T', C] -> query outputs and the projected visual tokens the losses reuse (and
        with ``keep_kv`` the queries' keys and values that ITG decoding attends to)."""
        out = ImageFeatures()
        if self.emo_vl is not None:
            out.emo_vision, out.emo, *kv = self.emo_vl.image(tokens, keep_kv)
            out.emo_kv, out.emo_cross = kv if kv else (None, None)
        if self.au_vl is not None:
            B = au_tokens.shape[0]
            vision, q, *kv = self.au_vl.image(au_tokens.flatten(0, 1), keep_kv)
            out.au_vision, out.au = vision, q.view(B, N_AU, *q.shape[1:])
            out.au_kv, out.au_cross = kv if kv else (None, None)
        return out

    def heads(self, feats: ImageFeatures, regularisation: HeadRegularisation | None = None,
              mix=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(emotion logits [B, 8], AU logits [B, 12]) from the image features (in training, with
        ``regularisation``'s dropout of the heads' inputs and ``mix``, its mixup draw)."""
        pooled = feats.emo.mean(1) if feats.emo is not None else None
        au_pooled = feats.au.mean(2) if feats.au is not None else None  # [B, 12 sequences, H]
        emotion_in = emotion_input(self.cfg, pooled, au_pooled)
        au_in = au_pooled if feats.au is not None else feats.emo.mean(1)
        if regularisation is not None and self.training:
            if mix is not None:
                emotion_in, au_in = _mixed(emotion_in, mix), _mixed(au_in, mix)
            if regularisation.dropout:
                emotion_in = F.dropout(emotion_in, regularisation.dropout)
                au_in = F.dropout(au_in, regularisation.dropout)
        emotion = self.emotion_head(emotion_in)
        if feats.au is not None:
            per_seq = self.au_head(au_in)  # [B, 12 sequences, 12 outputs]
            au = per_seq.diagonal(dim1=1, dim2=2)  # AU k from its own sequence
        else:
            au = self.au_head(au_in)
        return emotion, au

    def _align_subset(self, aus: torch.Tensor, generator=None) -> torch.Tensor:
        """[B, 12] mask of the AU sequences that join the alignment losses this step."""
        k = self.cfg.au_align_per_image
        if k >= N_AU:
            return torch.ones_like(aus, dtype=torch.bool)
        score = torch.rand(aus.shape, generator=generator, device=aus.device) + (aus == 1).float()
        chosen = score.topk(k, dim=1).indices
        return torch.zeros_like(aus, dtype=torch.bool).scatter_(1, chosen, True)

    @torch.no_grad()
    def predict(self, tokens, au_tokens) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities from images only: emotion softmax [B, 8], AU sigmoid [B, 12]."""
        emotion, au = self.heads(self.image_features(tokens, au_tokens))
        return emotion.float().softmax(-1), au.float().sigmoid()

    def forward(self, batch: dict, tasks: str = "both", generator=None, align: bool = True,
                au_pos_weight: torch.Tensor | None = None,
                regularisation: HeadRegularisation | None = None) -> StepOutput:
        """Losses of one batch (see ``mf2.features.reader`` for the batch layout); ``align=False``
        keeps the task losses only (full fine-tuning, the "w/o DFN" row); ``au_pos_weight`` [12]
        weighs each AU's positives in its BCE; ``regularisation``: the heads' small-data
        regularisers (the alignment losses always see the unmixed features)."""
        feats = self.image_features(batch.get("tokens"), batch.get("au_tokens"), keep_kv=align)
        mix = regularisation.mix(len(batch["emotion"]), batch["emotion"].device, generator) \
            if regularisation is not None and self.training else None
        emotion, au = self.heads(feats, regularisation, mix)
        losses, info = task_losses(emotion, au, batch["emotion"], batch["aus"], tasks, au_pos_weight,
                                   regularisation.emotion_smoothing if regularisation is not None else 0.0, mix), {}
        if align and self.emo_vl is not None and "emo_text" in batch:
            ids, mask, states, has = batch["emo_text"]
            rows = has.nonzero().squeeze(1)  # the rows with a caption (one host sync)
            if len(rows) >= 2:
                captioned = [_select(t, rows) for t in (feats.emo_vision, feats.emo, states, mask, ids)]
                vision, queries, states_c, mask_c, ids_c = captioned
                part, n = self.emo_vl.losses(vision, queries, states_c, mask_c, self.sub_ids(ids_c), generator,
                                             _rows(feats.emo_kv, rows), _rows(feats.emo_cross, rows))
                losses.update({f"emo_{k}": v for k, v in part.items()})
                info["emo_itc_candidates"] = torch.tensor(float(n))
        if align and self.au_vl is not None and "au_text" in batch:
            ids, mask, states, has = batch["au_text"]  # [B, 12, L], ..., has [B, 12]
            has = has & self._align_subset(batch["aus"], generator)
            rows = has.flatten().nonzero().squeeze(1)  # the aligned AU sequences, image-major
            if len(rows) >= 2:
                # the aligned AU sequences of [B, 12, ...] tensors, as rows of [B * 12, ...]
                queries, states_a, mask_a, ids_a = (_select(t.flatten(0, 1), rows)
                                                    for t in (feats.au, states, mask, ids))
                part, n = self.au_vl.losses(_select(feats.au_vision, rows), queries, states_a, mask_a,
                                            self.sub_ids(ids_a), generator, _rows(feats.au_kv, rows),
                                            _rows(feats.au_cross, rows))
                losses.update({f"au_{k}": v for k, v in part.items()})
                info["au_itc_candidates"] = torch.tensor(float(n))
        total = weighted_total(losses, self.LOSSES, self.cfg.loss_weights)
        return StepOutput(total, {**{k: v.detach() for k, v in losses.items()}, **info}, emotion.detach(), au.detach())


def _select(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The rows ``rows`` (sorted indices, from ``nonzero``) of ``t``; ``t`` itself when they are
    all of them (the paper's 12 aligned AU sequences a face: no copy)."""
    return t if len(rows) == t.shape[0] else t.index_select(0, rows)


def _rows(kv: list, rows: torch.Tensor) -> list:
    """The rows ``rows`` (indices into the batch) of every block's (keys, values)."""
    return [(_select(k, rows), _select(v, rows)) for k, v in kv]


def trainable(module: nn.Module | None) -> int:
    """Trainable parameters of a module (0 for None)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad) if module is not None else 0


def count_parameters(model: MF2) -> dict:
    """Trainable parameters per branch and in all (task heads counted in 'mf2')."""
    return {"emo_vl": trainable(model.emo_vl), "au_vl": trainable(model.au_vl), "mf2": trainable(model)}
