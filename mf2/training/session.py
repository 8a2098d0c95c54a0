"""One training session for every trainer (``mf2 pretrain``, ``mf2 finetune --dfn``, ``mf2
finetune --full``): the set-up they share, written once; each trainer states only what is its own.

A session: checks the device (before anything exists on disk) -> holds the run folder's lock and
passes its guard (``RunFolder.prepare``) -> on ``--resume``, reads the run's recorded settings
and refuses the typed options that contradict them (``resumed_settings``; speed-only ones are
applied and printed) -> seeds every generator -> the trainer opens its data (feature checks,
the text its losses need) -> the batch is fitted to the data and the schedule resolved for the
run's length -> the trainer builds its model -> optimizer, AU weights, resume from the latest
checkpoint -> the resolved configuration is written -> ``fit``.

A trainer (``Trainer``) says what it reads (``inputs``), how it continues a recorded run
(``restore``), opens its data (``open``: returns the training rows and their AU labels), builds
its model (``build``), gives its batches, losses, validation and random states, and what its
config records beside the training settings (``record``).
"""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import torch

from mf2 import distributed
from mf2.devices import resolve_device, resolve_precision
from mf2.runs import RunError, RunFolder
from mf2.training.averaging import WeightAverage, decay_for
from mf2.training.loop import (TrainConfig, au_loss_line, au_pos_weight, batch_for, epochs_to_train, fit,
                               make_optimizer, record_epochs, resume_latest, rng_state, saved_train_config,
                               seed_everything)

# Settings a resumed run may change: they decide speed and memory, not what is learnt.
APPLIED_ON_RESUME = ("device", "activation_checkpointing", "compile")


def flag(field: str) -> str:
    """The command-line option of a config field ('batch_size' -> '--batch-size')."""
    return {"lam": "--gate-scale", "blocks": "--adapter-blocks", "emo_vl": "--emo-vl/--no-emo-vl",
            "au_vl": "--au-vl/--no-au-vl"}.get(field, "--" + field.replace("_", "-"))


def contradictions(run: RunFolder, section: str, recorded: dict, given: dict, skip=()) -> None:
    """A typed option whose value differs from what ``run`` recorded in ``section`` is a one-line
    RunError naming the field, both values and what to do; 'auto' (None) contradicts nothing."""
    for name, value in given.items():
        if name in skip or value is None or name not in recorded:
            continue
        if value != recorded[name]:
            raise RunError(f"--resume {run}: {flag(name)} {value!r} contradicts the run's recorded {section}.{name} "
                           f"{recorded[name]!r}; a resumed run continues with its own settings: drop the option, or "
                           "start a new run (another --out, or --overwrite)")


def resumed_settings(run: RunFolder, saved: dict, given: dict, device: str, log=print) -> TrainConfig:
    """The training settings a resumed run continues with: its recorded ones, on ``device``.
    ``given`` (the options the user typed, by field) may repeat them; one that contradicts them
    is refused (``contradictions``), except the speed-only ones, which are applied and said."""
    cfg = saved_train_config(run, saved, device)
    given = dict(given)
    if given.get("precision") is not None:  # 'auto' on this device may be what the run resolved
        given["precision"] = resolve_precision(given["precision"], device)
    contradictions(run, "train", asdict(cfg), given, skip=("epochs", *APPLIED_ON_RESUME))
    for name in APPLIED_ON_RESUME[1:]:
        value = given.get(name)
        if value is not None and value != getattr(cfg, name):
            log(f"--resume: {flag(name)} {value} (the run recorded {getattr(cfg, name)}): applied, it changes speed and "
                "memory, not what is learnt")
            cfg = replace(cfg, **{name: value})
    return cfg


