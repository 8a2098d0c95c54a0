"""The Q-Former of both MF² branches (BLIP-2 mechanics; SPEC §5), bottom-up: attention ->
layer -> Q-Former -> a vision-language branch with its alignment heads and losses.

Sequences are [learned queries | text]. Self-attention and FFN are shared by query and text
positions; cross-attention to the visual tokens exists for the query positions only. Modes:

* ``image``: queries alone (and cross-attention): image features, also used for prediction.
* ``text``: text alone, from the frozen encoder's token states (projected): the ITC text CLS.
* ``joint``: queries and text attend to each other (bidirectional): ITM.
* ``decode``: queries see queries; text tokens see every query and earlier text (causal). The
  text here is *embedded from token ids* -- never the frozen encoder's contextual states, which
  would leak later tokens: ITG.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mf2 import distributed
from mf2.models.config import MF2Config

PAD, BOS, UNK = 0, 1, 2  # ITG sub-vocabulary indices


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(kv_dim or hidden, hidden)
        self.v = nn.Linear(kv_dim or hidden, hidden)
        self.o = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, Lq, H], kv [B, Lk, Dkv], mask bool [B, 1, Lq, Lk] (True = may attend)."""
        B, Lq, H = x.shape
        split = lambda t: t.view(B, t.shape[1], self.heads, H // self.heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(kv)), split(self.v(kv)), attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.o(out.transpose(1, 2).reshape(B, Lq, H))


class QFormerLayer(nn.Module):
    """Post-LN block: shared self-attention, cross-attention for queries, shared FFN."""

    def __init__(self, cfg: MF2Config):
        super().__init__()
        H = cfg.hidden
        self.self_attn = Attention(H, cfg.heads, dropout=cfg.dropout)
        self.cross_attn = Attention(H, cfg.heads, dropout=cfg.dropout)  # keys/values: projected visual tokens
        self.ffn = nn.Sequential(nn.Linear(H, cfg.ffn), nn.GELU(), nn.Linear(cfg.ffn, H))
        self.ln_self, self.ln_cross, self.ln_ffn = nn.LayerNorm(H), nn.LayerNorm(H), nn.LayerNorm(H)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, n_query: int, mask, vision):
        x = self.ln_self(x + self.drop(self.self_attn(x, x, mask)))
        if n_query and vision is not None:
            q = x[:, :n_query]
            q = self.ln_cross(q + self.drop(self.cross_attn(q, vision)))
            x = torch.cat([q, x[:, n_query:]], 1)
        return self.ln_ffn(x + self.drop(self.ffn(x)))


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

    def _run(self, x, n_query, mask, vision, all_layers: bool = False):
        outs = []
        for layer in self.layers:
            x = layer(x, n_query, mask, vision)
            if all_layers:
                outs.append(x)
        return torch.stack(outs) if all_layers else x

    def image(self, vision: torch.Tensor, all_layers: bool = False) -> torch.Tensor:
        """vision [B, T, H] (projected) -> query outputs [B, Q, H] (every block's: [N, B, Q, H])."""
        return self._run(self.query_tokens.expand(vision.shape[0], -1, -1), self.n_queries, None, vision, all_layers)

    def text(self, states: torch.Tensor, mask: torch.Tensor, all_layers: bool = False) -> torch.Tensor:
        """Frozen encoder states [B, L, D] + mask [B, L] -> text outputs [B, L, H] ([N, B, L, H])."""
        keys = mask[:, None, None, :]
        return self._run(self.ln_text(self.text_in(states)), 0, keys, None, all_layers)

    def joint(self, vision, states, mask) -> torch.Tensor:
        """Bidirectional queries + text; returns the query outputs [B, Q, H]."""
        B, Q = vision.shape[0], self.n_queries
        x = torch.cat([self.query_tokens.expand(B, -1, -1), self.ln_text(self.text_in(states))], 1)
        keys = torch.cat([mask.new_ones(B, Q), mask], 1)[:, None, None, :]
        return self._run(x, Q, keys, vision)[:, :Q]

    def decode(self, vision, ids, mask) -> torch.Tensor:
        """Queries as prefix, causal text from token ids [B, L] (sub-vocabulary) -> text outputs [B, L, H]."""
        B, L = ids.shape
        Q = self.n_queries
        pos = torch.arange(L, device=ids.device)
        x = torch.cat([self.query_tokens.expand(B, -1, -1), self.ln_text(self.tok_embed(ids) + self.pos_embed(pos))], 1)
        allow = torch.zeros(B, Q + L, Q + L, dtype=torch.bool, device=ids.device)
        allow[:, :Q, :Q] = True  # queries see queries only
        allow[:, Q:, :Q] = True  # text sees every query
        allow[:, Q:, Q:] = torch.tril(torch.ones(L, L, dtype=torch.bool, device=ids.device)) & mask[:, None, :]
        allow[:, Q:, Q:] |= torch.eye(L, dtype=torch.bool, device=ids.device)  # padded rows keep one key
        return self._run(x, Q, allow[:, None], vision)[:, Q:]


