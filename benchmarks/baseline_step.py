"""The MF² pretraining step as it was before issue 26 (commit ffaa616), frozen: the Q-Former
passes, the ITC/ITM/ITG losses and ``MF2.forward``, verbatim but for the legacy-checkpoint
loading, ``generate`` and ``compile_blocks``. Parameter names are those of ``mf2.models.mf2.MF2``,
so a model's ``state_dict`` loads into ``BaselineMF2`` unchanged.

* tests/test_step_equality.py: the current step's losses and gradients equal this one's.
* ``benchmarks/epoch_time.py --baseline`` (every Table IV row, the DFN rows reading its frozen
  passes) and ``benchmarks/step_profile.py``: its time, memory, kernel launches, bytes written
  and host synchronisations beside the current code's, in one run.

Not for training: the code here does not move with the project.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mf2 import distributed
from mf2.data.labels import N_AU, N_EMOTIONS
from mf2.models.config import MF2Config
from mf2.models.mf2 import emotion_input, task_losses
from mf2.models.outputs import ImageFeatures, StepOutput
from mf2.models.qformer import BOS, CHECKPOINTING, UNK


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused query/key/value projection. ``past`` holds
    keys and values [B, heads, P, d] of P positions computed before (the queries of the image
    pass) that every position here may attend to, ahead of its own."""

    def __init__(self, hidden: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.o = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, past: tuple | None = None):
        """x [B, L, H], mask bool [B, 1, L, P + L] (True = may attend; None = all) ->
        (out [B, L, H], (keys, values) [B, heads, L, d] of these positions)."""
        B, L, H = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)
        keys, values = (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)) if past is not None else (k, v)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.o(out.transpose(1, 2).reshape(B, L, H)), (k, v)


