"""Explanations (``mf2 predict --explain``): text decoded by each branch's ITG head (Appendix
G), Emo-VL's caption of the face, then AU-VL's sentence for each AU the heads call active.

Two decoders (``grounding``):

* ``"heads"`` (the default): **grounded** decoding. What the explanation says is what the
  classification heads decided -- their emotion and their active AUs -- and the ITG decoder
  chooses how to say it. The template captioner's FACS vocabulary (``mf2.captions.template``)
  lays out every caption it writes for those labels as a lattice (fixed text and wording
  choices, ``template.lattice``); the decoder searches that lattice for the text with the
  highest ITG likelihood per token, log p(w | Q) of L_ITG (Eq. 5), greedily or with a beam.
  Each active AU's sentence is searched the same way over that AU's own active wordings. The
  text is then consistent with the heads, fluent and without repeats by construction; it can
  say nothing the heads did not decide.
* ``"none"``: the **ungrounded** decoder, as before: free greedy or beam decoding of the ITG
  head from the image queries alone (each AU sentence prompted with the AU's name), which can
  contradict the heads (kept to compare, ``mf2 evaluate --explain``).

Token ids of the ITG sub-vocabulary are mapped back to words by the text encoder's tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

from mf2.captions.consistency import Consistency, check
from mf2.captions.facs import active_sentence
from mf2.captions.template import TEMPLATES, lattice
from mf2.data.labels import AU_NAMES, AUS, EMOTIONS, TEXT_CAPS, per_au
from mf2.models.mf2 import MF2
from mf2.models.qformer import BOS, PAD, UNK

GROUNDINGS = ("heads", "none")
DECODINGS = ("greedy", "beam")


@dataclass
class Explanation:
    """What the ITG heads wrote for one face: Emo-VL's caption, AU-VL's sentence per active AU,
    and whether they agree with the classification heads (``mf2.captions.consistency``)."""

    caption: str = ""
    au_sentences: dict = field(default_factory=dict)  # AU -> sentence, in AUS order
    consistency: Consistency | None = None

    @property
    def text(self) -> str:
        return " ".join([self.caption] * bool(self.caption) + list(self.au_sentences.values()))

    @property
    def consistent(self) -> bool:
        return self.consistency.consistent


class Explainer:
    """Decodes descriptions from an MF² (a DFN run explains with its frozen MF²).

    ``text_signature`` is the ``text`` part of the cache signature the run was trained on (the
    caption types and token caps); ``decoding`` is 'greedy' or 'beam' (``beams`` wide);
    ``threshold``: one AU probability or one per AU [12] at which an AU is explained;
    ``grounding``: 'heads' (what the heads decided, worded by the decoder) or 'none' (the
    decoder alone); see the module's docstring."""

    def __init__(self, model: MF2, tokenizer, text_signature: dict, decoding: str = "greedy", beams: int = 3,
                 threshold=0.5, grounding: str = "heads"):
        if decoding not in DECODINGS:
            raise ValueError(f"decoding: expected one of {', '.join(DECODINGS)}, got {decoding!r}")
        if grounding not in GROUNDINGS:
            raise ValueError(f"grounding: expected one of {', '.join(GROUNDINGS)}, got {grounding!r}")
        self.model, self.tokenizer, self.sig = model, tokenizer, text_signature
        self.grounding, self.decoding = grounding, decoding
        self.beams = beams if decoding == "beam" else 1
        self.thresholds = per_au(threshold)
        self.caps = {**TEXT_CAPS, **text_signature.get("caps", {})}
        sep = tokenizer.sep_token_id
        self.end = int(model.sub_ids(torch.tensor([sep]))[0]) if sep is not None else -1
        self._ids: dict[str, list[int]] = {}  # text -> sub-vocabulary indices

    @property
    def explains_caption(self) -> bool:
        return self.model.emo_vl is not None and self.model.cfg.emo_text in self.sig.get("types", [])

    @property
    def explains_aus(self) -> bool:
        return self.model.au_vl is not None and bool(self.sig.get("au_sentences"))

    @torch.no_grad()
    def explain(self, tokens: torch.Tensor, au_tokens: torch.Tensor, au_probs: np.ndarray,
                emo_probs: np.ndarray | None = None) -> list[Explanation]:
        """Emo-VL's caption, then AU-VL's sentence for each AU active at the thresholds, per
        face; with ``emo_probs`` (the heads' emotion probabilities [B, 8]) each is checked
        against the heads (the top emotion and the active AUs). Grounded decoding words the
        top emotion of ``emo_probs`` (the MF²'s own emotion head where not given)."""
        model = self.model
        feats = model.image_features(tokens, au_tokens, keep_kv=True)  # the queries' keys/values, read by every step
        active = np.asarray(au_probs) >= self.thresholds
        emotions = np.argmax(emo_probs if emo_probs is not None else model.heads(feats)[0].float().cpu().numpy(), 1)
        n = len(active)
        out = [Explanation() for _ in range(n)]
        rows = [{"id": "", "emotion": int(emotions[i]), **{a: int(active[i, k]) for k, a in enumerate(AUS)}}
                for i in range(n)]
        if self.explains_caption:
            if self.grounding == "heads":
                write = TEMPLATES[model.cfg.emo_text]
                texts = self.search(model.emo_vl, feats.emo_kv, list(range(n)), [lattice(write, r) for r in rows])
            else:
                texts = [self.words(s) for s in model.emo_vl.generate(
                    None, self.end, self.caps[model.cfg.emo_text], self.beams, past=feats.emo_kv)]
            for e, t in zip(out, texts):
                e.caption = t
        if self.explains_aus:
            faces, ks = np.nonzero(active)  # face-major: each face's AUs in AUS order
            if len(faces):
                seq = torch.from_numpy(faces * len(AUS) + ks)  # each active AU's own sequence
                if self.grounding == "heads":
                    texts = self.search(model.au_vl, feats.au_kv, seq.tolist(),
                                        [lattice(active_sentence, AUS[k], "") for k in ks])
                else:
                    texts = []
                    for k in np.unique(ks):  # one prompt per AU: its name, when its tokens are in the vocabulary
                        pick = seq[ks == k].to(feats.au_vision.device)
                        seqs = model.au_vl.generate(None, self.end, self.caps["au_sentences"], self.beams,
                                                    self.prompt(f"{AUS[k]} ({AU_NAMES[AUS[k]]})"),
                                                    past=[(a[pick], b[pick]) for a, b in feats.au_kv])
                        texts += list(zip(np.flatnonzero(ks == k), (self.words(s) for s in seqs)))
                    texts = [t for _, t in sorted(texts)]
                for i, k, t in zip(faces, ks, texts):
                    out[i].au_sentences[AUS[k]] = t
        if emo_probs is not None:
            for i, e in enumerate(out):
                e.consistency = check(e.caption, e.au_sentences, {a for k, a in enumerate(AUS) if active[i, k]},
                                      EMOTIONS[int(emotions[i])])
        return out

    def search(self, branch, past: list, rows: list[int], lattices: list[list[list[str]]]) -> list[str]:
        """For each lattice (parts, each a list of wordings), the path the ITG decoder finds
        most likely per token after the queries of ``past``'s row ``rows[j]``: a beam of
        ``self.beams`` partial paths (1: greedy), each wording choice scored with the fixed
        text that follows it, all candidates of a step in one teacher-forced pass."""
        if not lattices:
            return []
        device = past[0][0].device
        steps = [_steps(parts, self.ids, self.end) for parts in lattices]
        # a hypothesis: (token ids, text, summed log-probability, tokens scored)
        beams = [[(s[0][0][0], s[0][0][1], 0.0, 0)] for s in steps]
        for r in range(1, max(len(s) for s in steps)):
            cands = [(j, h, k) for j, s in enumerate(steps) if r < len(s) for h in beams[j] for k in range(len(s[r]))]
            ids = [h[0] + steps[j][r][k][0] for j, h, k in cands]
            index = torch.tensor([rows[j] for j, _, _ in cands], device=device)
            sums, counts = branch.continuation_logprob([(a[index], b[index]) for a, b in past],
                                                       *_padded(ids, self.model.cfg.max_text_len, device),
                                                       # the first step scores the fixed text before it too
                                                       torch.tensor([len(h[0]) if r > 1 else 0 for _, h, _ in cands],
                                                                    device=device))
            sums, counts = sums.tolist(), counts.tolist()
            grown: dict[int, list] = {}
            for c, (j, h, k) in enumerate(cands):
                grown.setdefault(j, []).append((ids[c], h[1] + steps[j][r][k][1], h[2] + sums[c], h[3] + counts[c]))
            for j, hyps in grown.items():
                beams[j] = sorted(hyps, key=lambda h: h[2] / max(h[3], 1), reverse=True)[:self.beams]
        return [max(b, key=lambda h: h[2] / max(h[3], 1))[1] for b in beams]

    def ids(self, text: str) -> list[int]:
        """``text`` as ITG sub-vocabulary indices (a word never seen in training is UNK)."""
        if text not in self._ids:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            self._ids[text] = self.model.sub_ids(torch.tensor(ids, dtype=torch.long)).tolist() if ids else []
        return self._ids[text]

    def prompt(self, text: str) -> list[int]:
        """``text`` as ITG sub-vocabulary indices; empty when any of its tokens is unknown."""
        sub = self.ids(text)
        return [] if UNK in sub else sub

    def words(self, seq: list[int]) -> str:
        """Sub-vocabulary indices -> readable text."""
        vocab = self.model.cfg.vocab
        ids = [vocab[i] for i in seq if vocab[i] >= 0]
        return tidy(self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True))


