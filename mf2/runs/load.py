"""A trained model from a run folder or an exported folder, by kind, with its weights checked.

One table from kind to loader: an MF² run (pretrained, or fine-tuned in full) loads an ``MF2``; a
DFN run loads its base MF² run (frozen) and its DFN as a ``DFNModel``; a folder written by ``mf2
export`` (kind ``exported``) loads either from its one ``model.safetensors``, with no run beside
it. Before any tensor is loaded, the file's header is compared with the model its config.json
describes (``fit_weights``): a config edited to another width, or weights of another model, are
one line naming the first tensor that differs, never a page of ``state_dict`` errors. Every file
is verified against its folder's SHA256SUMS where there is one (``mf2.io.verify``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from mf2.io import IntegrityError, file_digest, load_tensors, tensor_shapes
from mf2.models.dfn import DFN, DFNModel
from mf2.models.mf2 import MF2
from mf2.runs.folder import REMEDY, RunError, RunFolder, dfn_config, model_config
from mf2.runs.migrate import migrate_state

# What a run's image features must share with a cache it is scored or resumed on: the backbone
# and its weights, the face crop, the landmark source, the AU set, the backbones' precision and
# the AU pooling (the manifest, the package version and the text encoder may differ).
IMAGE_FIELDS = ("vision", "face", "landmarks", "au_set", "precision", "pooling")
TEXT_FIELDS = ("text",)
DERIVED = ("tokens_per_au", "map_size", "channels", "caps", "types")  # follow from the rest


def _normalised(signature: dict) -> dict:
    """A signature with the defaults of stores written before a field existed filled in."""
    import json

    sig = json.loads(json.dumps(signature))  # a deep copy
    sig.setdefault("pooling", {}).setdefault("au_map", "last")
    sig["pooling"].setdefault("regions", "table")  # stores before per-AU regions: DATA.md's table
    for part in (sig.get("pooling", {}), sig.get("text", {})):
        for key in DERIVED:
            part.pop(key, None)
    return sig


def check_features(trained: dict, cache: dict, what: str, fields=IMAGE_FIELDS) -> None:
    """The features a run was trained on and a cache's agree field by field; the first field
    that differs is a one-line RunError naming both values."""
    from mf2.features.store import _first_difference

    a, b = _normalised(trained), _normalised(cache)
    for field in fields:
        diff = _first_difference(a.get(field), b.get(field), field)
        if diff:
            where, old, new = diff
            raise RunError(f"{what}: the cache's features differ from the run's in {where} (cache {new!r}, run "
                           f"{old!r}); extract the cache with the run's settings")


def fit_weights(model: torch.nn.Module, path: Path, remedy: str = REMEDY, ignore=()) -> dict:
    """The tensors of ``path`` for ``model``, after checking -- from the file's header, before any
    tensor is read -- that they are the model's tensors with the model's shapes (under today's
    names: ``migrate_state``), and that the file is the one recorded in its folder's SHA256SUMS.
    ``ignore``: name prefixes the model may have that the file lacks."""
    header = tensor_shapes(path, remedy)
    got = {k: tuple(v.shape) for k, v in
           migrate_state({k: torch.empty(s, device="meta") for k, s in header.items()}).items()}
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in want if k not in got and not k.startswith(tuple(ignore))]
    unexpected = [k for k in got if k not in want]
    wrong = [k for k in want if k in got and got[k] != want[k]]
    if missing or unexpected or wrong:
        first = (f"tensor {wrong[0]} is {list(got[wrong[0]])} in the file, {list(want[wrong[0]])} in the model" if wrong
                 else f"missing tensor {missing[0]}" if missing else f"unexpected tensor {unexpected[0]}")
        raise IntegrityError(f"{path}: these weights do not fit the model its config.json describes ({first}; "
                             f"{len(wrong)} of another shape, {len(missing)} missing, {len(unexpected)} unexpected): "
                             f"the config and the weights disagree; {remedy}")
    tensors = migrate_state(load_tensors(path, remedy=remedy))
    bad = next((k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise IntegrityError(f"{path}: tensor {bad} holds NaN or infinite values (a run that diverged, or a changed "
                             f"file); {remedy}")
    return tensors


def _load_mf2(folder: RunFolder, config: dict, checkpoint: Path, device) -> MF2:
    model = MF2(model_config(config, folder.path / "config.json"))
    model.load_state_dict(fit_weights(model, checkpoint / "model.safetensors"))
    return model.to(device).eval()


def _load_dfn(folder: RunFolder, config: dict, checkpoint: Path, device) -> DFNModel:
    """A frozen MF² (the checkpoint of its own run the DFN was trained on, unchanged since) with
    this run's DFN."""
    base = folder.base_run(config)
    frozen, _, base_ckpt = load_model(base, device, config["base_checkpoint"], kinds=("mf2",))
    recorded = config.get("base_model")  # DFN runs from before this record cannot be checked
    digest = file_digest(base_ckpt / "model.safetensors") if recorded else None
    if recorded and digest != recorded:
        raise RunError(f"{folder}: its base run {base} changed since this DFN run was trained "
                       f"(checkpoint {base_ckpt.name} has digest {digest}, the DFN was trained on {recorded}); retrain "
                       "the DFN or restore the base run")
    dfn = DFN(frozen.cfg, dfn_config(config, folder.path / "config.json"))
    dfn.load_state_dict(fit_weights(dfn, checkpoint / "model.safetensors"))
    return DFNModel(frozen, dfn.to(device)).eval()


