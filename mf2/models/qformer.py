"""The Q-Former of both MF² branches (BLIP-2 mechanics; SPEC §5), bottom-up: attention ->
layer -> Q-Former -> a vision-language branch with its alignment heads and losses.

Sequences are [learned queries | text]. Self-attention and FFN are shared by query and text
positions; cross-attention to the visual tokens exists for the query positions only. Modes:

* ``image``: queries alone (and cross-attention): image features, also used for prediction.
  It can keep each block's self-attention keys and values of the queries (``keep_kv``).
* ``text``: text alone, from the frozen encoder's token states (projected): the ITC text CLS.
* ``joint``: queries and text attend to each other (bidirectional): ITM. Its rows of an image
  with its own text and with a negative text reuse the image pass's cross-attention keys and
  values of that image (``keep_cross``); only the negative images' are projected.
* ``decode``: text tokens see every query and earlier text (causal); the queries' keys and
  values are the image pass's (as BLIP-2 reuses its ``past_key_values``), so only the text
  positions run. The text here is *embedded from token ids* -- never the frozen encoder's
  contextual states, which would leak later tokens: ITG.

Memory: ``checkpointing`` ("none" | "itm" | "all") recomputes, in the backward, one block at a
time, the ITM passes (which hold most of the activations: 3 sequences of queries and text per
pair) or every pass; the result is the same as without it (dropout masks are replayed).
"itm-selective" / "all-selective" keep the blocks' matrix products and attention outputs and
recompute only their element-wise operations (layer norms, GELU, dropout, residual sums, casts):
less memory saved than recomputing whole blocks, for a fraction of their recomputation
(PyTorch's selective activation checkpointing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from mf2 import distributed
from mf2.models.config import MF2Config

PAD, BOS, UNK = 0, 1, 2  # ITG sub-vocabulary indices
CHECKPOINTING = ("none", "itm", "all", "itm-selective", "all-selective")
_aten = torch.ops.aten
# what the selective modes keep: the outputs of matrix products and attention (every kernel of
# scaled_dot_product_attention, whichever the device picks); everything else is recomputed
KEPT = {getattr(_aten, name).default for name in (
    "mm", "addmm", "bmm", "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu") if hasattr(_aten, name)}


def _keep_products(ctx, op, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if op in KEPT else CheckpointPolicy.PREFER_RECOMPUTE


def _selective():
    return create_selective_checkpoint_contexts(_keep_products)


def _fuse_legacy(state_dict: dict, prefix: str, parts: tuple, fused: str) -> None:
    """Checkpoints written before the projections were fused held ``q``/``k``/``v`` (and for
    cross-attention ``k``/``v``) as separate Linears: concatenate them in place."""
    for kind in ("weight", "bias"):
        keys = [f"{prefix}{p}.{kind}" for p in parts]
        if all(k in state_dict for k in keys):
            state_dict[f"{prefix}{fused}.{kind}"] = torch.cat([state_dict.pop(k) for k in keys], 0)


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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _fuse_legacy(state_dict, prefix, ("q", "k", "v"), "qkv")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, past: tuple | None = None):
        """x [B, L, H], mask [B, 1, L | 1, P + L] (bool, True = may attend; or additive float, as
        ``attention_mask`` makes it; None = all) -> (out [B, L, H], (keys, values) [B, heads, L, d]
        of these positions)."""
        B, L, H = x.shape
        # split at the [3, heads, d] axis of each position: the backward stacks the three
        # gradients straight into the projection's [B, L, 3H] layout (no second copy)
        q, k, v = (t.transpose(1, 2) for t in self.qkv(x).view(B, L, 3, self.heads, H // self.heads).unbind(2))
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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _fuse_legacy(state_dict, prefix, ("k", "v"), "kv")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def keys_values(self, vision: torch.Tensor) -> tuple:
        """Projected visual tokens [B, T, H] -> (keys, values) [B, heads, T, d]."""
        B, T, H = vision.shape
        k, v = self.kv(vision).view(B, T, 2, self.heads, H // self.heads).unbind(2)
        return k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x: torch.Tensor, vision: torch.Tensor, image_kv: tuple | None = None):
        """x [R, Q, H] (queries), vision [B, T, H] -> (out [R, Q, H], (keys, values) of ``vision``).

        Without ``image_kv``, R = B: row b's queries attend to row b's tokens. With it (ITM), R = 3B
        rows [image b + its text | negative image + text b | image b + negative text]:
        the first and third thirds attend to image b's keys and values from the image pass
        (``image_kv`` [B, heads, T, d]), the second third to ``vision`` (the negative images).
        Cross-attention has no mask, so image b's two query sets run as one 2Q-long set against
        its keys: the same result as 3B separate rows, without projecting or copying the visual
        tokens for 3B rows."""
        R, Q, H = x.shape
        d = H // self.heads
        q = self.q(x).view(R, Q, self.heads, d).transpose(1, 2)
        kv = self.keys_values(vision)
        p = self.dropout if self.training else 0.0
        if image_kv is None:
            out = F.scaled_dot_product_attention(q, *kv, dropout_p=p)
        else:
            B = R // 3
            pos, neg_image, neg_text = q.split(B, 0)
            own = F.scaled_dot_product_attention(torch.cat([pos, neg_text], 2), *image_kv, dropout_p=p)
            own_pos, own_text = own.split(Q, 2)
            out = torch.cat([own_pos, F.scaled_dot_product_attention(neg_image, *kv, dropout_p=p), own_text], 0)
        return self.o(out.transpose(1, 2).reshape(R, Q, H)), kv


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

    def forward(self, x, n_query: int, mask, vision, past=None, image_kv=None):
        """x [B, L, H] whose first ``n_query`` positions are queries -> (x [B, L, H], this
        block's self-attention (keys, values) of x, its cross-attention (keys, values) of
        ``vision`` (None without vision)). ``image_kv``: see ``CrossAttention.forward`` (ITM)."""
        attended, kv = self.self_attn(x, mask, past)
        x = self.ln_self(x + self.drop(attended))
        cross = None
        if n_query and vision is not None:
            # split, not two slices: the backward then concatenates the two gradients once
            # instead of filling two full-size zero tensors and adding them
            q, text = x.split([n_query, x.shape[1] - n_query], 1)
            attended, cross = self.cross_attn(q, vision, image_kv)
            q = self.ln_cross(q + self.drop(attended))
            x = torch.cat([q, text], 1) if text.shape[1] else q
        return self.ln_ffn(x + self.drop(self.ffn(x))), kv, cross


def attention_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A boolean attention mask (True = may attend) as the additive float mask
    ``scaled_dot_product_attention`` turns it into at every call (0 / -inf), made once per pass:
    in the dtype attention runs in (autocast's when it is on, else ``like``'s), its last dimension
    allocated to a multiple of 16 and sliced back, the alignment the memory-efficient CUDA
    kernel requires of a mask (which it otherwise copies into at every call)."""
    device = like.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else like.dtype
    keys = mask.shape[-1]
    out = torch.zeros(*mask.shape[:-1], -(-keys // 16) * 16, dtype=dtype, device=mask.device)[..., :keys]
    return out.masked_fill_(~mask, float("-inf"))


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
             itm: bool = False, keep_cross: bool = False, image_kv=None):
        """Every block over x; returns (the last block's output, or every block's stacked
        [N, ...] with ``all_layers``; the per-block query (keys, values) with ``keep_kv``; the
        per-block cross-attention (keys, values) of ``vision`` with ``keep_cross``).
        ``image_kv``: per block, the image pass's cross-attention (keys, values) (ITM).
        Blocks are recomputed one at a time in the backward when checkpointing covers this pass."""
        outs, kvs, crosses = [], [], []
        if mask is not None and mask.dtype == torch.bool:
            mask = attention_mask(mask, x)
        scope, _, selective = self.checkpointing.partition("-")
        recompute = torch.is_grad_enabled() and (scope == "all" or (itm and scope == "itm"))
        extra = {"context_fn": _selective} if selective else {}
        for i, layer in enumerate(self.layers):
            p = past[i] if past is not None else None
            shared = image_kv[i] if image_kv is not None else None
            if recompute:
                x, kv, cross = checkpoint(layer, x, n_query, mask, vision, p, shared, use_reentrant=False, **extra)
            else:
                x, kv, cross = layer(x, n_query, mask, vision, p, shared)
            if all_layers:
                outs.append(x)
            if keep_kv:
                kvs.append(kv)
            if keep_cross:
                crosses.append(cross)
        return (torch.stack(outs) if all_layers else x), kvs, crosses

    def image(self, vision: torch.Tensor, all_layers: bool = False, keep_kv: bool = False, keep_cross: bool = False):
        """vision [B, T, H] (projected) -> query outputs [B, Q, H] (every block's: [N, B, Q, H]);
        with ``keep_kv`` also each block's query (keys, values) [B, heads, Q, d], for ``decode``;
        with ``keep_cross`` (after them) each block's cross-attention (keys, values) of the
        visual tokens [B, heads, T, d], which ITM's rows of the same images reuse (``joint``)."""
        out, kvs, crosses = self._run(self.query_tokens.expand(vision.shape[0], -1, -1), self.n_queries, None, vision,
                                      all_layers, keep_kv, keep_cross=keep_cross)
        if keep_cross:
            return out, kvs, crosses
        return (out, kvs) if keep_kv else out

    def text(self, states: torch.Tensor, mask: torch.Tensor, all_layers: bool = False) -> torch.Tensor:
        """Frozen encoder states [B, L, D] + mask [B, L] -> text outputs [B, L, H] ([N, B, L, H])."""
        keys = mask[:, None, None, :]
        return self._run(self.ln_text(self.text_in(states)), 0, keys, None, all_layers)[0]

    def joint(self, vision, states, mask, image_kv=None) -> torch.Tensor:
        """Bidirectional queries + text (ITM); returns the query outputs [R, Q, H]. Without
        ``image_kv``: row r's queries attend to vision [R, T, H]. With it (the image pass's
        per-block cross-attention (keys, values) of B images, ``image(..., keep_cross=True)``):
        R = 3B rows [image b + text b | negative image + text b | image b + negative text]
        and ``vision`` [B, T, H] holds the negative images only (``CrossAttention.forward``)."""
        B, Q = states.shape[0], self.n_queries
        x = torch.cat([self.query_tokens.expand(B, -1, -1), self.ln_text(self.text_in(states))], 1)
        keys = torch.cat([mask.new_ones(B, Q), mask], 1)[:, None, None, :]
        return self._run(x, Q, keys, vision, itm=True, image_kv=image_kv)[0][:, :Q]

    def decode(self, vision, ids, mask, past=None, start: int = 0, keep_kv: bool = False):
        """Causal text from token ids [B, L] (sub-vocabulary) after the queries of the image
        pass -> text outputs [B, L, H]. ``past`` is the image pass's per-block query (keys,
        values) (``image(..., keep_kv=True)``); computed from ``vision`` when not given. For
        step-by-step decoding ``past`` may also hold the keys and values of the ``start`` text
        positions decoded before (every one of them valid), and with ``keep_kv`` this pass's
        per-block (keys, values) of its L positions are returned too, to extend it."""
        if past is None:
            past = self.image(vision, keep_kv=True)[1]
        B, L = ids.shape
        P = past[0][0].shape[2]  # the queries, then any earlier text
        pos = torch.arange(start, start + L, device=ids.device)
        x = self.ln_text(self.tok_embed(ids) + self.pos_embed(pos))
        causal = torch.tril(torch.ones(L, L, dtype=torch.bool, device=ids.device))
        allow = torch.cat([mask.new_ones(B, L, P), causal & mask[:, None, :]], 2)  # text sees every query
        out, kvs, _ = self._run(x, 0, allow[:, None], None, past=past, keep_kv=keep_kv)
        return (out, kvs) if keep_kv else out


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
        with ``keep_kv``, what the alignment losses reuse: the per-block query (keys, values) that
        ITG decoding attends to and the per-block cross-attention (keys, values) of the visual
        tokens that ITM's rows of the same images attend to."""
        vision = self.vision_in(tokens)
        if not keep_kv:
            return vision, self.qformer.image(vision)
        return (vision, *self.qformer.image(vision, keep_kv=True, keep_cross=True))

    def text_cls(self, states: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The text pass's CLS output [B, H]; identical texts of the batch (same token ids, e.g.
        the 'at rest' sentence of one AU) run once."""
        unique, inverse, counts = torch.unique(ids, dim=0, return_inverse=True, return_counts=True)
        if len(unique) == len(ids):
            return self.qformer.text(states, mask)[:, 0]
        first = inverse.argsort(stable=True)[torch.cumsum(counts, 0) - counts]  # one row of each text
        return self.qformer.text(states[first], mask[first])[:, 0][inverse]

    def losses(self, vision, query_out, states, mask, ids, generator=None, past=None, cross=None) -> tuple[dict, int]:
        """ITC, ITM and ITG for a batch whose rows all carry text, and the number of ITC
        candidates each row was contrasted with (the batch gathered from every rank).

        vision [B, T, H] (projected, from ``image``); query_out [B, Q, H], past (its per-block
        query keys and values; recomputed when None) and cross (its per-block cross-attention
        keys and values; projected from ``vision`` when None) from the image pass; states
        [B, L, D] and mask [B, L] (frozen text); ids [B, L] (sub-vocabulary, 0 = CLS)."""
        B = vision.shape[0]
        L = distributed.max_over_ranks(ids.shape[1], ids.device)
        if L > ids.shape[1]:  # same text length on every rank, so the batches can be gathered
            pad = L - ids.shape[1]
            ids, mask, states = F.pad(ids, [0, pad]), F.pad(mask, [0, pad]), F.pad(states, [0, 0, 0, pad])
        sim_i2t, sim_t2i = self.itc_similarity(query_out, self.text_cls(states, mask, ids))
        ids_all = distributed.gather(ids)
        offset = distributed.rank_offset(B, ids.device)
        targets = torch.arange(B, device=ids.device) + offset
        # identical texts (e.g. two 'at rest' sentences) are not negatives of each other; compared
        # token by token on the device ([B, B_all, L]; torch.unique would wait for the GPU)
        same = (ids[:, None, :] == ids_all[None, :, :]).all(-1)
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
        s = torch.cat([states, states, states_all[neg_text]])
        m = torch.cat([mask, mask, mask_all[neg_text]])
        if cross is None:
            cross = [layer.cross_attn.keys_values(vision) for layer in self.qformer.layers]
        # rows [image + text | negative image + text | image + negative text]: the images' own
        # rows reuse the image pass's cross-attention keys and values; the negatives' are projected
        itm_logits = self.itm_head(self.qformer.joint(vision_all[neg_image], s, m, cross)).float().mean(1)
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

    @torch.no_grad()
    def generate(self, vision: torch.Tensor | None, end: int, max_tokens: int, beams: int = 1,
                 prefix: list[int] = (), past: list | None = None, constraints: list | None = None) -> list[list[int]]:
        """ITG decoding: the text each image's queries describe, as sub-vocabulary indices
        (without BOS and ``end``; starting with ``prefix``, a prompt the text continues).
        vision [B, T, H] is projected (from ``image``); ``past``, the image pass's per-block
        query (keys, values), replaces it when given. Greedy when ``beams`` is 1, else beam
        search ranked by mean log-probability per generated token; each step runs the new token
        only (the earlier ones' keys and values are kept). PAD, BOS and UNK are never produced,
        and ``end`` not as the first token.

        ``constraints`` (one per image): constrained decoding. Each is an automaton over token
        ids with ``start()``, ``allowed(state)`` (the ids that may come next), ``advance(state,
        id)`` and ``accepting(state)``; every other token is masked, and a text ends when its
        automaton accepts (``mf2.models.explain.Lattice``: the texts consistent with the heads).
        The sequences are returned as generated (``end`` included where the automaton reads it)."""
        if past is None:
            past = self.qformer.image(vision, keep_kv=True)[1]  # the queries run once, every step reuses them
        B, V, device = past[0][0].shape[0], self.lm_head.out_features, past[0][0].device
        K = max(1, min(beams, V - 4))
        max_tokens = min(max_tokens, self.cfg.max_text_len - 1 - len(prefix))
        past = [(k.repeat_interleave(K, 0), v.repeat_interleave(K, 0)) for k, v in past]
        ids = torch.tensor([BOS, *prefix], dtype=torch.long, device=device).repeat(B * K, 1)
        score = torch.zeros(B, K, device=device)
        score[:, 1:] = float("-inf")  # the first step expands one beam
        done = torch.zeros(B * K, dtype=torch.bool, device=device)
        length = torch.zeros(B * K, device=device)
        states = [c.start() for c in constraints for _ in range(K)] if constraints is not None else None
        new = ids
        for step in range(max_tokens):
            hidden, kv = self.qformer.decode(None, new, torch.ones_like(new, dtype=torch.bool), past,
                                             start=ids.shape[1] - new.shape[1], keep_kv=True)
            past = [(torch.cat([pk, k], 2), torch.cat([pv, v], 2)) for (pk, pv), (k, v) in zip(past, kv)]
            logp = self.lm_head(hidden[:, -1]).float().log_softmax(-1)
            if states is None:
                logp[:, [PAD, BOS, UNK]] = float("-inf")
                if step == 0 and not prefix and 0 <= end < V:
                    logp[:, end] = float("-inf")
            else:
                rows, cols = [], []
                for r, s in enumerate(states):
                    nxt = constraints[r // K].allowed(s)
                    rows += [r] * len(nxt)
                    cols += nxt
                allowed = torch.zeros_like(logp, dtype=torch.bool)
                allowed[rows, cols] = True
                logp = logp.masked_fill(~allowed, float("-inf"))
            logp[done] = float("-inf")
            logp[done, PAD] = 0.0  # a finished text stays as it is
            top, index = (score.view(-1, 1) + logp).view(B, K * V).topk(K, dim=1)
            source = (torch.arange(B, device=device)[:, None] * K + index // V).view(-1)
            token = (index % V).view(-1)
            length = length[source] + (~done[source]).float()
            if states is None:
                done = done[source] | (token == end)
            else:
                was = done[source].tolist()
                states = [states[s] if d else constraints[r // K].advance(states[s], t)
                          for r, (s, t, d) in enumerate(zip(source.tolist(), token.tolist(), was))]
                done = done[source] | torch.tensor([constraints[r // K].accepting(s) for r, s in enumerate(states)],
                                                   device=device)
            score = top
            done |= ~torch.isfinite(score.view(-1))  # no path left (a constraint allowed fewer than K tokens)
            ids = torch.cat([ids[source], token[:, None]], 1)
            past = [(k[source], v[source]) for k, v in past]
            new = token[:, None]
            if done.all():
                break
        rank = score / length.view(B, K).clamp(min=1)
        if states is not None:  # a text its automaton accepted beats one cut off at max_tokens
            accepted = torch.tensor([constraints[r // K].accepting(s) for r, s in enumerate(states)], device=device)
            rank = rank.masked_fill(~accepted.view(B, K) & accepted.view(B, K).any(1, keepdim=True), float("-inf"))
        best = rank.argmax(1)
        out = []
        for i, k in enumerate(best.tolist()):
            seq = ids[i * K + k, 1 + len(prefix):].tolist()
            if states is None:
                seq = seq[:next((j for j, t in enumerate(seq) if t in (end, PAD)), len(seq))]
            else:
                seq = seq[:int(length[i * K + k])]
            out.append(list(prefix) + seq)
        return out
