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

A checkpoint folder carries ``SHA256SUMS`` (``mf2.io``): its files are checked when read back.
Configs are read through ``migrate.migrate_config`` (runs written by earlier versions) and
checked field by field; loading a model is ``mf2.runs.load``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from pathlib import Path

from mf2.io import IntegrityError, atomic_write_text, exclusive, listed, load_tensors, read_json, refuse_overlap, verify
from mf2.models.config import DFNConfig, MF2Config
from mf2.runs.migrate import SCHEMA_VERSION, SchemaError, migrate_config

KINDS = ("mf2", "dfn", "exported")


class RunError(ValueError):
    """A run folder that cannot be used as asked, as one line."""


# what to do about a checkpoint file that is damaged (IntegrityError lines end with it)
REMEDY = "restore it from a copy, or use an earlier checkpoint (mf2 pretrain/finetune --resume starts from latest.json)"

REQUIRED = {"mf2": ("model", "train"), "dfn": ("base_run", "dfn", "model", "train"),
            "exported": ("model", "model_kind", "features")}
# The feature signature's fields that prediction reads (section -> field -> type): an edited or
# truncated signature is a one-line error when the config is read, not a KeyError later.
SIGNATURE_FIELDS = {"vision": {"name": str, "weights": str, "image_size": int}, "text": {"name": str},
                    "pooling": {"R": int, "window_rulers": (int, float), "padding": str}}


