"""The run folder: everything ``mf2 pretrain`` and ``mf2 finetune`` write, and everything that
reads a trained run back (``evaluate``, ``predict``, ``finetune --from``, ``--resume``).

    <run>/config.json        {"kind": "mf2" | "dfn", ...}: the resolved configuration
    <run>/params.json        trainable parameters (ours beside the paper's)
    <run>/log.jsonl, log.csv a row per epoch
    <run>/checkpoints/       epoch_NNNN/ (model.safetensors, optim.safetensors, state.json);
                             latest.json (what --resume continues) and best.json (the epoch with
                             the best validation score: what evaluate, predict and finetune use)
    <run>/eval_<split>/      what ``mf2 evaluate`` writes
    <run>/dfn_cache.zarr     a DFN run's cached frozen block outputs

``load_model`` turns a run folder into its model with one table from kind to loader: an MF²
run (pretrained, or fine-tuned in full) loads an ``MF2``; a DFN run loads its base MF² run
(frozen) and its DFN as a ``DFNModel``; a folder written by ``mf2 export`` (kind ``exported``)
loads either from its one ``model.safetensors``, with no run beside it. Runs written before
``kind`` was recorded are MF² runs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from mf2.io import atomic_write_text, exclusive, file_digest, refuse_overlap
from mf2.models.config import DFNConfig, MF2Config
from mf2.models.dfn import DFN, DFNModel
from mf2.models.mf2 import MF2

KINDS = ("mf2", "dfn", "exported")


class RunError(ValueError):
    """A run folder that cannot be used as asked, as one line."""


REQUIRED = {"mf2": ("model", "train"), "dfn": ("base_run", "dfn", "model", "train"), "exported": ("model", "model_kind")}


def typed_section(cls, values, section: str, path):
    """``cls(**values)`` (a config dataclass that checks its fields) from a section of a run's
    config, its problems as one RunError line naming the file and the field."""
    if not isinstance(values, dict):
        raise RunError(f"{path}: {section}: expected a JSON object, got {type(values).__name__}")
    try:
        return cls(**values)
    except TypeError as exc:  # an unknown or a missing field
        raise RunError(f"{path}: {section}: {str(exc).split('__init__() ')[-1]}") from None
    except ValueError as exc:
        raise RunError(f"{path}: {exc}") from None


def model_config(config: dict, path="config.json") -> MF2Config:
    values = config["model"]
    if isinstance(values, dict) and "emotion_reads" not in values:  # saved before the field: Emo-VL alone
        values = {**values, "emotion_reads": "global"}
    return typed_section(MF2Config, values, "model", path)


def dfn_config(config: dict, path="config.json") -> DFNConfig:
    return typed_section(DFNConfig, config["dfn"], "dfn", path)


class RunFolder:
    def __init__(self, path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # -- config ----------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether a run has been started here (its config.json is written first)."""
        return (self.path / "config.json").is_file()

    def config(self) -> dict:
        """The saved configuration, always with ``kind`` (runs that predate it are MF² runs), its
        sections present and their values typed and checked: a damaged or hand-edited config is a
        one-line error naming the file and the field."""
        path = self.path / "config.json"
        if not path.is_file():
            raise RunError(f"{self.path}: not a run folder (no config.json)")
        try:
            config = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise RunError(f"{path}: expected a JSON object, got {type(config).__name__}")
        config.setdefault("kind", "mf2")
        if config["kind"] not in KINDS:
            raise RunError(f"{path}: unknown run kind {config['kind']!r} (expected {' or '.join(KINDS)})")
        for section in REQUIRED[config["kind"]]:
            if section not in config:
                raise RunError(f"{path}: missing {section!r} (a {config['kind']} run's config has "
                               f"{', '.join(REQUIRED[config['kind']])})")
        model_config(config, path)
        if config["kind"] == "dfn" or config.get("model_kind") == "dfn":
            dfn_config(config, path)
        return config

    def write_config(self, kind: str, **sections) -> dict:
        if kind not in KINDS:
            raise ValueError(f"kind: expected {' or '.join(KINDS)}, got {kind!r}")
        config = {"kind": kind, **sections}
        atomic_write_text(self.path / "config.json", json.dumps(config, indent=2))
        return config

    def writing(self, inputs: dict, main_process: bool = True):
        """Held while a trainer writes this run. Before anything is written: the run may not be,
        hold or lie inside one of its ``inputs`` (cache, base run); then its lock, so that a
        second process writing it stops with one line."""
        refuse_overlap(inputs, {"--out": self.path})
        return exclusive(self.path, "this run") if main_process else contextlib.nullcontext()

    def prepare(self, resume: bool, overwrite: bool, main_process: bool = True) -> None:
        """The guard every trainer passes before it writes: an earlier run is continued only
        with ``resume`` and replaced only with ``overwrite``; ``resume`` needs a run; a folder that
        holds anything but an mf2 run is never written into, nor deleted."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path}: a file, not a run folder; choose another --out")
        if self.path.is_dir() and not self.exists() and any(
                p.name != "checkpoints" and not p.name.endswith(".tmp") for p in self.path.iterdir()):
            raise RunError(f"{self.path} holds files that are not an mf2 run; choose another --out (mf2 writes runs "
                           "into new or empty folders only)")
        if self.exists() and not resume:
            if not overwrite:
                raise RunError(f"{self.path} holds an earlier run; pass --resume to continue it or --overwrite "
                               "to replace it")
            self.config()  # only a readable mf2 run is ever deleted
            if main_process:
                shutil.rmtree(self.path)
        if resume and not self.exists():
            raise RunError(f"{self.path}: nothing to resume (no config.json)")
        if main_process:
            self.path.mkdir(parents=True, exist_ok=True)

    # -- params and logs -------------------------------------------------------------------
    def write_params(self, params: dict) -> None:
        atomic_write_text(self.path / "params.json", json.dumps(params, indent=2))

    def params(self) -> dict:
        return json.loads((self.path / "params.json").read_text())

    def append_log(self, row: dict) -> None:
        """One epoch's row to log.jsonl, and log.csv rewritten from all rows."""
        with open(self.path / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        rows = self.log_rows()
        columns = sorted({k for r in rows for k in r}, key=lambda k: (k != "epoch", k))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path / "log.csv", buf.getvalue())

    def log_rows(self) -> list[dict]:
        path = self.path / "log.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # -- checkpoints -----------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def _pointer(self, name: str) -> dict | None:
        """A checkpoint pointer (``latest.json``, ``best.json``): {"epoch", "path"[, "score"]}."""
        pointer = self.checkpoints / f"{name}.json"
        return json.loads(pointer.read_text()) if pointer.is_file() else None

    def _pointed(self, name: str) -> Path | None:
        """The checkpoint folder a pointer names, if it is there."""
        pointer = self._pointer(name)
        path = self.checkpoints / pointer["path"] if pointer else None
        return path if path is not None and path.is_dir() else None

    def _point(self, name: str, checkpoint: Path, epoch: int, **extra) -> None:
        atomic_write_text(self.checkpoints / f"{name}.json",
                          json.dumps({"epoch": epoch, "path": checkpoint.name, **extra}) + "\n")

    def latest_checkpoint(self) -> Path | None:
        return self._pointed("latest")

    def set_latest(self, checkpoint: Path, epoch: int) -> None:
        self._point("latest", checkpoint, epoch)

    def best_checkpoint(self) -> Path | None:
        return self._pointed("best")

    def best_score(self) -> float | None:
        pointer = self._pointer("best")
        return pointer["score"] if pointer else None

    def set_best(self, checkpoint: Path, epoch: int, score: float) -> None:
        self._point("best", checkpoint, epoch, score=score)

    def checkpoint(self, which: str = "best") -> Path | None:
        """The checkpoint to use: 'best' (the best validated epoch; the latest for runs without
        one) or 'latest'."""
        if which not in ("best", "latest"):
            raise RunError(f"checkpoint: expected 'best' or 'latest', got {which!r}")
        return (self.best_checkpoint() if which == "best" else None) or self.latest_checkpoint()

    @staticmethod
    def checkpoint_state(checkpoint: Path) -> dict:
        """A checkpoint's state.json: epoch, step, and what validation chose for it (AU thresholds);
        empty where there is none (an exported folder from before thresholds were exported)."""
        path = Path(checkpoint) / "state.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @staticmethod
    def model_state(checkpoint: Path) -> dict:
        return load_file(str(Path(checkpoint) / "model.safetensors"))

    # -- what a run was trained on ---------------------------------------------------------
    def base_run(self, config: dict | None = None) -> "RunFolder":
        """The pretrained MF² folder a DFN run was trained on top of. It is saved as an absolute
        path; when that folder has moved (or an older run saved a path relative to where it was
        trained), a folder of that name beside the DFN run is used."""
        saved = Path((config or self.config())["base_run"])
        for candidate in (saved, self.path.parent / saved, self.path.parent / saved.name):
            if (candidate / "config.json").is_file():
                return RunFolder(candidate)
        raise RunError(f"{self.path}: its base MF² run {saved} is not there (nor beside the DFN run)")

    def features(self) -> dict:
        """The feature signature of the cache the run was trained on (a DFN run: its base run's)."""
        config = self.config()
        if config["kind"] == "dfn":
            return self.base_run(config).features()
        if "features" in config:
            return config["features"]
        from mf2.features.store import FeatureStore  # runs from before the signature was saved

        try:
            return FeatureStore.open(config["cache"]).signature
        except Exception:
            raise RunError(f"{self.path}: its config has no feature settings and its cache {config['cache']} cannot be "
                           f"opened; prediction needs to know how the features were made") from None

    @property
    def dfn_cache(self) -> Path:
        """Where a DFN run caches its frozen MF²'s block outputs."""
        return self.path / "dfn_cache.zarr"

    def eval_folder(self, split: str = "val") -> Path:
        return self.path / f"eval_{split}"

    def eval_metrics(self, split: str = "val") -> dict:
        """What ``mf2 evaluate`` wrote for ``split`` (its metrics.json)."""
        return json.loads((self.eval_folder(split) / "metrics.json").read_text())


