"""Linear probes on a cache's frozen pooled features: the floor a trained MF² must beat.

Multinomial logistic regression (emotion) and 12 binary ones (AUs) on the pooled global token
(``vision/tokens[:, 0]``: the mean-pooled map of a CNN, the CLS token of a ViT), fitted on the
train split and scored on the evaluated split with the Table II/III metrics.
"""

from __future__ import annotations

import numpy as np

from mf2.data.labels import AUS
from mf2.evaluation.baselines import logistic_baseline
from mf2.features.reader import sample_rows
from mf2.features.store import FeatureStore
from mf2.features import schema


def _rows(store: FeatureStore, split: str, limit: int | None = None, seed: int = 0):
    n = len(store)
    meta = {k: store.read(name, 0, n) for k, name in (("valid", schema.VALID), ("split", schema.SPLIT),
                                                       ("emotion", schema.EMOTION), ("aus", schema.AUS))}
    keep = sample_rows(np.flatnonzero(meta["valid"] & (meta["split"] == split)), limit, seed)
    feats = np.concatenate([store.read(schema.TOKENS, a, a + 1024)[:, 0].astype(np.float32)
                            [keep[(keep >= a) & (keep < a + 1024)] - a] for a in range(0, n, 1024)])
    emotion, aus = meta["emotion"][keep], meta["aus"][keep]
    rows = [{"emotion": int(e), **{au: int(v) for au, v in zip(AUS, a)}} for e, a in zip(emotion, aus)]
    return feats, rows


def pooled_feature_probe(cache, split: str = "val", train_rows: int | None = None, seed: int = 0,
                         predictions: bool = False) -> dict:
    """The probes fitted on the train split (``train_rows`` of it drawn with ``seed``, as
    ``pretrain --train-rows`` draws them), scored on ``split``."""
    store = FeatureStore.open(cache)
    store.verify([schema.VALID, schema.SPLIT, schema.EMOTION, schema.AUS, schema.TOKENS])
    train_x, train_rows = _rows(store, "train", train_rows, seed)
    x, rows = _rows(store, split)
    if not len(train_rows) or not len(rows):
        raise ValueError(f"{cache}: the probe needs rows in both the train and {split} splits")
    result = logistic_baseline(train_x, train_rows, x, rows, predictions=predictions)
    result["features"] = "pooled global token (vision/tokens[:, 0])"
    return result
