"""Metrics in the paper's table formats. Missing labels (-1) are masked out, never read as 0.

* AU (Table II): F1 per AU at a 0.5 threshold on probabilities, and their mean.
* Emotion (Table III): accuracy of each class (its recall), their mean, plus overall accuracy
  and macro-F1.
* Captions (explanations): BLEU-4, ROUGE-L and CIDEr-D from the COCO caption evaluation code.
A score with nothing to score (no labelled samples; F1 with no positives and no predicted
positives) is NaN and left out of the means.
"""

from __future__ import annotations

import warnings

import numpy as np

from mf2.data.labels import AUS, EMOTIONS, MISSING


def _mean(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _au_counts(pred: np.ndarray, labels: np.ndarray, thresholds=0.5) -> np.ndarray:
    """Per-row [N, 3, 12] true positives, false positives, false negatives (missing labels count
    nowhere); probabilities are thresholded at ``thresholds`` (one, or one per AU)."""
    pred = (pred >= np.asarray(thresholds)) if pred.dtype.kind == "f" else pred.astype(bool)
    valid = labels != MISSING
    pos = (labels == 1) & valid
    return np.stack([pos & pred, ~pos & pred & valid, pos & ~pred]).transpose(1, 0, 2).astype(np.int64)


def _emotion_counts(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row [N, 2, 8] (correct, labelled) one-hot by true class."""
    pred = pred.argmax(1) if pred.ndim == 2 else pred
    valid = labels != MISSING
    onehot = np.zeros((len(labels), len(EMOTIONS)), dtype=np.int64)
    onehot[np.flatnonzero(valid), labels[valid]] = 1
    return np.stack([onehot * (pred == labels)[:, None], onehot], 1)


def _f1(counts: np.ndarray) -> np.ndarray:
    """[..., 3, k] (tp, fp, fn) -> [..., k] F1, NaN where there is nothing to score."""
    tp, fp, fn = counts[..., 0, :], counts[..., 1, :], counts[..., 2, :]
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


def _recall(counts: np.ndarray) -> np.ndarray:
    """[..., 2, k] (correct, labelled) -> [..., k] per-class accuracy, NaN for an absent class."""
    correct, labelled = counts[..., 0, :], counts[..., 1, :]
    return np.where(labelled > 0, correct / np.maximum(labelled, 1), np.nan)


def au_f1(pred: np.ndarray, labels: np.ndarray, thresholds=0.5) -> dict:
    """pred [N, 12] in {0, 1} (or probabilities, thresholded at ``thresholds``: 0.5, the paper's,
    or one per AU), labels [N, 12] in {0, 1, -1}."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    if pred.shape != labels.shape or pred.ndim != 2 or pred.shape[1] != len(AUS):
        raise ValueError(f"pred and labels: expected matching [N, {len(AUS)}] arrays, got {pred.shape} and {labels.shape}")
    f1 = _f1(_au_counts(pred, labels, thresholds).sum(0))
    return {"per_au": {au: float(v) for au, v in zip(AUS, f1)}, "mean": _mean(f1),
            "support": {au: int(v) for au, v in zip(AUS, (labels != MISSING).sum(0))}}


def emotion_scores(pred: np.ndarray, labels: np.ndarray) -> dict:
    """pred [N] class indices (or [N, 8] scores), labels [N] in 0..7 or -1."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    if pred.ndim == 2:
        pred = pred.argmax(1)
    if pred.shape != labels.shape or pred.ndim != 1:
        raise ValueError(f"pred and labels: expected matching [N] arrays, got {pred.shape} and {labels.shape}")
    valid = labels != MISSING
    pred, labels = pred[valid], labels[valid]
    k = len(EMOTIONS)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    support = confusion.sum(1)
    recall = _recall(np.stack([np.diag(confusion), support]))
    predicted = confusion.sum(0)
    precision = np.where(predicted > 0, np.diag(confusion) / np.maximum(predicted, 1), 0.0)
    f1 = np.where(support > 0, 2 * precision * np.nan_to_num(recall) /
                  np.maximum(precision + np.nan_to_num(recall), 1e-12), np.nan)
    return {
        "per_class_accuracy": {e: float(v) for e, v in zip(EMOTIONS, recall)},
        "mean_accuracy": _mean(recall),
        "overall_accuracy": float((pred == labels).mean()) if len(labels) else float("nan"),
        "macro_f1": _mean(f1),
        "confusion": confusion.tolist(),
        "support": {e: int(v) for e, v in zip(EMOTIONS, support)},
    }


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 3)


def tune_thresholds(probs: np.ndarray, labels: np.ndarray, grid=THRESHOLD_GRID) -> np.ndarray:
    """Each AU's decision threshold [12] that maximises its F1 on these labels (ties: the one
    closest to 0.5; an AU never present keeps 0.5). Rare AUs mostly get a threshold below 0.5."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    out = np.full(labels.shape[1], 0.5)
    for k in range(labels.shape[1]):
        valid = labels[:, k] != MISSING
        y, p = labels[valid, k] == 1, probs[valid, k]
        if not y.any():
            continue
        pred = p[None, :] >= np.asarray(grid)[:, None]  # [grid, n]
        tp, fp, fn = (pred & y).sum(1), (pred & ~y).sum(1), (~pred & y).sum(1)
        f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        best = np.flatnonzero(f1 == f1.max())
        out[k] = float(np.asarray(grid)[best[np.argmin(np.abs(np.asarray(grid)[best] - 0.5))]])
    return out


def all_active_au_f1(labels: np.ndarray) -> float:
    """Mean AU F1 of calling every AU active (2p / (1 + p) for prevalence p): what a model that
    has learnt nothing about AUs scores at best."""
    labels = np.asarray(labels)
    valid = labels != MISSING
    p = ((labels == 1) & valid).sum(0) / np.maximum(valid.sum(0), 1)
    return _mean(np.where(valid.any(0), 2 * p / (1 + p), np.nan))


def validation_row(emo: np.ndarray, au: np.ndarray, y_emo: np.ndarray, y_au: np.ndarray) -> dict:
    """The per-epoch log's validation columns from probabilities and labels: the Table II/III
    metrics at threshold 0.5, AU F1 at thresholds tuned on these labels (``au_thresholds``, kept
    with the epoch's checkpoint), and the chance references the trainer's warnings use."""
    e, a = emotion_scores(emo, y_emo), au_f1(au, y_au)
    thresholds = tune_thresholds(au, y_au)
    return {"val_au_f1": a["mean"], "val_emotion_mean_acc": e["mean_accuracy"], "val_emotion_acc": e["overall_accuracy"],
            "val_emotion_macro_f1": e["macro_f1"], "val_au_f1_tuned": au_f1(au, y_au, thresholds)["mean"],
            "val_au_f1_all_active": all_active_au_f1(y_au), "au_thresholds": thresholds.tolist()}


def selection_score(row: dict, tasks: str = "both") -> float:
    """What picks a run's best epoch: the mean of validation AU mean F1 (at 0.5) and emotion
    mean accuracy; a run trained on one task scores that task alone. NaN counts as 0."""
    parts = {"au": [row.get("val_au_f1")], "emotion": [row.get("val_emotion_mean_acc")],
             "both": [row.get("val_au_f1"), row.get("val_emotion_mean_acc")]}[tasks]
    return float(np.mean([v if v is not None and v == v else 0.0 for v in parts]))


def paired_bootstrap(a: tuple, b: tuple, labels: tuple, groups=None, resamples: int = 1000, seed: int = 0) -> dict:
    """A − B on the same images, with a 95% percentile interval from resampling ``groups``
    (e.g. videos: frames of one video are not independent) with replacement.

    a, b: (emotion scores [N, 8], AU probabilities [N, 12]) of two models; labels: (emotion [N],
    AUs [N, 12]); groups: [N] group keys (None: every image its own group). Returns
    {'au_mean_f1': {a, b, diff, low, high}, 'emotion_mean_accuracy': {...}, 'groups', 'resamples'}.
    """
    y_emo, y_au = (np.asarray(x) for x in labels)
    n = len(y_emo)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if resamples < 1:
        raise ValueError(f"paired_bootstrap: resamples must be at least 1, got {resamples}")
    if len(groups) != n or any(len(x) != n for m in (a, b) for x in m):
        raise ValueError("paired_bootstrap: both models' predictions, the labels and the groups must cover the same images")
    keys, index = np.unique(groups, return_inverse=True)

    def per_group(counts):  # [N, ...] -> [G, ...]
        out = np.zeros((len(keys),) + counts.shape[1:], dtype=np.int64)
        np.add.at(out, index, counts)
        return out

    # name -> (score of [..., counts] summed over the images, A's and B's per-video counts)
    metrics = {"au_mean_f1": (_f1, _au_counts, 1, y_au), "emotion_mean_accuracy": (_recall, _emotion_counts, 0, y_emo)}
    counts = {name: (per_score, per_group(counts_of(np.asarray(a[k]), y)), per_group(counts_of(np.asarray(b[k]), y)))
              for name, (per_score, counts_of, k, y) in metrics.items()}
    def score(per_score, c):  # [..., counts] -> [...] mean over the AUs / classes with anything to score
        return np.nanmean(per_score(c), -1)

    diffs = {name: [] for name in counts}
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():  # a resample without any labelled example of a class/AU scores NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        for start in range(0, resamples, 100):  # [<=100, G] resample weights at a time: bounded memory
            w = rng.multinomial(len(keys), np.full(len(keys), 1 / len(keys)), size=min(100, resamples - start))
            for name, (per_score, ga, gb) in counts.items():
                diffs[name].append(score(per_score, np.tensordot(w, ga, axes=(1, 0))) -
                                   score(per_score, np.tensordot(w, gb, axes=(1, 0))))
        result = {"groups": int(len(keys)), "images": int(n), "resamples": int(resamples)}
        for name, (per_score, ga, gb) in counts.items():
            sa, sb = float(score(per_score, ga.sum(0))), float(score(per_score, gb.sum(0)))
            low, high = np.nanpercentile(np.concatenate(diffs[name]), [2.5, 97.5])
            result[name] = {"a": sa, "b": sb, "diff": sa - sb, "low": float(low), "high": float(high)}
    return result


def caption_scores(hypotheses: list[str], references: list[list[str]]) -> dict:
    """BLEU-4, ROUGE-L and CIDEr-D of each generated text against its references, over the
    corpus, by the COCO caption evaluation code (``pycocoevalcap``). Texts are compared as
    lower-case words without punctuation, what its PTB tokenizer (which needs Java) gives."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    from mf2.captions.consistency import words

    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(f"caption scores need one or more texts, each with references: got {len(hypotheses)} texts, "
                         f"{len(references)} reference lists")
    res = {i: [" ".join(words(h)) or "."] for i, h in enumerate(hypotheses)}  # an empty text scores 0, not an error
    gts = {i: [" ".join(words(r)) or "." for r in refs] for i, refs in enumerate(references)}
    bleu = Bleu(4).compute_score(gts, res, verbose=0)[0][3]
    return {"bleu4": float(bleu), "rouge_l": float(Rouge().compute_score(gts, res)[0]),
            "cider": float(Cider().compute_score(gts, res)[0])}