# What a run's image features must share with a cache it is scored or resumed on: the backbone
# and its weights, the face crop, the landmark source, the AU set, the backbones' precision and
# the AU pooling (the manifest, the package version and the text encoder may differ).
IMAGE_FIELDS = ("vision", "face", "landmarks", "au_set", "precision", "pooling")
TEXT_FIELDS = ("text",)
DERIVED = ("tokens_per_au", "map_size", "channels", "caps", "types")  # follow from the rest


def _normalised(signature: dict) -> dict:
    """A signature with the defaults of stores written before a field existed filled in."""
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


def _load_mf2(folder: RunFolder, config: dict, checkpoint: Path, device) -> MF2:
    model = MF2(model_config(config, folder.path / "config.json"))
    missing, unexpected = model.load_state_dict(folder.model_state(checkpoint), strict=False)
    if unexpected or [k for k in missing if not k.startswith("dfn.")]:
        raise RunError(f"{checkpoint}: checkpoint does not match the model ({len(missing)} missing, "
                       f"{len(unexpected)} unexpected)")
    return model.to(device).eval()


def _load_dfn(folder: RunFolder, config: dict, checkpoint: Path, device) -> DFNModel:
    """A frozen MF² (the checkpoint of its own run the DFN was trained on, unchanged since) with
    this run's DFN."""
    mf2, _, base_ckpt = load_model(folder.base_run(config), device, config.get("base_checkpoint", "latest"))
    recorded = config.get("base_model")  # DFN runs from before this record cannot be checked
    digest = file_digest(base_ckpt / "model.safetensors") if recorded else None
    if recorded and digest != recorded:
        raise RunError(f"{folder}: its base run {folder.base_run(config)} changed since this DFN run was trained "
                       f"(checkpoint {base_ckpt.name} has digest {digest}, the DFN was trained on {recorded}); retrain "
                       "the DFN or restore the base run")
    dfn = DFN(mf2.cfg, dfn_config(config, folder.path / "config.json"))
    dfn.load_state_dict(folder.model_state(checkpoint))
    return DFNModel(mf2, dfn.to(device)).eval()