class Trainer:
    """What one trainer adds to a session (see the module docstring). Subclasses set ``kind``
    (the run kind its config records) and ``method`` (its learning-rate preset: 'pretrain' or
    'dfn')."""

    kind = "mf2"
    method = "pretrain"

    def inputs(self) -> dict:
        """What the run reads (name for messages -> path): the run may not be, hold or lie in one."""
        raise NotImplementedError

    def restore(self, run: RunFolder, saved: dict, given: dict) -> None:
        """Take over a recorded run's own settings (model, base run, ...), refusing typed options
        that contradict them."""
        raise NotImplementedError

    def open(self, cfg: TrainConfig, run: RunFolder, saved: dict | None, rank: int, log) -> torch.Tensor:
        """Open the data (and any base model); return the training rows' AU labels [N, 12]."""
        raise NotImplementedError

    @property
    def preset(self) -> str:
        raise NotImplementedError

    def build(self, cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
        raise NotImplementedError

    def record(self, cfg: TrainConfig, model: torch.nn.Module) -> tuple[dict, dict]:
        """(the config sections beside ``train``, params.json) of a new run."""
        raise NotImplementedError

    def batches(self, epoch: int, cfg: TrainConfig, rank: int, world: int):
        raise NotImplementedError

    def losses_of(self, net, cfg: TrainConfig, weight: torch.Tensor):
        raise NotImplementedError

    def validate(self, cfg: TrainConfig) -> dict:
        raise NotImplementedError

    def rng_state(self) -> dict:
        return rng_state()

    def restore_rng(self):
        """The generator ``resume_latest`` restores beside torch's (None: torch's only)."""
        return None


def train(trainer: Trainer, out, cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
          given: dict | None = None, extend_to: int | None = None, max_epochs_this_run: int | None = None,
          progress=None, log=print) -> dict | None:
    """Run ``trainer`` into the run folder ``out``; returns the last epoch's log row (None when no
    epoch ran). ``given``: section -> {field: value} of the options the user typed (checked against
    a resumed run's record); ``extend_to`` (with ``resume``): train a run further, to that many
    epochs."""
    given = given or {}
    cfg = replace(cfg, device=str(resolve_device(cfg.device)))  # before anything is written
    run = RunFolder(out)
    rank, world = distributed.init_from_env(cfg.device)
    quiet = log if rank == 0 else (lambda *a: None)
    with run.writing(trainer.inputs(), rank == 0), run.starting(resume, overwrite, main_process=rank == 0):
        saved = None
        if resume:
            saved = run.config()
            if saved["kind"] != trainer.kind:
                raise RunError(f"--resume {run}: a {saved['kind']} run, not one this command trains ({trainer.kind})")
            cfg = resumed_settings(run, saved, given.get("train", {}), cfg.device, quiet)
            trainer.restore(run, saved, given)
            cfg = epochs_to_train(run, cfg, extend_to, quiet)
        cfg = cfg.resolved()  # device settings now; the schedule once the run's length is known
        seed_everything(cfg.seed + rank, cfg.deterministic, cfg.device)
        aus = trainer.open(cfg, run, saved, rank, quiet)
        _refuse_shared_videos(trainer.inputs().get("--cache"))
        if cfg.train_rows is not None and cfg.train_rows > len(aus):  # as a batch too large is, said and recorded
            quiet(f"--train-rows {cfg.train_rows} is more than the {len(aus)} training rows: using all of them")
            cfg = replace(cfg, train_rows=None)
        cfg = batch_for(cfg, len(aus), world, quiet)
        steps_per_epoch = len(aus) // cfg.batch_size // world
        total_steps = max(1, steps_per_epoch * cfg.epochs)
        cfg = cfg.resolved(trainer.preset, total_steps, trainer.method)
        pos_weight = au_pos_weight(aus, cfg.au_weighting, cfg.au_f1_target)
        recorded = saved.get("au_pos_weight") if saved is not None else None
        if recorded is not None and not np.allclose(recorded, pos_weight, rtol=1e-6, atol=0):
            # the weights come from the training labels and the settings: a resumed run trains on
            # the ones it started with, or not at all
            raise RunError(f"--resume {run}: the AU loss weights would be {[round(w, 3) for w in pos_weight]}, "
                           f"not the run's recorded {[round(w, 3) for w in recorded]} (other training labels, or "
                           "another mf2's weighting rule): resume with the cache and mf2 the run started with, or "
                           "start a new run")
        device = torch.device(cfg.device)
        model = trainer.build(cfg, device)
        optimizer = make_optimizer(model, cfg)
        quiet(cfg.schedule_line(total_steps, steps_per_epoch))
        quiet(au_loss_line(cfg, pos_weight))
        # the trained weights' moving average, when the run keeps one (made before resuming restores it)
        average = WeightAverage(model, decay_for(cfg.average_epochs, steps_per_epoch)) if cfg.average_epochs else None
        start_epoch, step = resume_latest(run, model, optimizer, trainer.restore_rng(), log, average) if resume else (0, 0)
        if not resume and rank == 0:
            sections, params = trainer.record(cfg, model)
            run.write_config(trainer.kind, **sections, train=asdict(cfg), au_pos_weight=pos_weight)
            run.write_params(params)
        elif rank == 0:
            record_epochs(run, saved, cfg)
        run.started()
        net = distributed.wrap(model)
        weight = torch.tensor(pos_weight, device=device)
        return fit(run, model, optimizer, cfg, start_epoch=start_epoch, step=step, total_steps=total_steps,
                   batches=lambda epoch: trainer.batches(epoch, cfg, rank, world),
                   losses_of=trainer.losses_of(net, cfg, weight), validate=lambda: trainer.validate(cfg),
                   rng_state=trainer.rng_state, max_epochs_this_run=max_epochs_this_run, progress=progress, log=log,
                   average=average)


def _refuse_shared_videos(cache) -> None:
    """A cache whose videos straddle splits would score validation on people training saw."""
    if cache is None:
        return
    from mf2.features.reader import videos_in_several_splits
    from mf2.features.store import FeatureStore

    shared = videos_in_several_splits(FeatureStore.open(cache))
    if shared:
        video, splits = next(iter(shared.items()))
        raise RunError(f"{cache}: {len(shared)} video(s) have faces in more than one split (first: {video!r} in "
                       f"{' and '.join(splits)}), so validation would score people training saw; split the "
                       "manifest by video (mf2 build-dataset) and extract it again")