class CrossAttention(nn.Module):
    """The queries attending to the (projected) visual tokens."""

    def __init__(self, hidden: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(hidden, 2 * hidden)
        self.o = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
        """x [B, Q, H] (queries), vision [B, T, H] -> [B, Q, H]."""
        B, Q, H = x.shape
        d = H // self.heads
        q = self.q(x).view(B, Q, self.heads, d).transpose(1, 2)
        k, v = self.kv(vision).view(B, vision.shape[1], 2, self.heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.o(out.transpose(1, 2).reshape(B, Q, H))


class QFormerLayer(nn.Module):
    """Post-LN block: shared self-attention, cross-attention for queries, shared FFN."""

    def __init__(self, cfg: MF2Config):
        super().__init__()
        H = cfg.hidden
        self.self_attn = SelfAttention(H, cfg.heads, dropout=cfg.dropout)
        self.cross_attn = CrossAttention(H, cfg.heads, dropout=cfg.dropout)  # keys/values: projected visual tokens
        self.ffn = nn.Sequential(nn.Linear(H, cfg.ffn), nn.GELU(), nn.Linear(cfg.ffn, H))
        self.ln_self, self.ln_cross, self.ln_ffn = nn.LayerNorm(H), nn.LayerNorm(H), nn.LayerNorm(H)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, n_query: int, mask, vision, past=None):
        """x [B, L, H] whose first ``n_query`` positions are queries -> (x [B, L, H], this
        block's self-attention (keys, values) of x)."""
        attended, kv = self.self_attn(x, mask, past)
        x = self.ln_self(x + self.drop(attended))
        if n_query and vision is not None:
            q = x[:, :n_query]
            q = self.ln_cross(q + self.drop(self.cross_attn(q, vision)))
            x = torch.cat([q, x[:, n_query:]], 1) if x.shape[1] > n_query else q
        return self.ln_ffn(x + self.drop(self.ffn(x))), kv


class QFormer(nn.Module):
    def __init__(self, cfg: MF2Config, n_queries: int):
        super().__init__()
        H = cfg.hidden
        self.n_queries = n_queries
        self.query_tokens = nn.Parameter(torch.randn(1, n_queries, H) * 0.02)
        self.text_in = nn.Linear(cfg.text_dim, H)  # frozen encoder states -> hidden
        self.tok_embed = nn.Embedding(max(len(cfg.vocab), 2), H)  # ITG: ids -> hidden
        self.pos_embed = nn.Embedding(cfg.max_text_len, H)
        self.ln_text = nn.LayerNorm(H)
        self.layers = nn.ModuleList(QFormerLayer(cfg) for _ in range(cfg.layers))
        self.checkpointing = "none"  # set by the trainer: one of CHECKPOINTING

    def _run(self, x, n_query, mask, vision, all_layers: bool = False, keep_kv: bool = False, past=None,
             itm: bool = False):
        """Every block over x; returns (the last block's output, or every block's stacked
        [N, ...] with ``all_layers``; the per-block query (keys, values) with ``keep_kv``).
        Blocks are recomputed one at a time in the backward when checkpointing covers this pass."""
        outs, kvs = [], []
        recompute = torch.is_grad_enabled() and (self.checkpointing == "all" or (itm and self.checkpointing == "itm"))
        for i, layer in enumerate(self.layers):
            p = past[i] if past is not None else None
            if recompute:
                x, kv = checkpoint(layer, x, n_query, mask, vision, p, use_reentrant=False)
            else:
                x, kv = layer(x, n_query, mask, vision, p)
            if all_layers:
                outs.append(x)
            if keep_kv:
                kvs.append(kv)
        return (torch.stack(outs) if all_layers else x), kvs

    def image(self, vision: torch.Tensor, all_layers: bool = False, keep_kv: bool = False):
        """vision [B, T, H] (projected) -> query outputs [B, Q, H] (every block's: [N, B, Q, H]);
        with ``keep_kv`` also each block's query (keys, values) [B, heads, Q, d], for ``decode``."""
        out, kvs = self._run(self.query_tokens.expand(vision.shape[0], -1, -1), self.n_queries, None, vision,
                             all_layers, keep_kv)
        return (out, kvs) if keep_kv else out

    def text(self, states: torch.Tensor, mask: torch.Tensor, all_layers: bool = False) -> torch.Tensor:
        """Frozen encoder states [B, L, D] + mask [B, L] -> text outputs [B, L, H] ([N, B, L, H])."""
        keys = mask[:, None, None, :]
        return self._run(self.ln_text(self.text_in(states)), 0, keys, None, all_layers)[0]

    def joint(self, vision, states, mask) -> torch.Tensor:
        """Bidirectional queries + text; returns the query outputs [B, Q, H]."""
        B, Q = vision.shape[0], self.n_queries
        x = torch.cat([self.query_tokens.expand(B, -1, -1), self.ln_text(self.text_in(states))], 1)
        keys = torch.cat([mask.new_ones(B, Q), mask], 1)[:, None, None, :]
        return self._run(x, Q, keys, vision, itm=True)[0][:, :Q]

    def decode(self, vision, ids, mask, past=None) -> torch.Tensor:
        """Causal text from token ids [B, L] (sub-vocabulary) after the queries of the image
        pass -> text outputs [B, L, H]. ``past`` is the image pass's per-block query (keys,
        values) (``image(..., keep_kv=True)``); computed from ``vision`` when not given."""
        if past is None:
            past = self.image(vision, keep_kv=True)[1]
        B, L = ids.shape
        Q = past[0][0].shape[2]
        pos = torch.arange(L, device=ids.device)
        x = self.ln_text(self.tok_embed(ids) + self.pos_embed(pos))
        causal = torch.tril(torch.ones(L, L, dtype=torch.bool, device=ids.device))
        allow = torch.cat([mask.new_ones(B, L, Q), causal & mask[:, None, :]], 2)  # text sees every query
        return self._run(x, 0, allow[:, None], None, past=past)[0]


def _smoothed_ce(logits, targets, allowed, eps: float):
    """Cross-entropy with label smoothing spread over the allowed candidates only (masked-out
    duplicates have probability 0 and must receive no target mass)."""
    logp = F.log_softmax(logits, 1)
    nll = -logp.gather(1, targets[:, None]).squeeze(1)
    smooth = -(logp * allowed).sum(1) / allowed.sum(1).clamp(min=1)
    return ((1 - eps) * nll + eps * smooth).mean()


class VLBranch(nn.Module):
    """One Q-Former with the BLIP-2 heads: ITC projections and temperature, ITM head, LM head."""

    def __init__(self, cfg: MF2Config, n_queries: int, vision_dim: int | None = None):
        super().__init__()
        self.cfg = cfg
        # Visual tokens (``vision_dim`` wide; the config's by default) are projected to the Q-Former
        # width once per forward: every layer of every pass (image, 3x ITM, ITG) then reads H-wide
        # keys/values instead of C-wide ones.
        vision_dim = vision_dim or cfg.vision_dim
        self.vision_in = nn.Sequential(nn.LayerNorm(vision_dim), nn.Linear(vision_dim, cfg.hidden))
        self.qformer = QFormer(cfg, n_queries)
        self.vision_proj = nn.Linear(cfg.hidden, cfg.embed_dim)
        self.text_proj = nn.Linear(cfg.hidden, cfg.embed_dim)
        self.temp = nn.Parameter(torch.tensor(float(cfg.temperature)))
        self.itm_head = nn.Linear(cfg.hidden, 2)
        self.lm_head = nn.Linear(cfg.hidden, max(len(cfg.vocab), 2))

    def itc_similarity(self, query_out, text_cls):
        """[B, B_all] image->text similarities (float32): max over queries of cosine / temperature.
        query_out [B, Q, H]; text_cls [B, H] (the text pass's CLS output)."""
        with torch.autocast(query_out.device.type, enabled=False):  # small, and the softmax is sharp
            img = F.normalize(self.vision_proj(query_out.float()), dim=-1)  # [B, Q, E]
            txt = F.normalize(self.text_proj(text_cls.float()), dim=-1)  # [B, E]
            img_all, txt_all = distributed.gather(img), distributed.gather(txt)
            temp = self.temp.clamp(0.001, 0.5)
            sim_i2t = torch.einsum("bqe,ne->bqn", img, txt_all).amax(1) / temp
            sim_t2i = torch.einsum("be,nqe->bnq", txt, img_all).amax(2) / temp
        return sim_i2t, sim_t2i

    def image(self, tokens: torch.Tensor, keep_kv: bool = False):
        """Visual tokens [B, T, C] -> (projected tokens [B, T, H], query outputs [B, Q, H]) and,
        with ``keep_kv``, the per-block query (keys, values) that ITG decoding reuses."""
        vision = self.vision_in(tokens)
        out = self.qformer.image(vision, keep_kv=keep_kv)
        return (vision, *out) if keep_kv else (vision, out)

    def text_cls(self, states: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The text pass's CLS output [B, H]; identical texts of the batch (same token ids, e.g.
        the 'at rest' sentence of one AU) run once."""
        unique, inverse, counts = torch.unique(ids, dim=0, return_inverse=True, return_counts=True)
        if len(unique) == len(ids):
            return self.qformer.text(states, mask)[:, 0]
        first = inverse.argsort(stable=True)[torch.cumsum(counts, 0) - counts]  # one row of each text
        return self.qformer.text(states[first], mask[first])[:, 0][inverse]

    def losses(self, vision, query_out, states, mask, ids, generator=None, past=None) -> tuple[dict, int]:
        """ITC, ITM and ITG for a batch whose rows all carry text, and the number of ITC
        candidates each row was contrasted with (the batch gathered from every rank).

        vision [B, T, H] (projected, from ``image``); query_out [B, Q, H] and past (its per-block
        query keys and values; recomputed when None) from the image pass; states [B, L, D] and
        mask [B, L] (frozen text); ids [B, L] (sub-vocabulary, 0 = CLS)."""
        B = vision.shape[0]
        L = distributed.max_over_ranks(ids.shape[1], ids.device)
        if L > ids.shape[1]:  # same text length on every rank, so the batches can be gathered
            pad = L - ids.shape[1]
            ids, mask, states = F.pad(ids, [0, pad]), F.pad(mask, [0, pad]), F.pad(states, [0, 0, 0, pad])
        sim_i2t, sim_t2i = self.itc_similarity(query_out, self.text_cls(states, mask, ids))
        ids_all = distributed.gather(ids)
        offset = distributed.rank_offset(B, ids.device)
        targets = torch.arange(B, device=ids.device) + offset
        # identical texts (e.g. two 'at rest' sentences) are not negatives of each other
        _, text_key = torch.unique(ids_all, dim=0, return_inverse=True)
        same = text_key[offset:offset + B, None] == text_key[None, :]
        same[torch.arange(B), targets] = False
        neg_inf = torch.finfo(sim_i2t.dtype).min
        sim_i2t = sim_i2t.masked_fill(same, neg_inf)
        sim_t2i = sim_t2i.masked_fill(same, neg_inf)
        itc = (_smoothed_ce(sim_i2t, targets, ~same, 0.1) + _smoothed_ce(sim_t2i, targets, ~same, 0.1)) / 2

        # ITM: one hard negative text per image and one hard negative image per text
        with torch.no_grad():
            blocked = same.clone()
            blocked[torch.arange(B), targets] = True
            w_i2t = F.softmax(sim_i2t.float(), 1).masked_fill(blocked, 0)
            w_t2i = F.softmax(sim_t2i.float(), 1).masked_fill(blocked, 0)
            others = (~torch.eye(w_i2t.shape[1], dtype=torch.bool, device=w_i2t.device)[targets]).float()
            # a row with nothing but duplicates draws from any other row
            w_i2t = torch.where(w_i2t.sum(1, keepdim=True) <= 0, others, w_i2t)
            w_t2i = torch.where(w_t2i.sum(1, keepdim=True) <= 0, others, w_t2i)
            if w_i2t.shape[1] == 1:
                neg_text = neg_image = targets
            else:
                neg_text = torch.multinomial(w_i2t, 1, generator=generator).squeeze(1)
                neg_image = torch.multinomial(w_t2i, 1, generator=generator).squeeze(1)
        vision_all = distributed.gather(vision)
        states_all, mask_all = distributed.gather(states), distributed.gather(mask)
        v = torch.cat([vision, vision_all[neg_image], vision])
        s = torch.cat([states, states, states_all[neg_text]])
        m = torch.cat([mask, mask, mask_all[neg_text]])
        itm_logits = self.itm_head(self.qformer.joint(v, s, m)).float().mean(1)
        itm_labels = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long().to(ids.device)
        itm = F.cross_entropy(itm_logits, itm_labels)

        # ITG: BOS replaces CLS; predict each next token from the queries and earlier tokens.
        # Logits only where a next token exists (the output layer spans the whole ITG vocabulary).
        dec_ids = ids.clone()
        dec_ids[:, 0] = BOS
        hidden = self.qformer.decode(vision, dec_ids, mask, past)[:, :-1]
        target = mask[:, 1:].nonzero(as_tuple=True)  # (row, position) of every next token
        logits = self.lm_head(hidden[target])
        itg = F.cross_entropy(logits.float(), ids[:, 1:][target], label_smoothing=self.cfg.label_smoothing)
        return {"itc": itc, "itm": itm, "itg": itg}, sim_i2t.shape[1]


class BaselineMF2(nn.Module):
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
        ("none"); the losses and gradients are the same either way."""
        if mode not in CHECKPOINTING:
            raise ValueError(f"activation checkpointing: expected one of {', '.join(CHECKPOINTING)}, got {mode!r}")
        for branch in (self.emo_vl, self.au_vl):
            if branch is not None:
                branch.qformer.checkpointing = mode


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
            out.emo_kv = kv[0] if kv else None
        if self.au_vl is not None:
            B = au_tokens.shape[0]
            vision, q, *kv = self.au_vl.image(au_tokens.flatten(0, 1), keep_kv)
            out.au_vision, out.au, out.au_kv = vision, q.view(B, N_AU, *q.shape[1:]), kv[0] if kv else None
        return out

    def heads(self, feats: ImageFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """(emotion logits [B, 8], AU logits [B, 12]) from the image features."""
        pooled = feats.emo.mean(1) if feats.emo is not None else None
        au_pooled = feats.au.mean(2) if feats.au is not None else None  # [B, 12 sequences, H]
        emotion = self.emotion_head(emotion_input(self.cfg, pooled, au_pooled))
        if feats.au is not None:
            per_seq = self.au_head(au_pooled)  # [B, 12 sequences, 12 outputs]
            au = per_seq.diagonal(dim1=1, dim2=2)  # AU k from its own sequence
        else:
            au = self.au_head(feats.emo.mean(1))
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
                au_pos_weight: torch.Tensor | None = None) -> StepOutput:
        """Losses of one batch (see ``mf2.features.reader`` for the batch layout); ``align=False``
        keeps the task losses only (full fine-tuning, the "w/o DFN" row); ``au_pos_weight`` [12]
        weighs each AU's positives in its BCE."""
        feats = self.image_features(batch.get("tokens"), batch.get("au_tokens"), keep_kv=align)
        emotion, au = self.heads(feats)
        w = self.cfg.loss_weights
        losses, info = task_losses(emotion, au, batch["emotion"], batch["aus"], tasks, au_pos_weight), {}
        if align and self.emo_vl is not None and "emo_text" in batch:
            ids, mask, states, has = batch["emo_text"]
            rows = has.nonzero().squeeze(1)  # the rows with a caption (one host sync)
            if len(rows) >= 2:
                pick = lambda t: t.index_select(0, rows)  # noqa: E731
                part, n = self.emo_vl.losses(pick(feats.emo_vision), pick(feats.emo), pick(states), pick(mask),
                                             self.sub_ids(pick(ids)), generator, _rows(feats.emo_kv, rows))
                losses.update({f"emo_{k}": v for k, v in part.items()})
                info["emo_itc_candidates"] = torch.tensor(float(n))
        if align and self.au_vl is not None and "au_text" in batch:
            ids, mask, states, has = batch["au_text"]  # [B, 12, L], ..., has [B, 12]
            has = has & self._align_subset(batch["aus"], generator)
            rows = has.flatten().nonzero().squeeze(1)  # the aligned AU sequences, image-major
            if len(rows) >= 2:
                pick = lambda t: t.flatten(0, 1).index_select(0, rows)  # noqa: E731
                part, n = self.au_vl.losses(feats.au_vision.index_select(0, rows), pick(feats.au), pick(states),
                                            pick(mask), self.sub_ids(pick(ids)), generator, _rows(feats.au_kv, rows))
                losses.update({f"au_{k}": v for k, v in part.items()})
                info["au_itc_candidates"] = torch.tensor(float(n))
        total = sum(v * w.get(k.split("_", 1)[1] if k.endswith(("itc", "itm", "itg")) else "cls", 1.0)
                    for k, v in losses.items())
        return StepOutput(total, {**{k: v.detach() for k, v in losses.items()}, **info}, emotion.detach(), au.detach())


def _rows(kv: list, rows: torch.Tensor) -> list:
    """The rows ``rows`` (indices into the batch) of every block's (keys, values)."""
    return [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in kv]
