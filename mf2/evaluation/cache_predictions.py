"""A model's predictions over a feature cache (images only, Appendix G): what every epoch's
validation and ``mf2 evaluate`` score."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from mf2.devices import autocast
from mf2.evaluation.metrics import au_f1, caption_scores, emotion_scores, validation_row
from mf2.features.reader import CacheReader, prefetch
from mf2.features.store import store_path
from mf2.data.labels import AUS
from mf2.models.explain import GROUNDINGS
from mf2.runs import RunFolder, check_features, load_model
from mf2.features import schema


TTAS = (None, "flip")


def check_tta(tta) -> None:
    if tta not in TTAS:
        raise ValueError(f"tta: expected 'flip' or none, got {tta!r}")


@torch.no_grad()
def predict_split(model, reader: CacheReader, device, batch_size: int = 128, precision: str = "fp32",
                  tta: str | None = None):
    """(emotion probs [N, 8], AU probs [N, 12], emotion labels [N], AU labels [N, 12]) of the
    reader's rows, from images only. ``model`` is an ``MF2`` or a ``DFNModel``. ``tta='flip'``
    averages each face's probabilities with its mirrored view's (a store with ``--augment flip``;
    the mirrored landmarks swap each AU's two centres, as in training)."""
    check_tta(tta)
    out = _predict_view(model, reader, device, batch_size, precision)
    if tta == "flip":
        mirrored = copy.copy(reader)
        mirrored.view, mirrored.flip = "flip", False
        if schema.flipped(schema.TOKENS) not in reader.store.group:
            raise ValueError(f"{store_path(reader.store.group)}: the store holds no mirrored views for --tta flip "
                             "(extract it with --augment flip)")
        emo, au = _predict_view(model, mirrored, device, batch_size, precision)[:2]
        out = ((out[0] + emo) / 2, (out[1] + au) / 2, *out[2:])
    return out


def _predict_view(model, reader: CacheReader, device, batch_size: int, precision: str):
    model.eval()
    emo, au, y_emo, y_au = [], [], [], []
    for batch in prefetch(reader.batches(batch_size, shuffle=False, drop_last=False), device):
        with autocast(precision, device):
            e, a = model.predict(batch["tokens"], batch["au_tokens"])
        emo.append(e.cpu())
        au.append(a.cpu())
        y_emo.append(batch["emotion"].cpu())
        y_au.append(batch["aus"].cpu())
    return (torch.cat(emo).numpy(), torch.cat(au).numpy(), torch.cat(y_emo).numpy(), torch.cat(y_au).numpy())


def validation_metrics(model, reader: CacheReader, device, precision: str = "fp32") -> dict:
    """The per-epoch log's validation columns of ``model`` on ``reader``'s rows."""
    return validation_row(*predict_split(model, reader, device, precision=precision))


def open_run(run, cache, split: str, device):
    """A run's model (its default checkpoint), that checkpoint's path, and a reader of the cache
    split, after checking that the cache holds the features the run was trained on."""
    model, _, ckpt = load_model(run, device)
    reader = CacheReader(cache, split, model.cfg.emo_text)
    check_features(RunFolder(run).features(), reader.store.signature, f"{cache} for {run}")
    return model, ckpt, reader


def run_predictions(run, cache, split: str, device, precision: str = "fp32", opened=None, tta: str | None = None) -> dict:
    """A run's probabilities on a cache split, its labels, each image's video, and its scores
    (``opened``: what ``open_run`` gave, to load the model once for several uses; ``tta``: as in
    ``predict_split``)."""
    model, ckpt, reader = opened or open_run(run, cache, split, device)
    emo_p, au_p, y_emo, y_au = predict_split(model, reader, torch.device(device), precision=precision, tta=tta)
    videos = [str(v) for v in reader.store.group[schema.VIDEO][:][reader.rows].tolist()]
    ids = [str(v) for v in reader.store.group[schema.IDS][:][reader.rows].tolist()]
    thresholds = RunFolder.checkpoint_state(ckpt).get("au_thresholds")  # chosen on the run's validation split
    return {"emotion": emo_p, "aus": au_p, "y_emotion": y_emo, "y_aus": y_au, "checkpoint": ckpt, "ids": ids,
            "videos": None if "" in videos else np.array(videos, dtype=object),  # no ids: resample images
            "au": au_f1(au_p, y_au), "emo": emotion_scores(emo_p, y_emo),
            "au_tuned": {**au_f1(au_p, y_au, thresholds), "thresholds": dict(zip(AUS, thresholds))} if thresholds else None}


@torch.no_grad()
def explanation_scores(run, cache, split: str, device, precision: str = "fp32", limit: int | None = 200,
                       decoding: str = "greedy", groundings=GROUNDINGS, allow_download: bool = False,
                       opened=None) -> dict:
    """A run's explanations (``predict --explain``) on the first ``limit`` rows of a cache split
    (None: all), measured per decoder (``groundings``: 'heads', the grounded default, and 'none',
    the decoder alone), each AU active at the run's tuned threshold (0.5 where it has none):

    * ``consistent``, ``emotion``, ``cues``, ``au_sentences``: the rates of
      ``captions.consistency`` over faces (the heads' emotion named and no other; only active
      AUs named; no active AU called at rest);
    * ``au_sentences_correct``: of the heads' active AUs, those whose sentence is the AU's own
      description of that state in the FACS vocabulary (``consistency.au_sentence_correct``);
    * ``repeated_ngrams``: sentences that repeat a word 3-gram, over all sentences;
    * ``bleu4``, ``rouge_l``, ``cider``: the explanation against the split's own reference text
      (the cache's caption of the face and the per-AU sentences of its labelled active AUs);
    * ``explanations_per_s``: faces explained per second (the explanation alone, after the heads).

    ``opened``: as in ``run_predictions``."""
    from mf2.captions.consistency import au_sentence_correct, repeats, sentences, summarise
    from mf2.features.backbones import load_tokenizer
    from mf2.models.explain import Explainer, tidy

    model, ckpt, reader = opened or open_run(run, cache, split, device)
    signature = RunFolder(run).features()
    if limit is not None:  # a copy: the reader may be shared with run_predictions
        reader = copy.copy(reader)
        reader.rows = reader.rows[:limit]
    thresholds = RunFolder.checkpoint_state(ckpt).get("au_thresholds") or 0.5
    tokenizer = load_tokenizer(signature["text"]["name"], allow_download)
    base = getattr(model, "mf2", model)  # a DFN explains with its frozen MF²
    explainers = {g: Explainer(base, tokenizer, signature["text"], decoding, threshold=thresholds, grounding=g)
                  for g in groundings}
    references = _reference_texts(reader, base.cfg.emo_text, tokenizer, tidy)
    made = {g: [] for g in groundings}
    seconds = dict.fromkeys(groundings, 0.0)
    device = torch.device(device)
    for batch in prefetch(reader.batches(32, shuffle=False, drop_last=False), device):
        with autocast(precision, device):
            emo, au = (t.float().cpu().numpy() for t in model.predict(batch["tokens"], batch["au_tokens"]))
            for g, explainer in explainers.items():
                t0 = time.perf_counter()
                made[g] += [(e, au[i] >= explainer.thresholds) for i, e in enumerate(
                    explainer.explain(batch["tokens"], batch["au_tokens"], au, emo))]
                seconds[g] += time.perf_counter() - t0
    out = {}
    for g, pairs in made.items():
        said = [sentences(e.text) for e, _ in pairs]
        active = [(a, e.au_sentences.get(a, "")) for e, on in pairs for a, is_on in zip(AUS, on) if is_on]
        n_sentences = sum(map(len, said))
        out[g] = {**summarise([e.consistency for e, _ in pairs]),
                  "au_sentences_correct": round(sum(au_sentence_correct(a, s, True) for a, s in active) / len(active), 4)
                  if active else None, "active_aus": len(active),
                  "repeated_ngrams": round(sum(repeats(s) for ss in said for s in ss) / max(n_sentences, 1), 4),
                  "sentences": n_sentences,
                  **{k: round(v, 4) for k, v in caption_scores([e.text for e, _ in pairs], references).items()},
                  "explanations_per_s": round(len(pairs) / max(seconds[g], 1e-9), 2),
                  "examples": [{"text": e.text, **e.consistency.as_dict()} for e, _ in pairs[:5]]}
    return {"faces": len(reader.rows), "decoding": decoding, "thresholds": "tuned" if isinstance(thresholds, list) else 0.5,
            "decoders": out}


def _reference_texts(reader: CacheReader, emo_text: str, tokenizer, tidy) -> list[list[str]]:
    """Each row's reference explanation, from the cache's own text: its ``emo_text`` caption and
    the sentences of the AUs its labels call active (as the frozen text encoder's tokens)."""
    g, rows = reader.store.group, reader.rows
    labels = g[schema.AUS][:][rows]

    def text(ids):
        return tidy(tokenizer.decode([int(i) for i in ids if i > 0], skip_special_tokens=True))

    caps = [text(ids) for ids in g[schema.text(emo_text, "ids")][:][rows]] if schema.text(emo_text, "ids") in g else [""] * len(rows)
    per_au = g[schema.text(schema.AU_SENTENCES, "ids")][:][rows] if schema.text(schema.AU_SENTENCES, "ids") in g else None
    return [[" ".join([caps[i]] * bool(caps[i]) + ([text(per_au[i, k]) for k in np.flatnonzero(labels[i] == 1)]
                                                   if per_au is not None else []))] for i in range(len(rows))]
