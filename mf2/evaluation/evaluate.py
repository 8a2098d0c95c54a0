"""``mf2 evaluate``: a trained run on a cache split -> Table II/III-style results.

Writes ``<run>/eval_<split>/`` with ``metrics.json``, ``tables.md`` (our row beside the paper's
rows), ``au_f1.png`` (per-AU F1 bars), ``confusion.png`` (emotion confusion matrix) and
``curves.png`` (training loss and validation metrics per epoch), through ``report``. Images only
are used.
"""

from __future__ import annotations

import json
from pathlib import Path

from mf2.features import schema
from mf2.devices import resolve_device, resolve_precision
from mf2.evaluation.metrics import paired_bootstrap
from mf2.evaluation.cache_predictions import explanation_scores, open_run, run_predictions
from mf2.evaluation.probe import pooled_feature_probe
from mf2.evaluation.report import markdown_tables, plots
from mf2.features.store import FeatureStore
from mf2.io import atomic_write_text, refuse_overlap
from mf2.runs import RunError, RunFolder

# Where a trained run made its choices: the best epoch and each AU's threshold are picked on the
# val split of its cache (``training.loop.fit``); the test split is never read in training.
SELECTION_SPLIT = "val"


def resolve_split(cache, split: str = "auto") -> str:
    """``auto``: the cache's test split when it has valid rows in one (a split held out from every
    choice training made), else val; any other name as given."""
    if split != "auto":
        return split
    store = FeatureStore.open(cache)
    n = len(store)
    has_test = bool(((store.read(schema.SPLIT, 0, n) == "test") & store.read(schema.VALID, 0, n)).any())
    return "test" if has_test else SELECTION_SPLIT


def split_note(split: str) -> str:
    """One line saying which split chose what, and which one is scored."""
    if split == SELECTION_SPLIT:
        return (f"Scored on the {split} split, which also chose the run's best epoch and its per-AU thresholds: "
                "optimistic (hold out a test split: build-dataset or synth --test-fraction).")
    return (f"Scored on the {split} split; the run's best epoch and its per-AU thresholds were chosen on the "
            f"{SELECTION_SPLIT} split, which training read and this score does not.")


def _paired(this: dict, other: dict, resamples: int) -> dict:
    """This run − the other on the same images, resampling videos (one video's frames are not independent)."""
    return paired_bootstrap((this["emotion"], this["aus"]), (other["emotion"], other["aus"]),
                            (this["y_emotion"], this["y_aus"]), this["videos"], resamples)


