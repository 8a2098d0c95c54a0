"""``mf2 finetune``: DFN side-adapter fine-tuning of a frozen MF² (``--dfn``), or fine-tuning
all of MF² on the task losses (``--full``, the "w/o DFN" row of Table IV).

MF² is frozen under DFN, so the pooled output of every block is the same in every epoch: they
are computed once into ``<run>/dfn_cache.zarr`` (with the pathways' start vectors and the
labels) and a DFN epoch reads vectors, not tokens. Logging, checkpoints and resume behave as in
pretraining (one ``fit`` loop); ``mf2 evaluate`` works on either kind of run.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from mf2 import distributed
from mf2.devices import autocast
from mf2.evaluation.metrics import validation_row
from mf2.features.reader import CacheReader, prefetch
from mf2.features.store import CODECS, FeatureStore, lost_chunk, read_rows
from mf2.io import file_digest
from mf2.models.config import PAPER_DFN_PARAMS, DFNConfig
from mf2.models.dfn import DFN, block_outputs
from mf2.models.mf2 import MF2, trainable
from mf2.models.outputs import BlockOutputs
from mf2.runs import IMAGE_FIELDS, TEXT_FIELDS, RunError, RunFolder, check_features, dfn_config, load_model
from mf2.training.loop import (TrainConfig, au_pos_weight, batch_for, epochs_to_train, fit, make_optimizer,
                               record_epochs, resume_latest, rng_state, saved_train_config, seed_everything)
from mf2.training.pretrain import pretrain


def finetune_full(from_run, cache, out, cfg: TrainConfig, resume: bool = False, overwrite: bool = False, log=print,
                  max_epochs_this_run: int | None = None, progress=None, extend_to: int | None = None) -> dict:
    """All of a pretrained MF² fine-tuned on the task losses (the "w/o DFN" row)."""
    return pretrain(cache, out, None, cfg, resume=resume, overwrite=overwrite, log=log, init_from=from_run,
                    align=False, max_epochs_this_run=max_epochs_this_run, progress=progress, extend_to=extend_to)


def build_dfn_cache(mf2: MF2, cache, path: Path, signature: dict, device, batch_size: int = 64, log=print,
                    precision: str = "fp32") -> zarr.Group:
    """Compute (or reuse, when its signature matches) the frozen block outputs of every valid
    train and val row (stored in float32)."""
    path = Path(path)
    if path.exists():
        group = zarr.open_group(str(path), mode="r")
        if dict(group.attrs).get("signature") == signature and group.attrs.get("complete"):
            lost = lost_chunk(group, [f"{part}/{k}" for part in ("train", "val") for k in group[part].array_keys()])
            if not lost:
                return group
            log(f"{path}: array {lost[0]} has lost rows {lost[1]}-{lost[2]}; computing the block outputs again")
        shutil.rmtree(path)
    t0 = time.perf_counter()
    group = zarr.open_group(str(path), mode="w")
    mf2.eval()
    for split in ("train", "val"):
        reader = CacheReader(cache, split, mf2.cfg.emo_text)
        sub, start = None, 0
        for batch in prefetch(reader.batches(batch_size, shuffle=False, drop_last=False), device):
            with autocast(precision, device):
                arrays = {k: v.float() if v.is_floating_point() else v
                          for k, v in block_outputs(mf2, batch).arrays().items()}
            if sub is None:
                sub = group.require_group(split)
                for k, v in arrays.items():
                    shape = (len(reader),) + tuple(v.shape[1:])
                    per = max(1, int(np.prod(shape[1:])) * v.element_size())
                    sub.create_array(k, shape=shape, dtype=v.cpu().numpy().dtype,
                                     chunks=(max(1, min(len(reader), (2 << 20) // per)),) + shape[1:],
                                     compressors=CODECS, config={"write_empty_chunks": True})
            n = len(batch["emotion"])
            for k, v in arrays.items():
                sub[k][start:start + n] = v.cpu().numpy()
            start += n
    group.attrs.update({"signature": signature, "complete": True, "seconds": round(time.perf_counter() - t0, 3)})
    log(f"frozen MF² block outputs cached in {path} ({time.perf_counter() - t0:.1f} s)")
    return group


def _batches(split: zarr.Group, batch_size: int, epoch: int | None, seed: int, window: int = 2048,
             rank: int = 0, world: int = 1):
    """Shuffled (epoch given) or ordered batches of the cached vectors, read by windows. Under
    DDP rank r takes batches r, r + world, ... and every rank takes the same number."""
    n = split["emotion"].shape[0]
    starts = list(range(0, n, window))
    rng = np.random.default_rng([seed, epoch]) if epoch is not None else None
    if rng is not None:
        starts = [starts[i] for i in rng.permutation(len(starts))]
    sizes = [min(window, n - a) for a in starts]
    per_window = [m // batch_size if rng is not None else -(-m // batch_size) for m in sizes]
    limit = sum(per_window) // world if world > 1 else None
    names = list(split.array_keys())
    index, taken = 0, 0
    for a, m, count in zip(starts, sizes, per_window):
        order = rng.permutation(m) if rng is not None else np.arange(m)
        if not any((index + i) % world == rank for i in range(count)):
            index += count
            continue
        data = {k: read_rows(split, k, a, a + window, "delete it to compute it again") for k in names}
        for i in range(count):
            mine = (index + i) % world == rank
            if mine and (limit is None or taken < limit):
                idx = order[i * batch_size:(i + 1) * batch_size]
                taken += 1
                yield BlockOutputs.from_arrays({k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in data.items()})
        index += count


@torch.no_grad()
def _validate(dfn: DFN, split: zarr.Group, precision: str = "fp32") -> dict:
    """The log row's validation columns of ``dfn`` on a split of its cached block outputs."""
    dfn.eval()
    device = next(dfn.parameters()).device
    emo, au, y_emo, y_au = [], [], [], []
    for x in _batches(split, 512, None, 0):
        with autocast(precision, device):
            e, a, _ = dfn.heads(x.to(device))
        emo.append(e.float().softmax(-1).cpu())
        au.append(a.float().sigmoid().cpu())
        y_emo.append(x.emotion)
        y_au.append(x.aus)
    dfn.train()
    return validation_row(*(torch.cat(t).numpy() for t in (emo, au, y_emo, y_au)))