def check_signature(signature, path, section: str = "features") -> dict:
    """A feature signature (a cache's, as saved in a run or exported config) with the fields
    prediction reads, each of its type; a one-line RunError naming the first that is not."""
    if not isinstance(signature, dict):
        raise RunError(f"{path}: {section}: expected a JSON object, got {type(signature).__name__}")
    for part, fields in SIGNATURE_FIELDS.items():
        values = signature.get(part)
        if not isinstance(values, dict):
            raise RunError(f"{path}: {section}.{part}: missing (a feature signature has {', '.join(SIGNATURE_FIELDS)})")
        for name, kind in fields.items():
            value = values.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise RunError(f"{path}: {section}.{part}.{name}: expected "
                               f"{getattr(kind, '__name__', 'a number')}, got {value!r}")
    return signature


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
    """The ``model`` section of a (migrated) config as an ``MF2Config``."""
    return typed_section(MF2Config, migrate_config(config, path)["model"], "model", path)


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
        verify(path, remedy="restore it from a copy (or export the run again)")  # an exported folder lists it
        try:
            config = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise RunError(f"{path}: expected a JSON object, got {type(config).__name__}")
        try:
            config = migrate_config(config, path)
        except SchemaError as exc:
            raise RunError(str(exc)) from None
        if config["kind"] not in KINDS:
            raise RunError(f"{path}: unknown run kind {config['kind']!r} (expected {' or '.join(KINDS)})")
        for section in REQUIRED[config["kind"]]:
            if section not in config:
                raise RunError(f"{path}: missing {section!r} (a {config['kind']} run's config has "
                               f"{', '.join(REQUIRED[config['kind']])})")
        model_config(config, path)
        if config["kind"] == "dfn" or config.get("model_kind") == "dfn":
            dfn_config(config, path)
        if "features" in config:
            check_signature(config["features"], path)
        return config

    def write_config(self, kind: str, **sections) -> dict:
        if kind not in KINDS:
            raise ValueError(f"kind: expected {' or '.join(KINDS)}, got {kind!r}")
        config = {"kind": kind, "schema": SCHEMA_VERSION, **{k: v for k, v in sections.items() if k != "schema"}}
        atomic_write_text(self.path / "config.json", json.dumps(config, indent=2))
        return config

    def writing(self, inputs: dict, main_process: bool = True):
        """Held while a trainer writes this run. Before anything is written: the run may not be,
        hold or lie inside one of its ``inputs`` (cache, base run); then its lock, so that a
        second process writing it stops with one line."""
        refuse_overlap(inputs, {"--out": self.path})
        return exclusive(self.path, "this run") if main_process else contextlib.nullcontext()

    def prepare(self, resume: bool, overwrite: bool, main_process: bool = True) -> None:
        """The guard every trainer passes before it writes (``starting``, with no way back)."""
        with self.starting(resume, overwrite, main_process):
            self.started()

    @contextlib.contextmanager
    def starting(self, resume: bool, overwrite: bool, main_process: bool = True):
        """The guard every trainer passes before it writes: an earlier run is continued only
        with ``resume`` and replaced only with ``overwrite``; ``resume`` needs a run; a folder that
        holds anything but an mf2 run is never written into, nor deleted. Until ``started()`` (the
        new run's config is written), a failure undoes the start: a folder this start made goes,
        and a run that ``overwrite`` set aside (as a hidden sibling) is put back -- a start that
        fails its checks leaves nothing behind and replaces nothing."""
        interrupted = self.path.with_name(f".{self.path.name}.replaced")
        if main_process and interrupted.is_dir() and not self.exists():  # a start killed after setting a run aside
            if self.path.is_dir():
                shutil.rmtree(self.path)
            os.replace(interrupted, self.path)  # the earlier run comes back before anything else happens
        made, aside = not self.path.exists(), None
        self._aside = None
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
                aside = self.path.with_name(f".{self.path.name}.replaced")
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(self.path, aside)
                made = True
        if resume and not self.exists():
            raise RunError(f"{self.path}: nothing to resume (no config.json)")
        if main_process:
            self.path.mkdir(parents=True, exist_ok=True)
        self._aside, self._open = aside, True
        try:
            yield self
        except BaseException:
            if main_process and self._open:
                if made:
                    shutil.rmtree(self.path, ignore_errors=True)
                if aside is not None:
                    os.replace(aside, self.path)
            raise
        finally:
            self._open = False

    def started(self) -> None:
        """The new run is written (its config): there is no way back, and a run it replaced goes."""
        if getattr(self, "_open", False):
            self._open = False
            if self._aside is not None:
                shutil.rmtree(self._aside, ignore_errors=True)

    # -- params and logs -------------------------------------------------------------------
    def write_params(self, params: dict) -> None:
        atomic_write_text(self.path / "params.json", json.dumps(params, indent=2))

    def params(self) -> dict:
        return read_json(self.path / "params.json", "the run's parameter counts", "train the run again")

    def append_log(self, row: dict) -> None:
        """One epoch's row to log.jsonl, and log.csv rewritten from all rows."""
        with open(self.path / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        self._write_csv(self.log_rows())

    def keep_log_until(self, epochs: int) -> None:
        """The log of a run resumed after ``epochs`` epochs: rows of later epochs (logged before a
        kill stopped their checkpoint from being written) go, so a resumed run logs each once."""
        rows = self.log_rows()
        kept = [r for r in rows if r.get("epoch", 0) <= epochs]
        if len(kept) != len(rows):
            atomic_write_text(self.path / "log.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
            self._write_csv(kept)

    def _write_csv(self, rows: list[dict]) -> None:
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
        rows = []
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise RunError(f"{path}:line {number}: not valid JSON ({exc.msg}); the log is damaged") from None
        return rows

    # -- checkpoints -----------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def _pointer(self, name: str) -> dict | None:
        """A checkpoint pointer (``latest.json``, ``best.json``): {"epoch", "path"[, "score"]}."""
        pointer = self.checkpoints / f"{name}.json"
        if not pointer.is_file():
            return None
        value = read_json(pointer, f"the run's {name} checkpoint pointer", "restore it, or write it by hand as "
                          '{"epoch": N, "path": "epoch_NNNN"}')
        if not (isinstance(value, dict) and isinstance(value.get("path"), str) and isinstance(value.get("epoch"), int)):
            raise IntegrityError(f"{pointer}: expected {{\"epoch\": N, \"path\": \"epoch_NNNN\"}}, got {value!r}")
        return value

    def _pointed(self, name: str) -> Path | None:
        """The checkpoint folder a pointer names (None: no pointer). A pointer naming a folder
        that is not there is an error, never another checkpoint in its place: mf2 writes the
        folder before the pointer and never deletes the folder a pointer names."""
        pointer = self._pointer(name)
        if pointer is None:
            return None
        path = self.checkpoints / pointer["path"]
        if not path.is_dir():
            raise IntegrityError(f"{self.checkpoints / (name + '.json')}: names checkpoint {pointer['path']} (epoch "
                                 f"{pointer['epoch']}), which is not in {self.checkpoints}; restore it, or point "
                                 f"{name}.json at a checkpoint that is there")
        return path

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
        """A checkpoint's state.json (verified): epoch, step, and what validation chose for it (AU
        thresholds); empty where there is none (an exported folder from before thresholds were
        exported)."""
        path = Path(checkpoint) / "state.json"
        if not path.is_file():
            # mf2 wrote it: gone means damaged, not "none" -- a run's checkpoint always had one; an
            # exported folder (its own config.json beside it) from before thresholds were exported may not
            if listed(path) or not (Path(checkpoint) / "config.json").is_file():
                why = f"listed in {path.parent / 'SHA256SUMS'}" if listed(path) else "every checkpoint of a run has one"
                raise IntegrityError(f"{path}: missing ({why}; it holds the checkpoint's epoch and tuned AU "
                                     f"thresholds); {REMEDY}")
            return {}
        state = read_json(path, "the checkpoint's state", REMEDY)
        if not isinstance(state, dict):
            raise IntegrityError(f"{path}: expected a JSON object, got {type(state).__name__}; {REMEDY}")
        return state

    def require_record(self, checkpoint: Path, config: dict) -> None:
        """A run written by this version (schema 2 and later) has a SHA256SUMS in every checkpoint:
        one that is gone is an error, not a checkpoint read unchecked."""
        checkpoint = Path(checkpoint)
        if checkpoint.parent != self.checkpoints or (checkpoint / "SHA256SUMS").is_file():
            return
        try:  # a checkpoint written with a record says so (an older run resumed by this version)
            marked = json.loads((checkpoint / "state.json").read_text()).get("sha256sums") is True
        except (OSError, ValueError, AttributeError):
            marked = False
        if config.get("written_schema", 1) >= 2 or marked:
            raise IntegrityError(f"{checkpoint}: its SHA256SUMS is gone (every checkpoint of this run was written "
                                 f"with one), so its files cannot be checked; {REMEDY}")

    @staticmethod
    def model_state(checkpoint: Path) -> dict:
        """A checkpoint's model tensors, verified against its SHA256SUMS."""
        return load_tensors(Path(checkpoint) / "model.safetensors", remedy=REMEDY)

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
        return read_json(self.eval_folder(split) / "metrics.json", "mf2 evaluate's results", "run mf2 evaluate again")