EXPORT_REMEDY = "export the run again (mf2 export RUN --out DIR --overwrite)"


def _load_exported(folder: RunFolder, config: dict, checkpoint: Path, device) -> MF2 | DFNModel:
    """A folder of ``mf2 export``: an MF², or a DFN with its frozen MF² (keys ``mf2.*``, ``dfn.*``)."""
    if config.get("model_kind") not in ("mf2", "dfn"):
        raise RunError(f"{folder}: exported model of unknown kind {config.get('model_kind')!r} (expected mf2 or dfn)")
    base = MF2(model_config(config, folder.path / "config.json"))
    model = DFNModel(base, DFN(base.cfg, dfn_config(config, folder.path / "config.json"))) \
        if config["model_kind"] == "dfn" else base
    weights = checkpoint / "model.safetensors"
    recorded = (config.get("exported_from") or {}).get("model_sha256")
    if not (checkpoint / "SHA256SUMS").is_file() and isinstance(recorded, str) and len(recorded) == 64:
        # exports from before SHA256SUMS recorded the weights' digest in config.json
        digest = file_digest(weights, None) if weights.is_file() else None
        if digest != recorded:
            raise IntegrityError(f"{weights}: its SHA-256 differs from the one config.json records ({recorded[:12]}…): "
                                 f"the file was changed or damaged; {EXPORT_REMEDY}")
    model.load_state_dict(fit_weights(model, weights, EXPORT_REMEDY))
    return model.to(device).eval()


_LOADERS = {"mf2": _load_mf2, "dfn": _load_dfn, "exported": _load_exported}


def model_kind(config: dict) -> str:
    """'mf2' or 'dfn': what a run's (or exported folder's) model is."""
    return config.get("model_kind", "mf2") if config["kind"] == "exported" else config["kind"]


def load_model(run, device: str | torch.device = "cpu", which: str = "best",
               kinds=("mf2", "dfn")) -> tuple[torch.nn.Module, dict, Path]:
    """(model in eval mode on ``device``, saved config, checkpoint folder) of a run folder's best
    checkpoint (``which='latest'``: its last; of an exported folder: the folder itself).
    ``kinds``: the model kinds the caller can use ('mf2', 'dfn'); another is a one-line RunError."""
    folder = run if isinstance(run, RunFolder) else RunFolder(run)
    config = folder.config()
    kind = model_kind(config)
    if kind not in kinds:
        what = "a DFN run" if config["kind"] == "dfn" else f"an exported {kind} model"
        base = f" (its base MF² run is {config['base_run']})" if config["kind"] == "dfn" else ""
        raise RunError(f"{folder} is {what}{base}; this needs {' or '.join(_KIND_NAMES[k] for k in kinds)}")
    # an exported folder is its own checkpoint (model.safetensors at its top)
    checkpoint = folder.path if config["kind"] == "exported" else folder.checkpoint(which)
    if checkpoint is None:
        raise RunError(f"{folder}: no checkpoint yet")
    folder.require_record(checkpoint, config)
    return _LOADERS[config["kind"]](folder, config, checkpoint, device), config, checkpoint


_KIND_NAMES = {"mf2": "a pretrained MF² run", "dfn": "a DFN run"}