def finetune_dfn(from_run, cache, out, dfn_cfg: DFNConfig, cfg: TrainConfig, resume: bool = False,
                 overwrite: bool = False, log=print, max_epochs_this_run: int | None = None, progress=None,
                 extend_to: int | None = None) -> dict:
    """DFN side pathways trained beside the frozen MF² of the run ``from_run``; returns the last
    epoch's log row. ``extend_to`` (with ``resume``) trains a run further, to that many epochs."""
    run = RunFolder(out)
    rank, world = distributed.init_from_env(cfg.device)
    with run.writing({"--cache": cache, "--from": from_run}, rank == 0):
        run.prepare(resume, overwrite, main_process=rank == 0)
        base_which = "best"  # the checkpoint of the base run that evaluate and predict use
        if resume:
            saved = run.config()
            from_run, dfn_cfg = run.base_run(saved).path, dfn_config(saved, run.path / "config.json")
            cfg = saved_train_config(run, saved, cfg.device)
            base_which = saved.get("base_checkpoint", "latest")  # older DFN runs were trained on the base's latest
            cfg = epochs_to_train(run, cfg, extend_to, log)
        cfg = cfg.resolved()  # device settings now; the schedule once the run's length is known
        seed_everything(cfg.seed + rank, cfg.deterministic, cfg.device)
        device = torch.device(cfg.device)
        mf2, base_config, base_ckpt = load_model(from_run, cfg.device, base_which)
        mf2.requires_grad_(False)
        cache_signature = FeatureStore.open(cache).signature
        check_features(RunFolder(from_run).features(), cache_signature, f"{cache} for {from_run}", IMAGE_FIELDS + TEXT_FIELDS)
        base_model = file_digest(base_ckpt / "model.safetensors")
        if resume and saved.get("base_model") and base_model != saved["base_model"]:
            raise RunError(f"--resume {out}: its base run {from_run} changed since the DFN run started; start a new DFN run")
        signature = {"base": str(Path(from_run).resolve()), "base_model": base_model,
                     "cache": str(Path(cache).resolve()), "cache_signature": json.dumps(cache_signature, sort_keys=True),
                     "precision": cfg.precision}
        if rank == 0:
            group = build_dfn_cache(mf2, cache, run.dfn_cache, signature, device, log=log, precision=cfg.precision)
        distributed.barrier()
        if world > 1:  # the other ranks read the cache rank 0 wrote
            group = zarr.open_group(str(run.dfn_cache), mode="r")
        cfg = batch_for(cfg, group["train/emotion"].shape[0], world, log if rank == 0 else lambda *a: None)
        steps_per_epoch = group["train/emotion"].shape[0] // cfg.batch_size // world
        total = max(1, steps_per_epoch * cfg.epochs)
        cfg = cfg.resolved(mf2.cfg.preset, total, method="dfn")
        if rank == 0:
            log(cfg.schedule_line(total, steps_per_epoch))
        dfn = DFN(mf2.cfg, dfn_cfg)
        dfn.init_heads_from(mf2)
        dfn = dfn.to(device)
        optimizer = make_optimizer(dfn, cfg)
        pos_weight = au_pos_weight(group["train/aus"][:], cfg.au_weighting)
        net = distributed.wrap(dfn)
        start_epoch, step = resume_latest(run, dfn, optimizer, log=log) if resume else (0, 0)
        if not resume and rank == 0:
            run.write_config("dfn", base_run=str(Path(from_run).resolve()), base_checkpoint=base_which,
                             base_model=signature["base_model"], dfn=dfn_cfg.to_dict(), train={**cfg.__dict__},
                             cache=str(cache), model=mf2.cfg.to_dict(), au_pos_weight=pos_weight)
            run.write_params({"dfn": trainable(dfn), "paper_dfn": PAPER_DFN_PARAMS,
                              "frozen_mf2": sum(p.numel() for p in mf2.parameters())})
        elif rank == 0:
            record_epochs(run, saved, cfg)
        weight = torch.tensor(pos_weight, device=device)
        return fit(run, dfn, optimizer, cfg, start_epoch=start_epoch, step=step, total_steps=total,
                   batches=lambda epoch: (x.to(device) for x in
                                          _batches(group["train"], cfg.batch_size, epoch, cfg.seed, rank=rank, world=world)),
                   losses_of=lambda x: net(x, cfg.tasks, weight), validate=lambda: _validate(dfn, group["val"], cfg.precision),
                   rng_state=rng_state, max_epochs_this_run=max_epochs_this_run,
                   progress=progress, log=log)
