"""DFN, the Decoupled Fine-tuning Network (paper §III-B, Table VI): side pathways beside the
frozen MF².

Four pathways -- {Emo-VL, AU-VL} x {vision, text} -- each a chain of cells, one per MF² block
it reads (N blocks: 4N cells, §III-B). A pathway starts from the frozen encoder's last-layer CLS
(the pooled visual token, or for AU-VL that AU's pooled local tokens; the caption's or the AU
sentence's text CLS), projected to the Q-Former width, and at block l mixes in that block's
pooled output h_l:

    s_l = g_l (s_{l-1} + lam W_up ReLU(W_down s_{l-1} + b_down) + b_up) + (1 - g_l) h_l,  g_l = sigmoid(alpha_l)

run by the fused native pathway op. Only the cells, the start projections and the task heads
train; the heads start from the pretrained MF²'s. The vision pathways feed the task heads (prediction uses images only); the text pathways
join through an alignment loss (vision vs text pathway, InfoNCE) so they learn too.

Readings of the paper chosen (config fields): ``blocks`` = "all" reads every block (4N cells,
§III-B); an integer k reads k evenly spaced blocks ending with the last (Table VI's "Number of
Adapter Layers: 7" -> ``blocks=7``). ``bottleneck`` = 0 uses the Q-Former width (Table VI's
input and output dimension 768 with no bottleneck named).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mf2.data.labels import AUS, EMOTIONS
from mf2.models.config import MF2Config
from mf2.models.mf2 import task_losses
from mf2.ops import dfn_pathway

PAPER_DFN_PARAMS = 52.88e6


@dataclass
class DFNConfig:
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
        """start [B, in_dim], h [n, B, H] -> final state [B, H]."""
        states = dfn_pathway(self.start(start), h.contiguous(), self.w_down, self.b_down, self.w_up, self.b_up,
                             self.alpha, self.lam)
        return states[-1]


class DFN(nn.Module):
    """The four pathways and the task heads. Inputs are the frozen MF²'s pooled block outputs."""

    def __init__(self, mf2_cfg: MF2Config, cfg: DFNConfig):
        super().__init__()
        self.cfg, self.mf2_cfg = cfg, mf2_cfg
        self.blocks = cfg.block_indices(mf2_cfg.layers)
        H, n = mf2_cfg.hidden, len(self.blocks)
        self.emo_vision = Pathway(mf2_cfg.vision_dim, H, n, cfg) if mf2_cfg.emo_vl else None
        self.emo_text = Pathway(mf2_cfg.text_dim, H, n, cfg) if mf2_cfg.emo_vl else None
        self.au_vision = Pathway(mf2_cfg.vision_dim, H, n, cfg) if mf2_cfg.au_vl else None
        self.au_text = Pathway(mf2_cfg.text_dim, H, n, cfg) if mf2_cfg.au_vl else None
        self.emotion_head = nn.Linear(H, len(EMOTIONS))
        self.au_head = nn.Linear(H, len(AUS))
        self.temp = nn.Parameter(torch.tensor(0.07))

    def init_heads_from(self, mf2) -> None:
        """Start the task heads from the pretrained MF²'s: with the gates nearly closed, the
        pathways' final states are nearly MF²'s own pooled outputs, so DFN starts where MF² is."""
        with torch.no_grad():
            self.emotion_head.load_state_dict(mf2.emotion_head.state_dict())
            self.au_head.load_state_dict(mf2.au_head.state_dict())

    def _h(self, h: torch.Tensor) -> torch.Tensor:
        """[B, N, H] cached block outputs -> [n, B, H] of the blocks the pathways read."""
        return h[:, self.blocks].transpose(0, 1)

    def heads(self, x: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Task logits from the vision pathways, and their final states (for alignment)."""
        out = {}
        if self.emo_vision is not None:
            out["emo"] = self.emo_vision(x["emo_v_start"], self._h(x["emo_v_h"]))
        if self.au_vision is not None:
            B = x["au_v_start"].shape[0]
            flat = self.au_vision(x["au_v_start"].flatten(0, 1), self._h(x["au_v_h"].flatten(0, 1)))
            out["au"] = flat.view(B, len(AUS), -1)
        emotion = self.emotion_head(out["emo"] if "emo" in out else out["au"].mean(1))
        au = self.au_head(out["au"]).diagonal(dim1=1, dim2=2) if "au" in out else self.au_head(out["emo"])
        return emotion, au, out

    def forward(self, x: dict, tasks: str = "both") -> dict:
        """Losses of one batch of cached vectors: the task losses (``-1`` labels masked) and,
        weighted by ``align_weight``, the vision/text pathway alignment."""
        emotion, au, finals = self.heads(x)
        out = task_losses(emotion, au, x["emotion"], x["aus"], tasks)
        if self.cfg.align_weight:
            out["align"] = self.cfg.align_weight * self.align_loss(x, finals)
        out["loss"] = sum(out.values())
        return out

    def align_loss(self, x: dict, finals: dict) -> torch.Tensor:
        """InfoNCE between each vision pathway's final state and its text pathway's."""
        losses = []
        temp = self.temp.clamp(0.001, 0.5)
        for key, text_pathway in (("emo", self.emo_text), ("au", self.au_text)):
            if text_pathway is None or f"{key}_t_start" not in x:
                continue
            v = finals[key].flatten(0, -2) if key == "au" else finals[key]
            start, h, has = x[f"{key}_t_start"], x[f"{key}_t_h"], x[f"{key}_t_has"]
            if key == "au":
                start, h, has = start.flatten(0, 1), h.flatten(0, 1), has.flatten()
            if has.sum() < 2:
                continue
            t = text_pathway(start[has], self._h(h[has]))
            sim = F.normalize(v[has], dim=-1) @ F.normalize(t, dim=-1).T / temp
            target = torch.arange(sim.shape[0], device=sim.device)
            losses.append((F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2)
        return sum(losses) if losses else torch.zeros((), device=self.temp.device)
