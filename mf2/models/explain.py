"""Explanations (``mf2 predict --explain``): text decoded by each branch's ITG head (Appendix
G), Emo-VL's caption of the face, then AU-VL's sentence for each AU the heads call active.

Two decoders (``grounding``):

* ``"heads"`` (the default): **grounded** decoding. What the explanation says is what the
  classification heads decided -- their emotion and their active AUs -- and the ITG decoder
  chooses how to say it. The template captioner's FACS vocabulary (``mf2.captions.template``)
  lays out every caption it writes for those labels as a lattice (fixed text and wording
  choices, ``template.lattice``), and the decoder writes token by token with every token that
  would leave the lattice masked (constrained greedy or beam decoding of log p(w_t | w_<t, Q),
  the model L_ITG trains, Eq. 5): where wordings fork, the ITG head's likelier one is taken.
  Each active AU's sentence is decoded the same way over that AU's own active wordings. The
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
from mf2.models.qformer import UNK

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
                texts = self.grounded(model.emo_vl, feats.emo_kv, [lattice(write, r) for r in rows])
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
                    index = seq.to(feats.au_vision.device)
                    texts = self.grounded(model.au_vl, [(a[index], b[index]) for a, b in feats.au_kv],
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

    def grounded(self, branch, past: list, lattices: list[list[list[str]]]) -> list[str]:
        """For each lattice (parts, each the list of its wordings) the text the branch's ITG
        decoder writes when held to the lattice's paths (constrained greedy or beam decoding
        after the queries of ``past``'s row of that text)."""
        if not lattices:
            return []
        automata = [Lattice(parts, self.ids, self.end) for parts in lattices]
        seqs = branch.generate(None, self.end, self.model.cfg.max_text_len, self.beams, past=past, constraints=automata)
        return [a.text(s) for a, s in zip(automata, seqs)]

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


class Lattice:
    """A lattice of texts (``captions.template.lattice``: parts, each the list of its wordings)
    as an automaton over ITG sub-vocabulary ids, for constrained decoding
    (``VLBranch.generate(constraints=...)``). A state is the tuple of places the ids read so far
    can stand at -- (part, wording, tokens of it read, the wordings chosen before) -- since
    wordings may begin alike; it accepts once every part is read, and the end token after them
    when the vocabulary has one."""

    def __init__(self, parts: list[list[str]], ids, end: int = -1):
        self.texts = [list(options) for options in parts] + [[""]] * (end >= 0)
        self.tokens = [[ids(o) for o in options] for options in parts] + [[[end]]] * (end >= 0)

    def _enter(self, part: int, chosen: tuple) -> list[tuple]:
        if part == len(self.tokens):
            return [(part, -1, 0, chosen)]
        places = []
        for k, toks in enumerate(self.tokens[part]):
            places += [(part, k, 0, chosen)] if toks else self._enter(part + 1, chosen + (k,))
        return places

    def start(self) -> tuple:
        return tuple(self._enter(0, ()))

    def allowed(self, state: tuple) -> list[int]:
        return sorted({self.tokens[p][k][i] for p, k, i, _ in state if k >= 0})

    def advance(self, state: tuple, token: int) -> tuple:
        out = []
        for p, k, i, chosen in state:
            if k >= 0 and self.tokens[p][k][i] == token:
                out += [(p, k, i + 1, chosen)] if i + 1 < len(self.tokens[p][k]) else self._enter(p + 1, chosen + (k,))
        return tuple(out)

    def accepting(self, state: tuple) -> bool:
        return any(k < 0 for _, k, _, _ in state)

    def text(self, seq: list[int]) -> str:
        """The text of the path ``seq`` reads (a path cut short is completed with each
        remaining part's first wording, so that the text stays whole)."""
        state = self.start()
        for t in seq:
            after = self.advance(state, t)
            if not after:
                break
            state = after
        p, k, _, chosen = next((place for place in state if place[1] < 0), state[0])
        chosen = chosen if k < 0 else chosen + (k,) + (0,) * (len(self.texts) - p - 1)
        return "".join(self.texts[part][c] for part, c in enumerate(chosen))


def tidy(text: str) -> str:
    """Readable text from an uncased WordPiece decode: no space before punctuation or inside
    brackets, AU names in capitals, sentences capitalised."""
    text = re.sub(r"\s+([.,;:!?)])", r"\1", text.strip())
    text = re.sub(r"\(\s+", "(", text)
    text = re.sub(r"\bau\s?(\d+)", r"AU\1", text)
    names = {name.lower(): name for name in AU_NAMES.values()}
    text = re.sub(r"\(([a-z ]+)\)", lambda m: f"({names.get(m.group(1), m.group(1))})", text)
    return re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
