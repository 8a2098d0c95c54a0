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

from mf2.devices import autocast
from mf2.evaluation.metrics import validation_row
from mf2.features.reader import CacheReader, prefetch, sample_rows
from mf2.features.store import CODECS, FeatureStore, lost_chunk, read_rows
from mf2.io import file_digest
from mf2.models.config import PAPER_DFN_PARAMS, DFNConfig
from mf2.models.dfn import DFN, block_outputs
from mf2.models.mf2 import MF2, trainable
from mf2.models.outputs import BlockOutputs
from mf2.runs import IMAGE_FIELDS, TEXT_FIELDS, RunError, RunFolder, check_features, dfn_config, load_model
from mf2.training.loop import TrainConfig
from mf2.training.pretrain import MF2Trainer
from mf2.training.session import Trainer, contradictions, train


def finetune_full(from_run, cache, out, cfg: TrainConfig, resume: bool = False, overwrite: bool = False, log=print,
                  max_epochs_this_run: int | None = None, progress=None, extend_to: int | None = None,
                  given: dict | None = None) -> dict:
    """All of a pretrained MF² fine-tuned on the task losses (the "w/o DFN" row)."""
    return train(MF2Trainer(cache, None, from_run, align=False), out, cfg, resume=resume, overwrite=overwrite,
                 given=given, extend_to=extend_to, max_epochs_this_run=max_epochs_this_run, progress=progress, log=log)


