"""Explanations (``mf2 predict --explain``): text decoded by each branch's ITG head (Appendix
G), Emo-VL's caption of the face, then AU-VL's sentence for each AU the heads call active,
prompted with that AU's name, mapped from the ITG sub-vocabulary back to words through the
text encoder's tokenizer."""

from __future__ import annotations

import re

import numpy as np
import torch

from mf2.data.labels import AU_NAMES, AUS, TEXT_CAPS
from mf2.models.mf2 import MF2
from mf2.models.qformer import UNK


class Explainer:
    """Decodes descriptions from an MF² (a DFN run explains with its frozen MF²).

    ``text_signature`` is the ``text`` part of the cache signature the run was trained on (the
    caption types and token caps); ``decoding`` is 'greedy' or 'beam' (``beams`` wide)."""

    def __init__(self, model: MF2, tokenizer, text_signature: dict, decoding: str = "greedy", beams: int = 3,
                 threshold: float = 0.5):
        self.model, self.tokenizer, self.sig = model, tokenizer, text_signature
        self.beams = beams if decoding == "beam" else 1
        self.threshold = threshold

    def explain(self, tokens: torch.Tensor, au_tokens: torch.Tensor, au_probs: np.ndarray) -> list[str]:
        """Emo-VL's generated caption, then AU-VL's sentence for each active AU, per face."""
        model, sig = self.model, self.sig
        caps = {**TEXT_CAPS, **sig.get("caps", {})}
        end = int(model.sub_ids(torch.tensor([self.tokenizer.sep_token_id]))[0]) \
            if self.tokenizer.sep_token_id is not None else -1
        feats = model.image_features(tokens, au_tokens)
        n = tokens.shape[0]
        parts = [[] for _ in range(n)]  # (order, text) per face
        if model.emo_vl is not None and model.cfg.emo_text in sig.get("types", []):
            for i, seq in enumerate(model.emo_vl.generate(feats.emo_vision, end, caps[model.cfg.emo_text], self.beams)):
                parts[i].append((-1, self.words(seq)))
        if model.au_vl is not None and sig.get("au_sentences"):
            # each active AU's own sequence, prompted with its name ("AU12 (Lip Corner Puller)") when the
            # name's tokens are in the ITG vocabulary: the decoder then says what it sees of that AU
            vision = feats.au_vision.view(n, len(AUS), *feats.au_vision.shape[1:])
            for k, au in enumerate(AUS):
                faces = np.flatnonzero(au_probs[:, k] >= self.threshold)
                if not len(faces):
                    continue
                seqs = model.au_vl.generate(vision[torch.from_numpy(faces).to(vision.device), k], end,
                                            caps["au_sentences"], self.beams, self.prompt(f"{au} ({AU_NAMES[au]})"))
                for i, seq in zip(faces, seqs):
                    parts[i].append((k, self.words(seq)))
        return [" ".join(text for _, text in sorted(p, key=lambda x: x[0])) for p in parts]

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
