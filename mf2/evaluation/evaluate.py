"""``mf2 evaluate``: a trained run on a cache split -> Table II/III-style results.

Writes ``<run>/eval_<split>/`` with ``metrics.json``, ``tables.md`` (our row beside the paper's
rows), ``au_f1.png`` (per-AU F1 bars), ``confusion.png`` (emotion confusion matrix) and
``curves.png`` (training loss and validation metrics per epoch). Images only are used.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from mf2.data.labels import AUS, EMOTIONS
from mf2.data.manifest import atomic_write_text
from mf2.evaluation.metrics import au_f1, emotion_scores, paired_bootstrap
from mf2.evaluation.paper import TABLE_II, TABLE_III, TABLE_V


def base_run(run, config: dict) -> Path:
    """The pretrained MF² folder a DFN run was trained on top of. It is saved as an absolute
    path; when that folder has moved (or an older run saved a path relative to where it was
    trained), a folder of that name beside the DFN run is used."""
    saved = Path(config["base_run"])
    for candidate in (saved, Path(run).parent / saved, Path(run).parent / saved.name):
        if (candidate / "config.json").is_file():
            return candidate
    raise ValueError(f"{run}: its base MF² run {saved} is not there (nor beside the DFN run)")


def load_run(run, device: str = "cpu"):
    """The model of a run folder (its latest checkpoint) and its saved config."""
    from mf2.models.config import MF2Config
    from mf2.models.mf2 import MF2
    from mf2.training.checkpoint import latest_checkpoint, load_model_state

    run = Path(run)
    if not (run / "config.json").is_file():
        raise ValueError(f"{run}: not a run folder (no config.json)")
    config = json.loads((run / "config.json").read_text())
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise ValueError(f"{run}: no checkpoint yet")
    if config.get("kind") == "dfn":  # a frozen MF² (its own run) with this run's DFN
        from mf2.models.dfn import DFN, DFNConfig
        from mf2.training.finetune import DFNModel

        mf2, _, _ = load_run(base_run(run, config), device)
        dfn = DFN(mf2.cfg, DFNConfig(**config["dfn"]))
        dfn.load_state_dict(load_model_state(ckpt))
        return DFNModel(mf2, dfn.to(device)).eval(), config, ckpt
    model = MF2(MF2Config(**config["model"]))
    state = load_model_state(ckpt)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("dfn.")]:
        raise ValueError(f"{ckpt}: checkpoint does not match the model ({len(missing)} missing, {len(unexpected)} unexpected)")
    return model.to(device).eval(), config, ckpt


def _row(name, values):
    return "| " + name + " | " + " | ".join(f"{v:.2f}" if v == v else "–" for v in values) + " |"


def markdown_tables(au: dict, emo: dict, name: str, probe: dict | None = None, beside: dict | None = None,
                    transition: bool = False) -> str:
    """Tables II and III with our row(s) under the paper's; ``beside`` maps other runs' names
    to their (au, emo) results; ``transition`` (this run is AU-pretrained, emotion-fine-tuned)
    adds a Table V (emotion Avg.) section."""
    au_vals = [100 * au["per_au"][a] for a in AUS] + [100 * au["mean"]]
    emo_vals = [100 * emo["per_class_accuracy"][e] for e in EMOTIONS] + [100 * emo["mean_accuracy"]]
    beside = beside or {}
    lines = ["### AU recognition, F1 (%) (cf. paper Table II)", "",
             "| Model | " + " | ".join(list(AUS) + ["Avg."]) + " |", "|" + "---|" * (len(AUS) + 2)]
    lines += [_row(f"paper: {k}", v) for k, v in TABLE_II.items()] + [_row(f"**ours: {name}**", au_vals)]
    lines += [_row(f"ours: {n}", [100 * a["per_au"][x] for x in AUS] + [100 * a["mean"]]) for n, (a, _, _) in beside.items()]
    if probe:
        lines.append(_row("ours: linear probe, pooled features", [100 * probe["au"]["per_au"][a] for a in AUS] +
                          [100 * probe["au"]["mean"]]))
    lines += ["", "### Emotion recognition, per-class accuracy (%) (cf. paper Table III)", "",
              "| Model | " + " | ".join(list(EMOTIONS) + ["Avg."]) + " |", "|" + "---|" * (len(EMOTIONS) + 2)]
    lines += [_row(f"paper: {k}", v) for k, v in TABLE_III.items()] + [_row(f"**ours: {name}**", emo_vals)]
    lines += [_row(f"ours: {n}", [100 * e["per_class_accuracy"][x] for x in EMOTIONS] + [100 * e["mean_accuracy"]])
              for n, (_, e, _) in beside.items()]
    if probe:
        lines.append(_row("ours: linear probe, pooled features",
                          [100 * probe["emotion"]["per_class_accuracy"][e] for e in EMOTIONS] +
                          [100 * probe["emotion"]["mean_accuracy"]]))
    if transition:
        lines += ["", "### AU pretraining -> emotion fine-tuning, emotion Avg. (%) (cf. paper Table V)", "",
                  "| Model | Avg. |", "|---|---|"]
        lines += [f"| paper: {k} | {v:.2f} |" for k, v in TABLE_V.items()]
        lines += [f"| **ours: {name}** | {100 * emo['mean_accuracy']:.2f} |"]
        lines += [f"| ours: {n} | {100 * e['mean_accuracy']:.2f} |" for n, (_, e, _) in beside.items()]
    paired = {n: p for n, (_, _, p) in beside.items() if p}
    if paired:
        lines += ["", f"### {name} − each run beside it, on the same images (points; 95% bootstrap interval)", "",
                  "| Run beside | AU mean F1 | Emotion mean acc. | Resampled |", "|---|---|---|---|"]
        for n, p in paired.items():
            unit = f"{p['groups']} videos" if p["groups"] < p["images"] else f"{p['images']} images"
            cells = [f"{100 * p[k]['diff']:+.2f} [{100 * p[k]['low']:+.2f}, {100 * p[k]['high']:+.2f}]"
                     for k in ("au_mean_f1", "emotion_mean_accuracy")]
            lines.append(f"| {n} | " + " | ".join(cells) + f" | {p['resamples']} x {unit} |")
        lines += ["", "An interval that contains 0 means the difference is not resolved by these images."]
    lines += ["", f"Ours: overall emotion accuracy {100 * emo['overall_accuracy']:.2f}%, macro-F1 "
              f"{100 * emo['macro_f1']:.2f}%. The paper's rows are on MFA (Aff-Wild2); ours on the evaluated cache."]
    return "\n".join(lines) + "\n"


def plots(folder: Path, au: dict, emo: dict, log_path: Path | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.bar(AUS, [100 * au["per_au"][a] if au["per_au"][a] == au["per_au"][a] else 0 for a in AUS], color="#4477aa")
    ax.axhline(100 * au["mean"], color="k", lw=1, ls="--", label=f"mean {100 * au['mean']:.1f}")
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title("Per-AU F1")
    fig.tight_layout()
    fig.savefig(folder / "au_f1.png", dpi=110)
    plt.close(fig)
    written.append("au_f1.png")
    cm = np.array(emo["confusion"], dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(8), [e[:4] for e in EMOTIONS], rotation=45)
    ax.set_yticks(range(8), EMOTIONS)
    for i in range(8):
        for j in range(8):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, color="white" if norm[i, j] > 0.5 else "k")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Emotion confusion")
    fig.tight_layout()
    fig.savefig(folder / "confusion.png", dpi=110)
    plt.close(fig)
    written.append("confusion.png")
    if log_path and log_path.is_file():
        rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        if rows:
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
            epochs = [r["epoch"] for r in rows]
            a1.plot(epochs, [r.get("train_loss") for r in rows], marker="o")
            a1.set_xlabel("epoch")
            a1.set_ylabel("training loss")
            for key, label in (("val_au_f1", "AU mean F1"), ("val_emotion_mean_acc", "emotion mean acc.")):
                a2.plot(epochs, [r.get(key) for r in rows], marker="o", label=label)
            a2.set_xlabel("epoch")
            a2.set_ylim(0, 1)
            a2.legend()
            fig.tight_layout()
            fig.savefig(folder / "curves.png", dpi=110)
            plt.close(fig)
            written.append("curves.png")
    return written


def _predictions(run, cache, split, device) -> dict:
    """A run's probabilities on a cache split, its labels, each image's video, and its scores."""
    from mf2.training.data import CacheReader
    from mf2.training.pretrain import predict_split

    model, config, ckpt = load_run(run, device)
    reader = CacheReader(cache, split, model.cfg.emo_text)
    if reader.vision_dim != model.cfg.vision_dim:
        raise ValueError(f"{cache}: visual features are {reader.vision_dim}-d but {run} was trained on "
                         f"{model.cfg.vision_dim}-d features (another backbone)")
    emo_p, au_p, y_emo, y_au = predict_split(model, reader, torch.device(device))
    videos = [str(v) for v in reader.store.group["meta/video"][:][reader.rows].tolist()]
    return {"emotion": emo_p, "aus": au_p, "y_emotion": y_emo, "y_aus": y_au, "checkpoint": ckpt,
            "videos": None if "" in videos else np.array(videos, dtype=object),  # no ids: resample images
            "au": au_f1(au_p, y_au), "emo": emotion_scores(emo_p, y_emo)}


def _paired(this: dict, other: dict, resamples: int) -> dict:
    """This run − the other on the same images, resampling videos (one video's frames are not independent)."""
    return paired_bootstrap((this["emotion"], this["aus"]), (other["emotion"], other["aus"]),
                            (this["y_emotion"], this["y_aus"]), this["videos"], resamples)


def evaluate(run, cache, split: str = "val", device: str = "cpu", name: str | None = None, probe: bool = False,
             beside=(), transition: bool = False, bootstrap: int = 1000, folder=None) -> dict:
    """Scores of ``run`` (and of the ``beside`` runs, with paired bootstrap intervals of run − each
    over ``bootstrap`` resamples of the split's videos; 0 = none) written to ``folder``
    (default ``<run>/eval_<split>/``)."""
    this = _predictions(run, cache, split, device)
    au, emo = this["au"], this["emo"]
    others = {}
    for r in beside:
        other = _predictions(r, cache, split, device)
        others[Path(r).name] = (other["au"], other["emo"], _paired(this, other, bootstrap) if bootstrap else None)
    folder = Path(folder) if folder else Path(run) / f"eval_{split}"
    folder.mkdir(parents=True, exist_ok=True)
    name = name or Path(run).name
    result = {"run": str(run), "checkpoint": str(this["checkpoint"]), "cache": str(cache), "split": split,
              "images": len(this["y_emotion"]), "au": au, "emotion": emo,
              "beside": {n: {"au": a, "emotion": e, "paired": p} for n, (a, e, p) in others.items()}}
    if probe:
        from mf2.evaluation.probe import pooled_feature_probe

        result["probe"] = pooled_feature_probe(cache, split)
    atomic_write_text(folder / "metrics.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(folder / "tables.md", markdown_tables(au, emo, name, result.get("probe"), others, transition))
    result["plots"] = plots(folder, au, emo, Path(run) / "log.jsonl")
    result["folder"] = str(folder)
    return result
