"""DFN, the Decoupled Fine-tuning Network (paper §III-B, Table VI): side pathways beside the
frozen MF².

Four pathways -- {Emo-VL, AU-VL} x {vision, text} -- each a chain of cells, one per MF² block
it reads (N blocks: 4N cells, §III-B). A pathway starts from the frozen encoder's last-layer CLS
(the pooled visual token, or for AU-VL that AU's pooled local tokens; the caption's or the AU
sentence's text CLS), projected to the Q-Former width, and at block l mixes in that block's
pooled output h_l:

    s_l = g_l (s_{l-1} + lam W_up ReLU(W_down s_{l-1} + b_down) + b_up) + (1 - g_l) h_l,  g_l = sigmoid(alpha_l)

run by the fused native pathway op. Only the cells, the start projections and the task heads
train; the heads start from the pretrained MF²'s. The vision pathways feed the task heads
(prediction uses images only); the text pathways join through an alignment loss (vision vs
text pathway, InfoNCE) so they learn too. The readings of the paper chosen are ``DFNConfig``'s
fields (``mf2.models.config``).

MF² is frozen, so its block outputs (``vision_block_outputs``, ``text_block_outputs``) are the
same in every epoch: training reads them from a cache; ``DFNModel`` (a frozen MF² with its DFN)
computes them live for prediction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mf2.data.labels import N_AU, N_EMOTIONS
from mf2.models.config import DFNConfig, MF2Config
from mf2.models.losses import DFN_LOSSES, task_losses, weighted_total
from mf2.models.mf2 import MF2, emotion_input
from mf2.models.outputs import BlockOutputs, StepOutput
from mf2.ops import dfn_pathway


class Pathway(nn.Module):
    """One side pathway: start projection + ``n`` stacked cells."""

    def __init__(self, in_dim: int, hidden: int, n: int, cfg: DFNConfig):
        super().__init__()
        r = cfg.bottleneck or hidden
        self.lam = cfg.lam
        self.start = nn.Linear(in_dim, hidden)
        self.w_down = nn.Parameter(torch.randn(n, r, hidden) * hidden ** -0.5)
        self.b_down = nn.Parameter(torch.zeros(n, r))
        self.w_up = nn.Parameter(torch.randn(n, hidden, r) * r ** -0.5 * 0.1)
        self.b_up = nn.Parameter(torch.zeros(n, hidden))
        self.alpha = nn.Parameter(torch.full((n,), float(cfg.alpha_init)))

    def forward(self, start: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """start [B, in_dim], h [n, B, H] -> final state [B, H], in float32 (the fused pathway op
        takes float32/float64; a pathway is cheap next to the frozen MF² it reads)."""
        with torch.autocast(start.device.type, enabled=False):
            states = dfn_pathway(self.start(start.float()), h.float().contiguous(), self.w_down, self.b_down,
                                 self.w_up, self.b_up, self.alpha, self.lam)
        return states[-1]


class DFN(nn.Module):
    """The four pathways and the task heads. Inputs are the frozen MF²'s pooled block outputs."""

    LOSSES = DFN_LOSSES  # loss name -> the key of the weight it takes (``weights``)

    def __init__(self, mf2_cfg: MF2Config, cfg: DFNConfig):
        super().__init__()
        self.cfg, self.mf2_cfg = cfg, mf2_cfg
        self.blocks = cfg.block_indices(mf2_cfg.layers)
        H, n = mf2_cfg.hidden, len(self.blocks)
        self.emo_vision = Pathway(mf2_cfg.vision_dim, H, n, cfg) if mf2_cfg.emo_vl else None
        self.emo_text = Pathway(mf2_cfg.text_dim, H, n, cfg) if mf2_cfg.emo_vl else None
        self.au_vision = Pathway(mf2_cfg.au_vision_dim or mf2_cfg.vision_dim, H, n, cfg) if mf2_cfg.au_vl else None
        self.au_text = Pathway(mf2_cfg.text_dim, H, n, cfg) if mf2_cfg.au_vl else None
        self.emotion_head = nn.Linear(mf2_cfg.emotion_input_dim(), N_EMOTIONS)
        self.au_head = nn.Linear(H, N_AU)
        self.temp = nn.Parameter(torch.tensor(0.07))

    def init_heads_from(self, base: MF2) -> None:
        """Start the task heads from the pretrained MF²'s: with the gates nearly closed, the
        pathways' final states are nearly MF²'s own pooled outputs, so DFN starts where MF² is."""
        with torch.no_grad():
            self.emotion_head.load_state_dict(base.emotion_head.state_dict())
            self.au_head.load_state_dict(base.au_head.state_dict())

    def _read_blocks(self, h: torch.Tensor) -> torch.Tensor:
        """[B, N, H] cached block outputs -> [n, B, H] of the blocks the pathways read."""
        return h[:, self.blocks].transpose(0, 1)

    def heads(self, x: BlockOutputs) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Task logits from the vision pathways, and their final states (for alignment)."""
        out = {}
        if self.emo_vision is not None:
            out["emo"] = self.emo_vision(x.emo_v_start, self._read_blocks(x.emo_v_h))
        if self.au_vision is not None:
            B = x.au_v_start.shape[0]
            flat = self.au_vision(x.au_v_start.flatten(0, 1), self._read_blocks(x.au_v_h.flatten(0, 1)))
            out["au"] = flat.view(B, N_AU, -1)
        emotion = self.emotion_head(emotion_input(self.mf2_cfg, out.get("emo"), out.get("au")))
        au = self.au_head(out["au"]).diagonal(dim1=1, dim2=2) if "au" in out else self.au_head(out["emo"])
        return emotion, au, out

    def forward(self, x: BlockOutputs, tasks: str = "both", au_pos_weight: torch.Tensor | None = None) -> StepOutput:
        """Losses of one batch of cached block outputs: the task losses (``-1`` labels masked;
        AU positives weighted by ``au_pos_weight``) and, weighted by ``align_weight``, the
        vision/text pathway alignment."""
        emotion, au, finals = self.heads(x)
        losses = task_losses(emotion, au, x.emotion, x.aus, tasks, au_pos_weight)
        if self.cfg.align_weight:
            losses["align"] = self.align_loss(x, finals)
        total = weighted_total(losses, self.LOSSES, {"cls": 1.0, "align": self.cfg.align_weight})
        return StepOutput(total, {k: v.detach() for k, v in losses.items()}, emotion.detach(), au.detach())

    def align_loss(self, x: BlockOutputs, finals: dict) -> torch.Tensor:
        """InfoNCE between each vision pathway's final state and its text pathway's, over the
        rows that carry text (masked, so shapes stay fixed and nothing waits on the device; a
        branch with fewer than two such rows adds 0)."""
        losses = []
        temp = self.temp.clamp(0.001, 0.5)
        for key, text_pathway in (("emo", self.emo_text), ("au", self.au_text)):
            start, h, has = getattr(x, f"{key}_t_start"), getattr(x, f"{key}_t_h"), getattr(x, f"{key}_t_has")
            if text_pathway is None or start is None:
                continue
            v = finals[key].flatten(0, -2) if key == "au" else finals[key]
            if key == "au":
                start, h, has = start.flatten(0, 1), h.flatten(0, 1), has.flatten()
            t = text_pathway(start, self._read_blocks(h))
            with torch.autocast(v.device.type, enabled=False):
                sim = F.normalize(v.float(), dim=-1) @ F.normalize(t.float(), dim=-1).T / temp
            # pairs without text on either side take no part (a huge negative, not -inf: finite gradients)
            sim = sim.masked_fill(~(has[:, None] & has[None, :]), torch.finfo(sim.dtype).min)
            target = torch.arange(sim.shape[0], device=sim.device)
            per_row = (F.cross_entropy(sim, target, reduction="none") + F.cross_entropy(sim.T, target, reduction="none")) / 2
            n = has.sum()
            losses.append(torch.where(has, per_row, 0).sum() / n.clamp(min=1) * (n >= 2))
        return sum(losses) if losses else torch.zeros((), device=self.temp.device)


@torch.no_grad()
def vision_block_outputs(base: MF2, tokens: torch.Tensor, au_tokens: torch.Tensor) -> BlockOutputs:
    """The frozen MF²'s per-block pooled image outputs and the pathways' vision start vectors
    (the ``*_v_*`` fields of ``BlockOutputs``) from global tokens [B, T, C] and AU tokens
    [B, 12, T', C]."""
    out = BlockOutputs()
    if base.emo_vl is not None:
        b = base.emo_vl
        layers = b.qformer.image(b.vision_in(tokens), all_layers=True)  # [N, B, Q, H]
        out.emo_v_start, out.emo_v_h = tokens[:, 0], layers.mean(2).transpose(0, 1)
    if base.au_vl is not None:
        b = base.au_vl
        B = au_tokens.shape[0]
        layers = b.qformer.image(b.vision_in(au_tokens.flatten(0, 1)), all_layers=True)  # [N, B*12, Q, H]
        out.au_v_start = au_tokens.mean(2)
        out.au_v_h = layers.mean(2).transpose(0, 1).reshape(B, N_AU, layers.shape[0], -1)
    return out


@torch.no_grad()
def text_block_outputs(base: MF2, batch: dict) -> BlockOutputs:
    """Per-block text CLS outputs and text start vectors (the ``*_t_*`` fields of
    ``BlockOutputs``; rows without text hold zeros) of a cache batch."""
    out = BlockOutputs()
    if base.emo_vl is not None and "emo_text" in batch:
        ids, mask, states, has = batch["emo_text"]
        layers = base.emo_vl.qformer.text(states, mask | ~has[:, None], all_layers=True)[:, :, 0]  # [N, B, H]
        out.emo_t_start, out.emo_t_h, out.emo_t_has = states[:, 0], layers.transpose(0, 1) * has[:, None, None], has
    if base.au_vl is not None and "au_text" in batch:
        ids, mask, states, has = batch["au_text"]
        B = states.shape[0]
        flat_mask = (mask | ~has[..., None]).flatten(0, 1)
        layers = base.au_vl.qformer.text(states.flatten(0, 1), flat_mask, all_layers=True)[:, :, 0]
        h = layers.transpose(0, 1).reshape(B, N_AU, layers.shape[0], -1) * has[..., None, None]
        out.au_t_start, out.au_t_h, out.au_t_has = states[:, :, 0], h, has
    return out


def block_outputs(base: MF2, batch: dict) -> BlockOutputs:
    """Everything a DFN step reads of a cache batch: vision and text block outputs and the labels."""
    v, t = vision_block_outputs(base, batch["tokens"], batch["au_tokens"]), text_block_outputs(base, batch)
    return BlockOutputs(**{**t.arrays(), **v.arrays(), "emotion": batch["emotion"], "aus": batch["aus"]})


class DFNModel(nn.Module):
    """A frozen MF² with its DFN: predicts from images, computing the block outputs live."""

    def __init__(self, base: MF2, dfn: DFN):
        super().__init__()
        self.mf2, self.dfn, self.cfg = base, dfn, base.cfg  # attribute names = the state dict's keys (mf2.*, dfn.*)

    @torch.no_grad()
    def predict(self, tokens, au_tokens):
        emotion, au, _ = self.dfn.heads(vision_block_outputs(self.mf2, tokens, au_tokens))
        return emotion.float().softmax(-1), au.float().sigmoid()