def _load_exported(folder: RunFolder, config: dict, checkpoint: Path, device) -> MF2 | DFNModel:
    """A folder of ``mf2 export``: an MF², or a DFN with its frozen MF² (keys ``mf2.*``, ``dfn.*``)."""
    if config.get("model_kind") not in ("mf2", "dfn"):
        raise RunError(f"{folder}: exported model of unknown kind {config.get('model_kind')!r} (expected mf2 or dfn)")
    mf2 = MF2(model_config(config, folder.path / "config.json"))
    model = DFNModel(mf2, DFN(mf2.cfg, dfn_config(config, folder.path / "config.json"))) \
        if config["model_kind"] == "dfn" else mf2
    missing, unexpected = model.load_state_dict(folder.model_state(checkpoint), strict=False)
    if missing or unexpected:
        raise RunError(f"{checkpoint / 'model.safetensors'}: weights do not match the model of its config.json "
                       f"({len(missing)} missing, {len(unexpected)} unexpected)")
    return model.to(device).eval()


_LOADERS = {"mf2": _load_mf2, "dfn": _load_dfn, "exported": _load_exported}


def load_model(run, device: str | torch.device = "cpu", which: str = "best") -> tuple[torch.nn.Module, dict, Path]:
    """(model in eval mode on ``device``, saved config, checkpoint folder) of a run folder's best
    checkpoint (``which='latest'``: its last; of an exported folder: the folder itself)."""
    folder = run if isinstance(run, RunFolder) else RunFolder(run)
    config = folder.config()
    # an exported folder is its own checkpoint (model.safetensors at its top)
    checkpoint = folder.path if config["kind"] == "exported" else folder.checkpoint(which)
    if checkpoint is None:
        raise RunError(f"{folder}: no checkpoint yet")
    return _LOADERS[config["kind"]](folder, config, checkpoint, device), config, checkpoint
