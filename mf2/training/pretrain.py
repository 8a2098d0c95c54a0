"""MF² pretraining on a feature cache (``mf2 pretrain``), and full fine-tuning of a pretrained
MF² on the task losses (``mf2 finetune --full``, through ``init_from`` and ``align=False``).

One JSONL + CSV row per epoch; a checkpoint per epoch (safetensors + JSON, atomic);
``resume`` continues from the latest; the resolved config is saved in the run folder, and an
earlier run is never overwritten unless asked (``mf2.runs``). Validation uses images only.
Under torchrun (WORLD_SIZE > 1) the model is wrapped in DDP and ITC/ITM negatives are
gathered across ranks; a single process needs no process group.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from mf2 import distributed
from mf2.evaluation.predict import validation_metrics
from mf2.features.reader import CacheReader, prefetch
from mf2.models.config import PAPER_PARAMS, MF2Config
from mf2.models.mf2 import MF2, count_parameters
from mf2.runs import IMAGE_FIELDS, TEXT_FIELDS, RunFolder, check_features, load_model, model_config
from mf2.training.loop import (TrainConfig, au_pos_weight, batch_for, epochs_to_train, fit, head_regularisation,
                               make_optimizer, record_epochs, resume_latest, rng_state, saved_train_config,
                               seed_everything)


def build_model(model_cfg: MF2Config, reader: CacheReader) -> MF2:
    """An MF² for the cache ``reader`` reads: its feature widths and ITG sub-vocabulary."""
    model_cfg.vision_dim = reader.vision_dim
    model_cfg.au_vision_dim = reader.au_vision_dim
    model_cfg.text_dim = reader.text_dim
    if not model_cfg.vocab:
        model_cfg.vocab = reader.vocabulary()
    return MF2(model_cfg)


def pretrain(cache, out, model_cfg: MF2Config | None, cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
             progress=None, log=print, max_epochs_this_run: int | None = None, init_from=None, align: bool = True,
             extend_to: int | None = None) -> dict:
    """Train MF² on ``cache`` into the run folder ``out``; returns the last epoch's log row.

    ``init_from`` (a run folder) starts from that run's weights; ``align=False`` trains the task
    losses only -- together they are full fine-tuning (``mf2 finetune --full``). ``extend_to``
    (with ``resume``) trains a run further, to that many epochs."""
    run = RunFolder(out)
    rank, world = distributed.init_from_env(cfg.device)
    with run.writing({"--cache": cache, "--from": init_from}, rank == 0):
        run.prepare(resume, overwrite, main_process=rank == 0)
        if resume:
            saved = run.config()
            model_cfg = model_config(saved, run.path / "config.json")
            cfg = saved_train_config(run, saved, cfg.device)
            align = saved.get("align", True)
            cfg = epochs_to_train(run, cfg, extend_to, log)
        if init_from is not None and not resume:
            base, _, _ = load_model(init_from)  # its best checkpoint
            model_cfg = base.cfg
        train = CacheReader(cache, "train", model_cfg.emo_text, cfg.window, flip=cfg.flip, limit=cfg.train_rows,
                            seed=cfg.seed)
        if resume:  # the same features as before: the whole signature, manifest included
            check_features(saved.get("features", train.store.signature), train.store.signature, f"--resume {out} on {cache}",
                           IMAGE_FIELDS + TEXT_FIELDS + ("manifest",))
        elif init_from is not None:
            check_features(RunFolder(init_from).features(), train.store.signature, f"{cache} for {init_from}",
                           IMAGE_FIELDS + TEXT_FIELDS)
        val = CacheReader(cache, "val", model_cfg.emo_text, cfg.window)
        cfg = batch_for(cfg, len(train), world, log if rank == 0 else lambda *a: None)
        steps_per_epoch = len(train) // cfg.batch_size // world
        total_steps = max(1, steps_per_epoch * cfg.epochs)
        cfg = cfg.resolved(model_cfg.preset, total_steps)
        seed_everything(cfg.seed + rank, cfg.deterministic, cfg.device)
        device = torch.device(cfg.device)
        model = build_model(model_cfg, train).to(device)
        model.set_activation_checkpointing(cfg.activation_checkpointing)
        if cfg.compile:
            model.compile_blocks()
        if init_from is not None and not resume:
            model.load_state_dict(base.state_dict())
        optimizer = make_optimizer(model, cfg)
        generator = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)
        pos_weight = au_pos_weight(train.aus(), cfg.au_weighting)
        if rank == 0:
            log(cfg.schedule_line(total_steps, steps_per_epoch))
        start_epoch, step = resume_latest(run, model, optimizer, generator, log) if resume else (0, 0)
        if not resume and rank == 0:
            run.write_config("mf2", model=model_cfg.to_dict(), train=asdict(cfg), cache=str(cache),
                             features=train.store.signature, world_size=world, align=align,
                             init_from=str(init_from) if init_from else None, au_pos_weight=pos_weight)
            run.write_params({"ours": count_parameters(model), "paper": PAPER_PARAMS})
        elif rank == 0:
            record_epochs(run, saved, cfg)
        net = distributed.wrap(model)
        weight = torch.tensor(pos_weight, device=device)
        regularisation = head_regularisation(cfg)
        return fit(run, model, optimizer, cfg, start_epoch=start_epoch, step=step, total_steps=total_steps,
                   batches=lambda epoch: prefetch(train.batches(cfg.batch_size, epoch, cfg.seed, rank=rank, world=world),
                                                  device),
                   losses_of=lambda b: net(b, cfg.tasks, generator, align, weight, regularisation),
                   validate=lambda: validation_metrics(model, val, device, cfg.precision),
                   rng_state=lambda: rng_state(generator),
                   max_epochs_this_run=max_epochs_this_run, progress=progress, log=log)