def _steps(parts: list[list[str]], ids, end: int) -> list[list[tuple[list[int], str]]]:
    """A lattice as search steps: step 0 is the fixed text before the first choice (one option),
    every later step a choice whose options each carry the fixed text after it up to the next
    choice (the last with the end token): [[(token ids, text), ...], ...]."""
    steps: list[list[tuple[list[int], str]]] = [[([], "")]]
    for options in parts:
        if len(options) > 1:
            steps.append([(ids(o), o) for o in options])
        else:
            steps[-1] = [(t + ids(options[0]), s + options[0]) for t, s in steps[-1]]
    if end >= 0:
        steps[-1] = [(t + [end], s) for t, s in steps[-1]]
    return steps


def _padded(seqs: list[list[int]], max_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """[BOS] + each sequence, right-padded (and cut at the decoder's ``max_len`` positions):
    (ids [N, L], mask [N, L])."""
    L = min(max_len, 1 + max(len(s) for s in seqs))
    ids = torch.full((len(seqs), L), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        row = [BOS, *s][:L]
        ids[i, :len(row)] = torch.tensor(row)
    ids = ids.to(device)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for i, s in enumerate(seqs):
        mask[i, :min(L, 1 + len(s))] = True
    return ids, mask


def tidy(text: str) -> str:
    """Readable text from an uncased WordPiece decode: no space before punctuation or inside
    brackets, AU names in capitals, sentences capitalised."""
    text = re.sub(r"\s+([.,;:!?)])", r"\1", text.strip())
    text = re.sub(r"\(\s+", "(", text)
    text = re.sub(r"\bau\s?(\d+)", r"AU\1", text)
    names = {name.lower(): name for name in AU_NAMES.values()}
    text = re.sub(r"\(([a-z ]+)\)", lambda m: f"({names.get(m.group(1), m.group(1))})", text)
    return re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
