"""Linear probes on a cache's frozen pooled features: the floor a trained MF² must beat.

Multinomial logistic regression (emotion) and 12 binary ones (AUs) on the pooled global token
(``vision/tokens[:, 0]``: the mean-pooled map of a CNN, the CLS token of a ViT), fitted on the
train split and scored on the evaluated split with the Table II/III metrics. ``au_region_probe``
fits each AU's binary one on that AU's own pooled region instead: what the AU features of a
cache (its map, region table, input size) hold about each AU, before any model is trained.
"""

from __future__ import annotations

import numpy as np

from mf2.data.labels import AUS
from mf2.data.labels import MISSING
from mf2.evaluation.baselines import _fit_linear, logistic_baseline
from mf2.evaluation.metrics import au_f1, tune_thresholds
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


def _check_tuning(split: str, thresholds_from: str | None) -> None:
    """Thresholds tuned on the scored split's own labels would score them optimistically: refused."""
    if thresholds_from is not None and thresholds_from == split:
        raise ValueError(f"thresholds_from: the AU thresholds would be tuned on the {split} split they are scored on; "
                         "tune them on another split (val) or score at 0.5 (thresholds_from=None)")


def pooled_feature_probe(cache, split: str = "val", train_rows: int | None = None, seed: int = 0,
                         predictions: bool = False, thresholds_from: str | None = None) -> dict:
    """The probes fitted on the train split (``train_rows`` of it drawn with ``seed``, as
    ``pretrain --train-rows`` draws them), scored on ``split``. With ``thresholds_from`` (a split,
    'val'), also ``au_tuned``: AU F1 on ``split`` at each AU's threshold tuned on that split, as a
    trained run's are (``tune_thresholds``)."""
    _check_tuning(split, thresholds_from)
    store = FeatureStore.open(cache)
    store.verify([schema.VALID, schema.SPLIT, schema.EMOTION, schema.AUS, schema.TOKENS])
    train_x, train_rows = _rows(store, "train", train_rows, seed)
    x, rows = _rows(store, split)
    if not len(train_rows) or not len(rows):
        raise ValueError(f"{cache}: the probe needs rows in both the train and {split} splits")
    result = logistic_baseline(train_x, train_rows, x, rows, predictions=predictions or thresholds_from is not None)
    result["features"] = "pooled global token (vision/tokens[:, 0])"
    if thresholds_from is not None:
        tune_x, tune_rows = _rows(store, thresholds_from)
        if not len(tune_rows):
            raise ValueError(f"{cache}: no {thresholds_from} rows to tune the probe's AU thresholds on")
        tune = logistic_baseline(train_x, train_rows, tune_x, tune_rows, predictions=True)  # the same fit, deterministic
        labels = lambda rs: np.array([[r[au] for au in AUS] for r in rs])  # noqa: E731
        thresholds = tune_thresholds(tune["au_probs"], labels(tune_rows))
        result["au_tuned"] = {**au_f1(result["au_probs"], labels(rows), thresholds),
                              "thresholds": dict(zip(AUS, thresholds.tolist())), "chosen_on": thresholds_from}
        if not predictions:
            result.pop("emotion_probs"), result.pop("au_probs")
    return result


def _region_features(store: FeatureStore, rows: np.ndarray) -> np.ndarray:
    """Each AU's region, pooled: the mean of each of its two centres' R x R samples, side by side
    [N, 12, 2C] (float32), for the given store rows."""
    n, out = len(store), []
    for a in range(0, n, 512):
        local = rows[(rows >= a) & (rows < a + 512)] - a
        if len(local):
            t = store.read(schema.AU_TOKENS, a, min(n, a + 512))[local].astype(np.float32)  # [b, 12, 2R², C]
            b, k, s2, c = t.shape
            out.append(t.reshape(b, k, 2, s2 // 2, c).mean(3).reshape(b, k, 2 * c))
    return np.concatenate(out)


def au_region_probe(cache, split: str = "val", train_rows: int | None = None, seed: int = 0,
                    weight_decay: float = 1e-3, thresholds_from: str | None = None, predictions: bool = False) -> dict:
    """Per AU, a binary logistic regression on that AU's own pooled region (``_region_features``),
    fitted on the train split (``train_rows`` of it, drawn as ``pretrain --train-rows`` draws them)
    and scored on ``split``: per-AU F1 at 0.5 and their mean. With ``thresholds_from`` (a split,
    'val'), also ``au_tuned``: F1 on ``split`` at each AU's threshold tuned on that split (as a
    trained run's are); with ``predictions``, the probabilities (``au_probs``), labels and videos."""
    import torch

    _check_tuning(split, thresholds_from)
    store = FeatureStore.open(cache)
    store.verify([schema.VALID, schema.SPLIT, schema.AUS, schema.AU_TOKENS])
    n = len(store)
    meta = {k: store.read(name, 0, n) for k, name in (("valid", schema.VALID), ("split", schema.SPLIT), ("aus", schema.AUS))}
    rows_of = lambda s: np.flatnonzero(meta["valid"] & (meta["split"] == s))  # noqa: E731
    train = sample_rows(rows_of("train"), train_rows, seed)
    scored = {split: rows_of(split), **({thresholds_from: rows_of(thresholds_from)} if thresholds_from else {})}
    if not len(train) or not all(len(r) for r in scored.values()):
        raise ValueError(f"{cache}: the probe needs rows in the train and {' and '.join(scored)} splits")
    xt, yt = _region_features(store, train), meta["aus"][train]
    xs = {s: _region_features(store, r) for s, r in scored.items()}
    probs = {s: np.zeros((len(r), len(AUS)), dtype=np.float64) for s, r in scored.items()}
    for k in range(len(AUS)):
        mean, std = xt[:, k].mean(0), xt[:, k].std(0) + 1e-6
        keep = yt[:, k] != MISSING
        x = torch.from_numpy((xt[keep, k] - mean) / std).double()
        y = torch.from_numpy(yt[keep, k].astype(np.float64))
        model = _fit_linear(x, lambda z, y=y: torch.nn.functional.binary_cross_entropy_with_logits(z[:, 0], y), 1,
                            weight_decay)
        with torch.no_grad():
            for s in scored:
                probs[s][:, k] = torch.sigmoid(model(torch.from_numpy((xs[s][:, k] - mean) / std).double()))[:, 0].numpy()
    ys = meta["aus"][scored[split]]
    scores = au_f1(probs[split], ys)
    result = {"au": {"per_au": scores["per_au"], "mean": scores["mean"]}, "train_images": int(len(train)),
              "images": int(len(scored[split])),
              "features": "each AU's own pooled region (vision/au_tokens, mean per centre)"}
    if thresholds_from:
        thresholds = tune_thresholds(probs[thresholds_from], meta["aus"][scored[thresholds_from]])
        result["au_tuned"] = {**au_f1(probs[split], ys, thresholds), "thresholds": dict(zip(AUS, thresholds.tolist())),
                              "chosen_on": thresholds_from}
    if predictions:
        videos = store.read(schema.VIDEO, 0, n)[scored[split]]
        result.update(au_probs=probs[split], y_aus=ys, videos=np.array([str(v) for v in videos], dtype=object))
    return result
