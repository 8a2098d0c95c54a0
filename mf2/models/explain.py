"""Explanations (``mf2 predict --explain``): text decoded by each branch's ITG head (Appendix
G), Emo-VL's caption of the face, then AU-VL's sentence for each AU the heads call active,
prompted with that AU's name, mapped from the ITG sub-vocabulary back to words through the
text encoder's tokenizer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

from mf2.captions.consistency import Consistency, check
from mf2.data.labels import AU_NAMES, AUS, EMOTIONS, TEXT_CAPS, per_au
from mf2.models.mf2 import MF2
from mf2.models.qformer import UNK


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
    ``threshold``: one AU probability or one per AU [12] at which an AU is explained."""

    def __init__(self, model: MF2, tokenizer, text_signature: dict, decoding: str = "greedy", beams: int = 3,
                 threshold=0.5):
        self.model, self.tokenizer, self.sig = model, tokenizer, text_signature
        self.beams = beams if decoding == "beam" else 1
        self.thresholds = per_au(threshold)

    def explain(self, tokens: torch.Tensor, au_tokens: torch.Tensor, au_probs: np.ndarray,
                emo_probs: np.ndarray | None = None) -> list[Explanation]:
        """Emo-VL's generated caption, then AU-VL's sentence for each active AU, per face; with
        ``emo_probs``, each checked against the heads (the top emotion and the active AUs)."""
        model, sig = self.model, self.sig
        caps = {**TEXT_CAPS, **sig.get("caps", {})}
        end = int(model.sub_ids(torch.tensor([self.tokenizer.sep_token_id]))[0]) \
            if self.tokenizer.sep_token_id is not None else -1
        feats = model.image_features(tokens, au_tokens)
        n = tokens.shape[0]
        out = [Explanation() for _ in range(n)]
        active = np.asarray(au_probs) >= self.thresholds
        if model.emo_vl is not None and model.cfg.emo_text in sig.get("types", []):
            for i, seq in enumerate(model.emo_vl.generate(feats.emo_vision, end, caps[model.cfg.emo_text], self.beams)):
                out[i].caption = self.words(seq)
        if model.au_vl is not None and sig.get("au_sentences"):
            # each active AU's own sequence, prompted with its name ("AU12 (Lip Corner Puller)") when the
            # name's tokens are in the ITG vocabulary: the decoder then says what it sees of that AU
            vision = feats.au_vision.view(n, len(AUS), *feats.au_vision.shape[1:])
            for k, au in enumerate(AUS):
                faces = np.flatnonzero(active[:, k])
                if not len(faces):
                    continue
                seqs = model.au_vl.generate(vision[torch.from_numpy(faces).to(vision.device), k], end,
                                            caps["au_sentences"], self.beams, self.prompt(f"{au} ({AU_NAMES[au]})"))
                for i, seq in zip(faces, seqs):
                    out[i].au_sentences[au] = self.words(seq)
        if emo_probs is not None:
            for i, e in enumerate(out):
                e.consistency = check(e.caption, e.au_sentences, {a for k, a in enumerate(AUS) if active[i, k]},
                                      EMOTIONS[int(np.argmax(emo_probs[i]))])
        return out

    def prompt(self, text: str) -> list[int]:
        """``text`` as ITG sub-vocabulary indices; empty when any of its tokens is unknown."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        sub = self.model.sub_ids(torch.tensor(ids)).tolist()
        return [] if UNK in sub else sub

    def words(self, seq: list[int]) -> str:
        """Sub-vocabulary indices -> readable text."""
        vocab = self.model.cfg.vocab
        ids = [vocab[i] for i in seq if vocab[i] >= 0]
        return tidy(self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True))


def tidy(text: str) -> str:
    """Readable text from an uncased WordPiece decode: no space before punctuation or inside
    brackets, AU names in capitals, sentences capitalised."""
    text = re.sub(r"\s+([.,;:!?)])", r"\1", text.strip())
    text = re.sub(r"\(\s+", "(", text)
    text = re.sub(r"\bau\s?(\d+)", r"AU\1", text)
    names = {name.lower(): name for name in AU_NAMES.values()}
    text = re.sub(r"\(([a-z ]+)\)", lambda m: f"({names.get(m.group(1), m.group(1))})", text)
    return re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
