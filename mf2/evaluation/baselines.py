"""Floors for every trained model: logistic regression on given features, fitted on the train
split and scored on the val split with the Table II/III metrics -- on downsampled grey pixels
(written into a data set's ``stats.json``) and on a cache's pooled features (``probe.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mf2.data.labels import AUS, EMOTIONS, MISSING
from mf2.data.manifest import Manifest, read_manifest
from mf2.evaluation.metrics import au_f1, emotion_scores
from mf2.features.pixels import load_image
from mf2.io import atomic_write_text


def pixel_features(manifest: Manifest, rows: list[dict], side: int = 16) -> np.ndarray:
    """Grey images resized to side x side, flattened: [N, side * side] in [0, 1]."""
    out = np.empty((len(rows), side * side), dtype=np.float32)
    for i, row in enumerate(rows):  # decoded like every image mf2 reads (bit depth, alpha, modes)
        im = Image.fromarray(load_image(manifest.image_path(row))).convert("L")
        out[i] = np.asarray(im.resize((side, side), Image.Resampling.BOX), dtype=np.float32).ravel() / 255
    return out


def _fit_linear(x: torch.Tensor, loss_fn, n_out: int, weight_decay: float, iters: int = 200) -> torch.nn.Linear:
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], n_out).double()
    opt = torch.optim.LBFGS(model.parameters(), max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(x)) + weight_decay * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def logistic_baseline(train_x: np.ndarray, train_rows: list[dict], val_x: np.ndarray, val_rows: list[dict],
                      weight_decay: float = 1e-3, predictions: bool = False) -> dict:
    """Multinomial LR for the emotion and one binary LR per AU on given features [N, D]; with
    ``predictions``, also the val probabilities (``emotion_probs`` [N, 8], ``au_probs`` [N, 12])."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xt = torch.from_numpy((train_x - mean) / std).double()
    xv = torch.from_numpy((val_x - mean) / std).double()
    emo_t = torch.tensor([r["emotion"] for r in train_rows])
    aus_t = torch.tensor([[r[a] for a in AUS] for r in train_rows]).double()
    keep = emo_t != MISSING
    emo_model = _fit_linear(xt[keep], lambda z: torch.nn.functional.cross_entropy(z, emo_t[keep]),
                            len(EMOTIONS), weight_decay)
    mask = aus_t != MISSING

    def au_loss(z):
        bce = torch.nn.functional.binary_cross_entropy_with_logits(z, aus_t.clamp(min=0), reduction="none")
        return (bce * mask).sum() / mask.sum().clamp(min=1)

    au_model = _fit_linear(xt, au_loss, len(AUS), weight_decay)
    with torch.no_grad():
        emo_probs = torch.softmax(emo_model(xv), 1).numpy()
        emo_pred = emo_probs.argmax(1)
        au_prob = torch.sigmoid(au_model(xv)).numpy()
    emo = emotion_scores(emo_pred, np.array([r["emotion"] for r in val_rows]))
    au = au_f1(au_prob, np.array([[r[a] for a in AUS] for r in val_rows]))
    return {"emotion": {k: emo[k] for k in ("per_class_accuracy", "mean_accuracy", "overall_accuracy", "macro_f1")},
            "au": {k: au[k] for k in ("per_au", "mean")},
            "train_images": len(train_rows), "val_images": len(val_rows),
            **({"emotion_probs": emo_probs, "au_probs": au_prob} if predictions else {})}


def pixel_baseline(manifest: Manifest, side: int = 16) -> dict | None:
    """The pixel LR baseline on the manifest's train/val splits (None without both)."""
    train = [r for r in manifest.rows if r["split"] == "train"]
    val = [r for r in manifest.rows if r["split"] == "val"]
    if not train or not val:
        return None
    result = logistic_baseline(pixel_features(manifest, train, side), train, pixel_features(manifest, val, side), val)
    result["features"] = f"grey pixels {side}x{side}"
    return result


def add_pixel_baseline(folder) -> dict:
    """Add the pixel baseline of the data set in ``folder`` (its manifest.jsonl) to its
    stats.json; returns the updated stats."""
    folder = Path(folder)
    stats = json.loads((folder / "stats.json").read_text())
    stats["pixel_logistic_baseline"] = pixel_baseline(read_manifest(folder / "manifest.jsonl"))
    atomic_write_text(folder / "stats.json", json.dumps(stats, indent=2) + "\n")
    return stats