def _smoothed_ce(logits, targets, allowed, eps: float):
    """Cross-entropy with label smoothing spread over the allowed candidates only (masked-out
    duplicates have probability 0 and must receive no target mass)."""
    logp = F.log_softmax(logits, 1)
    nll = -logp.gather(1, targets[:, None]).squeeze(1)
    smooth = -(logp * allowed).sum(1) / allowed.sum(1).clamp(min=1)
    return ((1 - eps) * nll + eps * smooth).mean()


class VLBranch(nn.Module):
    """One Q-Former with the BLIP-2 heads: ITC projections and temperature, ITM head, LM head."""

    def __init__(self, cfg: MF2Config, n_queries: int):
        super().__init__()
        self.cfg = cfg
        # Visual tokens are projected to the Q-Former width once per forward: every layer of
        # every pass (image, 3x ITM, ITG) then reads H-wide keys/values instead of C-wide ones.
        self.vision_in = nn.Sequential(nn.LayerNorm(cfg.vision_dim), nn.Linear(cfg.vision_dim, cfg.hidden))
        self.qformer = QFormer(cfg, n_queries)
        self.vision_proj = nn.Linear(cfg.hidden, cfg.embed_dim)
        self.text_proj = nn.Linear(cfg.hidden, cfg.embed_dim)
        self.temp = nn.Parameter(torch.tensor(float(cfg.temperature)))
        self.itm_head = nn.Linear(cfg.hidden, 2)
        self.lm_head = nn.Linear(cfg.hidden, max(len(cfg.vocab), 2))

    def itc_similarity(self, query_out, text_out):
        """[B, B_all] image->text similarities: max over queries of cosine / temperature."""
        img = F.normalize(self.vision_proj(query_out), dim=-1)  # [B, Q, E]
        txt = F.normalize(self.text_proj(text_out[:, 0]), dim=-1)  # [B, E] (CLS)
        img_all, txt_all = distributed.gather(img), distributed.gather(txt)
        temp = self.temp.clamp(0.001, 0.5)
        sim_i2t = torch.einsum("bqe,ne->bqn", img, txt_all).amax(1) / temp
        sim_t2i = torch.einsum("be,nqe->bnq", txt, img_all).amax(2) / temp
        return sim_i2t, sim_t2i

    def image(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual tokens [B, T, C] -> (projected tokens [B, T, H], query outputs [B, Q, H])."""
        vision = self.vision_in(tokens)
        return vision, self.qformer.image(vision)

    def losses(self, vision, query_out, states, mask, ids, generator=None) -> tuple[dict, int]:
        """ITC, ITM and ITG for a batch whose rows all carry text, and the number of ITC
        candidates each row was contrasted with (the batch gathered from every rank).

        vision [B, T, H] (projected, from ``image``); query_out [B, Q, H] (the image pass);
        states [B, L, D] and mask [B, L] (frozen text); ids [B, L] (sub-vocabulary, 0 = CLS)."""
        B = vision.shape[0]
        L = distributed.max_over_ranks(ids.shape[1], ids.device)
        if L > ids.shape[1]:  # same text length on every rank, so the batches can be gathered
            pad = L - ids.shape[1]
            ids, mask, states = F.pad(ids, [0, pad]), F.pad(mask, [0, pad]), F.pad(states, [0, 0, 0, pad])
        text_out = self.qformer.text(states, mask)
        sim_i2t, sim_t2i = self.itc_similarity(query_out, text_out)
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
            for w in (w_i2t, w_t2i):
                empty = w.sum(1) <= 0
                if empty.any():  # nothing but duplicates: any other row
                    w[empty] = (~torch.eye(w.shape[1], dtype=torch.bool, device=w.device)[targets[empty]]).float()
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
        itm_logits = self.itm_head(self.qformer.joint(v, s, m)).mean(1)
        itm_labels = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long().to(ids.device)
        itm = F.cross_entropy(itm_logits, itm_labels)

        # ITG: BOS replaces CLS; predict each next token from the queries and earlier tokens
        dec_ids = ids.clone()
        dec_ids[:, 0] = BOS
        labels = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
        logits = self.lm_head(self.qformer.decode(vision, dec_ids, mask))[:, :-1]
        itg = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                              label_smoothing=self.cfg.label_smoothing)
        return {"itc": itc, "itm": itm, "itg": itg}, sim_i2t.shape[1]

    @torch.no_grad()
    def generate(self, vision: torch.Tensor, end: int, max_tokens: int, beams: int = 1,
                 prefix: list[int] = ()) -> list[list[int]]:
        """ITG decoding: the text each image's queries describe, as sub-vocabulary indices
        (without BOS and ``end``; starting with ``prefix``, a prompt the text continues).
        vision [B, T, H] is projected (from ``image``). Greedy when ``beams`` is 1, else beam
        search ranked by mean log-probability per generated token. PAD, BOS and UNK are never
        produced, and ``end`` not as the first token."""
        B, V = vision.shape[0], self.lm_head.out_features
        K = max(1, min(beams, V - 4))
        max_tokens = min(max_tokens, self.cfg.max_text_len - 1 - len(prefix))
        vis = vision.repeat_interleave(K, 0)
        ids = torch.tensor([BOS, *prefix], dtype=torch.long, device=vision.device).repeat(B * K, 1)
        score = torch.zeros(B, K, device=vision.device)
        score[:, 1:] = float("-inf")  # the first step expands one beam
        done = torch.zeros(B * K, dtype=torch.bool, device=vision.device)
        length = torch.zeros(B * K, device=vision.device)
        for step in range(max_tokens):
            hidden = self.qformer.decode(vis, ids, torch.ones_like(ids, dtype=torch.bool))[:, -1]
            logp = self.lm_head(hidden).float().log_softmax(-1)
            logp[:, [PAD, BOS, UNK]] = float("-inf")
            if step == 0 and not prefix and 0 <= end < V:
                logp[:, end] = float("-inf")
            logp[done] = float("-inf")
            logp[done, PAD] = 0.0  # a finished text stays as it is
            top, index = (score.view(-1, 1) + logp).view(B, K * V).topk(K, dim=1)
            source = (torch.arange(B, device=vision.device)[:, None] * K + index // V).view(-1)
            token = (index % V).view(-1)
            length = length[source] + (~done[source]).float()
            done = done[source] | (token == end)
            ids = torch.cat([ids[source], token[:, None]], 1)
            score = top
            if done.all():
                break
        best = (score / length.view(B, K).clamp(min=1)).argmax(1)
        out = []
        for i, k in enumerate(best.tolist()):
            seq = ids[i * K + k, 1 + len(prefix):].tolist()
            stop = next((j for j, t in enumerate(seq) if t in (end, PAD)), len(seq))
            out.append(list(prefix) + seq[:stop])
        return out