def build_dfn_cache(base: MF2, cache, path: Path, signature: dict, device, batch_size: int = 64, log=print,
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
    base.eval()
    for split in ("train", "val"):
        reader = CacheReader(cache, split, base.cfg.emo_text)
        sub, start = None, 0
        for batch in prefetch(reader.batches(batch_size, shuffle=False, drop_last=False), device):
            with autocast(precision, device):
                arrays = {k: v.float() if v.is_floating_point() else v
                          for k, v in block_outputs(base, batch).arrays().items()}
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
             rank: int = 0, world: int = 1, keep: np.ndarray | None = None):
    """Shuffled (epoch given) or ordered batches of the cached vectors, read by windows. Under
    DDP rank r takes batches r, r + world, ... and every rank takes the same number. ``keep``
    [N] bool: the rows to use (a training subset; None: all)."""
    n = split["emotion"].shape[0]
    starts = list(range(0, n, window))
    rng = np.random.default_rng([seed, epoch]) if epoch is not None else None
    if rng is not None:
        starts = [starts[i] for i in rng.permutation(len(starts))]
    local = [np.flatnonzero(keep[a:a + window]) if keep is not None else np.arange(min(window, n - a)) for a in starts]
    per_window = [len(m) // batch_size if rng is not None else -(-len(m) // batch_size) for m in local]
    limit = sum(per_window) // world if world > 1 else None
    names = list(split.array_keys())
    index, taken = 0, 0
    for a, rows, count in zip(starts, local, per_window):
        order = rows[rng.permutation(len(rows))] if rng is not None else rows
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


class DFNTrainer(Trainer):
    """DFN side pathways beside the frozen MF² of a pretrained run, on its cached block outputs."""

    kind, method = "dfn", "dfn"

    def __init__(self, from_run, cache, dfn_cfg: DFNConfig):
        self.from_run, self.cache, self.dfn_cfg = from_run, cache, dfn_cfg
        self.base_which = "best"  # the checkpoint of the base run that evaluate and predict use
        self.recorded_base_model = None

    def inputs(self) -> dict:
        return {"--cache": self.cache, "--from": self.from_run}

    def restore(self, run: RunFolder, saved: dict, given: dict) -> None:
        base = run.base_run(saved).path
        if self.from_run is not None and Path(self.from_run).resolve() != base.resolve():
            raise RunError(f"--resume {run}: --from {self.from_run} is not its base run ({base}); a resumed DFN run "
                           f"continues on its own base: pass --from {base}, or start a new run")
        contradictions(run, "dfn", saved["dfn"], given.get("dfn", {}))
        self.from_run, self.dfn_cfg = base, dfn_config(saved, run.path / "config.json")
        self.base_which, self.recorded_base_model = saved["base_checkpoint"], saved.get("base_model")

    @property
    def preset(self) -> str:
        return self.mf2.cfg.preset

    def open(self, cfg: TrainConfig, run: RunFolder, saved: dict | None, rank: int, log):
        from mf2 import distributed

        self.device = device = torch.device(cfg.device)
        self.mf2, _, base_ckpt = load_model(self.from_run, cfg.device, self.base_which, kinds=("mf2",))
        self.mf2.requires_grad_(False)
        cache_signature = FeatureStore.open(self.cache).signature
        text = cache_signature.get("text", {})
        if self.dfn_cfg.align_weight and not (self.mf2.cfg.emo_text in text.get("types", []) or text.get("au_sentences")):
            raise RunError(f"{self.cache} holds no captions, which DFN's text pathways align with: caption the manifest "
                           "first (mf2 caption) and extract the cache from its .captioned.jsonl; or pass --align-weight 0 "
                           "to train the vision pathways on the task losses only")
        check_features(RunFolder(self.from_run).features(), cache_signature, f"{self.cache} for {self.from_run}",
                       IMAGE_FIELDS + (TEXT_FIELDS if self.dfn_cfg.align_weight else ()))  # text only where it is read
        self.base_model = file_digest(base_ckpt / "model.safetensors")
        if self.recorded_base_model and self.base_model != self.recorded_base_model:
            raise RunError(f"--resume {run}: its base run {self.from_run} changed since the DFN run started; start a new "
                           "DFN run")
        signature = {"base": str(Path(self.from_run).resolve()), "base_model": self.base_model,
                     "cache": str(Path(self.cache).resolve()),
                     "cache_signature": json.dumps(cache_signature, sort_keys=True), "precision": cfg.precision}
        if rank == 0:
            self.group = build_dfn_cache(self.mf2, self.cache, run.dfn_cache, signature, device, log=log,
                                         precision=cfg.precision)
        distributed.barrier()
        if rank != 0:  # the other ranks read the cache rank 0 wrote
            self.group = zarr.open_group(str(run.dfn_cache), mode="r")
        n = self.group["train/emotion"].shape[0]
        self.keep = None
        if cfg.train_rows is not None and cfg.train_rows < n:  # the rows pretrain --train-rows draws
            rows = CacheReader(self.cache, "train", self.mf2.cfg.emo_text).rows
            chosen = sample_rows(rows, cfg.train_rows, cfg.seed)
            self.keep = np.isin(rows, chosen)
        aus = self.group["train/aus"][:]
        return aus if self.keep is None else aus[self.keep]

    def build(self, cfg: TrainConfig, device: torch.device) -> DFN:
        dfn = DFN(self.mf2.cfg, self.dfn_cfg)
        dfn.init_heads_from(self.mf2)
        self.dfn = dfn.to(device)
        return self.dfn

    def record(self, cfg: TrainConfig, dfn: DFN) -> tuple[dict, dict]:
        return ({"base_run": str(Path(self.from_run).resolve()), "base_checkpoint": self.base_which,
                 "base_model": self.base_model, "dfn": self.dfn_cfg.to_dict(), "cache": str(self.cache),
                 "model": self.mf2.cfg.to_dict()},
                {"dfn": trainable(dfn), "paper_dfn": PAPER_DFN_PARAMS,
                 "frozen_mf2": sum(p.numel() for p in self.mf2.parameters())})

    def batches(self, epoch: int, cfg: TrainConfig, rank: int, world: int):
        return (x.to(self.device) for x in _batches(self.group["train"], cfg.batch_size, epoch, cfg.seed, rank=rank,
                                                    world=world, keep=self.keep))

    def losses_of(self, net, cfg: TrainConfig, weight: torch.Tensor):
        return lambda x: net(x, cfg.tasks, weight)

    def validate(self, cfg: TrainConfig) -> dict:
        return _validate(self.dfn, self.group["val"], cfg.precision)


def finetune_dfn(from_run, cache, out, dfn_cfg: DFNConfig, cfg: TrainConfig, resume: bool = False,
                 overwrite: bool = False, log=print, max_epochs_this_run: int | None = None, progress=None,
                 extend_to: int | None = None, given: dict | None = None) -> dict:
    """DFN side pathways trained beside the frozen MF² of the run ``from_run``; returns the last
    epoch's log row. ``extend_to`` (with ``resume``) trains a run further, to that many epochs;
    ``given``: the options the user typed, by section (refused on ``resume`` where they
    contradict the run's record)."""
    return train(DFNTrainer(from_run, cache, dfn_cfg), out, cfg, resume=resume, overwrite=overwrite, given=given,
                 extend_to=extend_to, max_epochs_this_run=max_epochs_this_run, progress=progress, log=log)
