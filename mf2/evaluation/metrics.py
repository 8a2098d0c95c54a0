"""Metrics in the paper's table formats. Missing labels (-1) are masked out, never read as 0.

* AU (Table II): F1 per AU at a 0.5 threshold on probabilities, and their mean.
* Emotion (Table III): accuracy of each class (its recall), their mean, plus overall accuracy
  and macro-F1.
A score with nothing to score (no labelled samples; F1 with no positives and no predicted
positives) is NaN and left out of the means.
"""

from __future__ import annotations

import numpy as np

from mf2.data.labels import AUS, EMOTIONS, MISSING


def _mean(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def au_f1(pred: np.ndarray, labels: np.ndarray) -> dict:
    """pred [N, 12] in {0, 1} (or probabilities, thresholded at 0.5), labels [N, 12] in {0, 1, -1}."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    if pred.shape != labels.shape or pred.ndim != 2 or pred.shape[1] != len(AUS):
        raise ValueError(f"pred and labels: expected matching [N, {len(AUS)}] arrays, got {pred.shape} and {labels.shape}")
    if pred.dtype.kind == "f":
        pred = pred >= 0.5
    valid = labels != MISSING
    pos, hit = (labels == 1) & valid, pred.astype(bool) & valid
    tp = (pos & hit).sum(0)
    fp = (~pos & hit & valid).sum(0)
    fn = (pos & ~hit).sum(0)
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)
    return {"per_au": {au: float(v) for au, v in zip(AUS, f1)}, "mean": _mean(f1),
            "support": {au: int(v) for au, v in zip(AUS, valid.sum(0))}}


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
    recall = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
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