def evaluate(run, cache, split: str = "auto", device: str = "cpu", name: str | None = None, probe: bool = False,
             beside=(), transition: bool = False, bootstrap: int = 1000, folder=None, precision: str = "auto",
             beside_own_cache: bool = False, explain: int = 0, decoding: str = "greedy",
             tta: str | None = None) -> dict:
    """Scores of ``run`` (and of the ``beside`` runs, with paired bootstrap intervals of run − each
    over ``bootstrap`` resamples of the split's videos; 0 = none) written to ``folder``
    (default ``<run>/eval_<split>/``, ``eval_<split>_tta_flip/`` with ``tta``). With ``beside_own_cache`` each beside run is scored on the
    cache it was trained on (another backbone, AU map or augmentation of the same images): the
    split must hold the same images in the same order, so that the differences stay paired. With
    ``explain`` (a number of rows), the run also explains that many of the split's faces with
    each decoder (grounded in the heads, and the decoder alone; ``decoding`` greedy or beam) and
    reports how often the explanation says what its heads chose, how well its sentences read, and
    how close it is to the split's reference captions (``explanation_scores``). ``split`` 'auto'
    is the cache's test split when it has one, else val (``resolve_split``). ``tta='flip'`` scores
    every run with its mirrored views averaged in (``predict_split``), and adds the paired gain of
    that over the run's plain scores (``tta_gain``)."""
    device = str(resolve_device(device))  # before anything is written
    precision = resolve_precision(precision, device)
    split = resolve_split(cache, split)
    folder = Path(folder) if folder else RunFolder(run).eval_folder(split + (f"_tta_{tta}" if tta else ""))
    refuse_overlap({"--cache": cache, "--beside": list(beside)}, {"--out": folder})
    opened = open_run(run, cache, split, device)  # loaded once for the scores and the explanations
    this = run_predictions(run, cache, split, device, precision, opened, tta=tta)
    au, emo = this["au"], this["emo"]
    others = {}
    if tta:  # the same run without the mirrored views, paired image by image
        plain = run_predictions(run, cache, split, device, precision, opened)
        others[f"{Path(run).name} without --tta"] = (plain["au"], plain["emo"],
                                                     _paired(this, plain, bootstrap) if bootstrap else None)
    for r in beside:
        other = run_predictions(r, RunFolder(r).config()["cache"] if beside_own_cache else cache, split, device,
                                precision, tta=tta)
        if other["ids"] != this["ids"]:
            raise RunError(f"{r}: its cache's {split} split holds other images than {cache}'s; paired differences need "
                           "the same images")
        others[Path(r).name] = (other["au"], other["emo"], _paired(this, other, bootstrap) if bootstrap else None)
    folder.mkdir(parents=True, exist_ok=True)
    name = name or Path(run).name
    result = {"run": str(run), "checkpoint": str(this["checkpoint"]), "cache": str(cache), "split": split,
              "selection": {"best_epoch": SELECTION_SPLIT, "au_thresholds": SELECTION_SPLIT}, "split_note": split_note(split),
              "precision": precision, "tta": tta,
              "images": len(this["y_emotion"]), "au": au, "emotion": emo, "au_tuned": this["au_tuned"],
              "beside": {n: {"au": a, "emotion": e, "paired": p} for n, (a, e, p) in others.items()}}
    if probe:
        result["probe"] = pooled_feature_probe(cache, split)
    if explain:
        result["explanations"] = explanation_scores(run, cache, split, device, precision, explain, decoding,
                                                    opened=opened)
    atomic_write_text(folder / "metrics.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(folder / "tables.md", f"{split_note(split)} {len(this['y_emotion'])} images.\n\n"
                      + markdown_tables(au, emo, name, result.get("probe"), others, transition,
                                        tuned=this["au_tuned"], split=split)
                      + explanation_lines(result.get("explanations")))
    result["plots"] = plots(folder, au, emo, RunFolder(run).log_rows())
    result["folder"] = str(folder)
    return result


DECODER_NAMES = {"heads": "grounded in the heads", "none": "decoder alone"}


def explanation_lines(summary: dict | None) -> str:
    """The explanations' scores, one row per decoder, as Markdown (empty without any)."""
    if not summary or not summary.get("faces"):
        return ""
    lines = [f"\n## Explanations ({summary['faces']} faces, {summary['decoding']} decoding, AU thresholds "
             f"{summary['thresholds']})", "",
             "| decoder | consistent | names the chosen emotion only | names only active AUs | no active AU 'at rest' "
             "| AU sentences correct | sentences with a repeated 3-gram | BLEU-4 | ROUGE-L | CIDEr | explanations/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for g, d in summary["decoders"].items():
        correct = "–" if d["au_sentences_correct"] is None else f"{d['au_sentences_correct']:.1%}"
        lines.append(f"| {DECODER_NAMES.get(g, g)} (`{g}`) | {d['consistent']:.1%} | {d['emotion']:.1%} | {d['cues']:.1%} | "
                     f"{d['au_sentences']:.1%} | {correct} of {d['active_aus']} | {d['repeated_ngrams']:.1%} of "
                     f"{d['sentences']} | {d['bleu4']:.3f} | {d['rouge_l']:.3f} | {d['cider']:.3f} | "
                     f"{d['explanations_per_s']:.1f} |")
    lines += ["", "References: the split's own captions (the cache's caption of each face and the sentences of its "
              "labelled active AUs); BLEU-4, ROUGE-L and CIDEr-D by pycocoevalcap."]
    return "\n".join(lines) + "\n"
