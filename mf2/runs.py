"""The run folder: everything ``mf2 pretrain`` and ``mf2 finetune`` write, and everything that
reads a trained run back (``evaluate``, ``predict``, ``finetune --from``, ``--resume``).

    <run>/config.json        {"kind": "mf2" | "dfn", ...}: the resolved configuration
    <run>/params.json        trainable parameters (ours beside the paper's)
    <run>/log.jsonl, log.csv a row per epoch
    <run>/checkpoints/       epoch_NNNN/ (model.safetensors, optim.safetensors, state.json) and
                             latest.json, the pointer a reader trusts
    <run>/eval_<split>/      what ``mf2 evaluate`` writes
    <run>/dfn_cache.zarr     a DFN run's cached frozen block outputs

``load_model`` turns a run folder into its model with one table from kind to loader: an MF²
run (pretrained, or fine-tuned in full) loads an ``MF2``; a DFN run loads its base MF² run
(frozen) and its DFN as a ``DFNModel``; a folder written by ``mf2 export`` (kind ``exported``)
loads either from its one ``model.safetensors``, with no run beside it. Runs written before
``kind`` was recorded are MF² runs.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from mf2.io import atomic_write_text
from mf2.models.config import DFNConfig, MF2Config
from mf2.models.dfn import DFN, DFNModel
from mf2.models.mf2 import MF2

KINDS = ("mf2", "dfn", "exported")


class RunError(ValueError):
    """A run folder that cannot be used as asked, as one line."""


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
        """The saved configuration, always with ``kind`` (runs that predate it are MF² runs)."""
        path = self.path / "config.json"
        if not path.is_file():
            raise RunError(f"{self.path}: not a run folder (no config.json)")
        config = json.loads(path.read_text())
        config.setdefault("kind", "mf2")
        if config["kind"] not in KINDS:
            raise RunError(f"{path}: unknown run kind {config['kind']!r} (expected {' or '.join(KINDS)})")
        return config

    def write_config(self, kind: str, **sections) -> dict:
        if kind not in KINDS:
            raise ValueError(f"kind: expected {' or '.join(KINDS)}, got {kind!r}")
        config = {"kind": kind, **sections}
        atomic_write_text(self.path / "config.json", json.dumps(config, indent=2))
        return config

    def prepare(self, resume: bool, overwrite: bool, main_process: bool = True) -> None:
        """The guard every trainer passes before it writes: an earlier run is continued only
        with ``resume`` and replaced only with ``overwrite``; ``resume`` needs a run."""
        if self.exists() and not resume:
            if not overwrite:
                raise RunError(f"{self.path} holds an earlier run; pass --resume to continue it or --overwrite "
                               "to replace it")
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

    def latest_checkpoint(self) -> Path | None:
        pointer = self.checkpoints / "latest.json"
        if not pointer.is_file():
            return None
        path = self.checkpoints / json.loads(pointer.read_text())["path"]
        return path if path.is_dir() else None

    def set_latest(self, checkpoint: Path, epoch: int) -> None:
        atomic_write_text(self.checkpoints / "latest.json", json.dumps({"epoch": epoch, "path": checkpoint.name}) + "\n")

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


def _load_mf2(folder: RunFolder, config: dict, checkpoint: Path, device) -> MF2:
    model = MF2(MF2Config(**config["model"]))
    missing, unexpected = model.load_state_dict(folder.model_state(checkpoint), strict=False)
    if unexpected or [k for k in missing if not k.startswith("dfn.")]:
        raise RunError(f"{checkpoint}: checkpoint does not match the model ({len(missing)} missing, "
                       f"{len(unexpected)} unexpected)")
    return model.to(device).eval()


def _load_dfn(folder: RunFolder, config: dict, checkpoint: Path, device) -> DFNModel:
    """A frozen MF² (its own run) with this run's DFN."""
    mf2, _, _ = load_model(folder.base_run(config), device)
    dfn = DFN(mf2.cfg, DFNConfig(**config["dfn"]))
    dfn.load_state_dict(folder.model_state(checkpoint))
    return DFNModel(mf2, dfn.to(device)).eval()


def _load_exported(folder: RunFolder, config: dict, checkpoint: Path, device) -> MF2 | DFNModel:
    """A folder of ``mf2 export``: an MF², or a DFN with its frozen MF² (keys ``mf2.*``, ``dfn.*``)."""
    if config.get("model_kind") not in ("mf2", "dfn"):
        raise RunError(f"{folder}: exported model of unknown kind {config.get('model_kind')!r} (expected mf2 or dfn)")
    mf2 = MF2(MF2Config(**config["model"]))
    model = DFNModel(mf2, DFN(mf2.cfg, DFNConfig(**config["dfn"]))) if config["model_kind"] == "dfn" else mf2
    missing, unexpected = model.load_state_dict(folder.model_state(checkpoint), strict=False)
    if missing or unexpected:
        raise RunError(f"{checkpoint / 'model.safetensors'}: weights do not match the model of its config.json "
                       f"({len(missing)} missing, {len(unexpected)} unexpected)")
    return model.to(device).eval()


_LOADERS = {"mf2": _load_mf2, "dfn": _load_dfn, "exported": _load_exported}


def load_model(run, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict, Path]:
    """(model in eval mode on ``device``, saved config, checkpoint folder) of a run folder's
    latest checkpoint (of an exported folder: the folder itself)."""
    folder = run if isinstance(run, RunFolder) else RunFolder(run)
    config = folder.config()
    # an exported folder is its own checkpoint (model.safetensors at its top)
    checkpoint = folder.path if config["kind"] == "exported" else folder.latest_checkpoint()
    if checkpoint is None:
        raise RunError(f"{folder}: no checkpoint yet")
    return _LOADERS[config["kind"]](folder, config, checkpoint, device), config, checkpoint
