"""``mf2 finetune``: DFN side-adapter fine-tuning of a frozen MF² (``--dfn``), or fine-tuning
all of MF² on the task losses (``--full``, the "w/o DFN" row of Table IV).

MF² is frozen under DFN, so the pooled output of every block is the same in every epoch: they
are computed once into ``<run>/dfn_cache.zarr`` (with the pathways' start vectors and the
labels) and a DFN epoch reads vectors, not tokens. Logging, checkpoints and resume behave as in
pretraining; ``mf2 evaluate`` works on either kind of run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from mf2.data.labels import AUS
from mf2.data.manifest import atomic_write_text
from mf2.models.dfn import DFN, PAPER_DFN_PARAMS, DFNConfig
from mf2.models.mf2 import MF2
from mf2.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mf2.training.data import CacheReader, to_device
from mf2.training.pretrain import (RunError, TrainConfig, _append_log, _dist, make_optimizer, seed_everything,
                                   train_epoch, validation_row)

N_AU = len(AUS)


@torch.no_grad()
def vision_block_outputs(mf2: MF2, tokens: torch.Tensor, au_tokens: torch.Tensor) -> dict:
    """The frozen MF²'s per-block pooled image outputs and the pathways' vision start vectors:
    emo_v_start [B, C], emo_v_h [B, N, H], au_v_start [B, 12, C], au_v_h [B, 12, N, H]."""
    out = {}
    if mf2.emo_vl is not None:
        b = mf2.emo_vl
        layers = b.qformer.image(b.vision_in(tokens), all_layers=True)  # [N, B, Q, H]
        out["emo_v_start"], out["emo_v_h"] = tokens[:, 0], layers.mean(2).transpose(0, 1)
    if mf2.au_vl is not None:
        b = mf2.au_vl
        B = au_tokens.shape[0]
        layers = b.qformer.image(b.vision_in(au_tokens.flatten(0, 1)), all_layers=True)  # [N, B*12, Q, H]
        out["au_v_start"] = au_tokens.mean(2)
        out["au_v_h"] = layers.mean(2).transpose(0, 1).reshape(B, N_AU, layers.shape[0], -1)
    return out


@torch.no_grad()
def text_block_outputs(mf2: MF2, batch: dict) -> dict:
    """Per-block text CLS outputs and text start vectors (rows without text hold zeros)."""
    out = {}
    if mf2.emo_vl is not None and "emo_text" in batch:
        ids, mask, states, has = batch["emo_text"]
        layers = mf2.emo_vl.qformer.text(states, mask | ~has[:, None], all_layers=True)[:, :, 0]  # [N, B, H]
        out.update(emo_t_start=states[:, 0], emo_t_h=layers.transpose(0, 1) * has[:, None, None], emo_t_has=has)
    if mf2.au_vl is not None and "au_text" in batch:
        ids, mask, states, has = batch["au_text"]
        B = states.shape[0]
        flat_mask = (mask | ~has[..., None]).flatten(0, 1)
        layers = mf2.au_vl.qformer.text(states.flatten(0, 1), flat_mask, all_layers=True)[:, :, 0]
        h = layers.transpose(0, 1).reshape(B, N_AU, layers.shape[0], -1) * has[..., None, None]
        out.update(au_t_start=states[:, :, 0], au_t_h=h, au_t_has=has)
    return out


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def build_dfn_cache(mf2: MF2, cache, path: Path, signature: dict, device, batch_size: int = 64, log=print) -> zarr.Group:
    """Compute (or reuse, when its signature matches) the frozen block outputs of every valid
    train and val row."""
    path = Path(path)
    if path.exists():
        group = zarr.open_group(str(path), mode="r")
        if dict(group.attrs).get("signature") == signature and group.attrs.get("complete"):
            return group
        shutil.rmtree(path)
    t0 = time.perf_counter()
    group = zarr.open_group(str(path), mode="w")
    mf2.eval()
    for split in ("train", "val"):
        reader = CacheReader(cache, split, mf2.cfg.emo_text)
        sub, start = None, 0
        for batch in reader.batches(batch_size, shuffle=False, drop_last=False):
            batch = to_device(batch, device)
            arrays = {**vision_block_outputs(mf2, batch["tokens"], batch["au_tokens"]), **text_block_outputs(mf2, batch),
                      "emotion": batch["emotion"], "aus": batch["aus"]}
            if sub is None:
                sub = group.require_group(split)
                for k, v in arrays.items():
                    shape = (len(reader),) + tuple(v.shape[1:])
                    per = max(1, int(np.prod(shape[1:])) * v.element_size())
                    sub.create_array(k, shape=shape, dtype=v.cpu().numpy().dtype,
                                     chunks=(max(1, min(len(reader), (2 << 20) // per)),) + shape[1:])
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
        data = {k: split[k][a:a + window] for k in names}
        for i in range(count):
            mine = (index + i) % world == rank
            if mine and (limit is None or taken < limit):
                idx = order[i * batch_size:(i + 1) * batch_size]
                taken += 1
                yield {k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in data.items()}
        index += count


class DFNModel(torch.nn.Module):
    """A frozen MF² with its DFN: predicts from images (live block outputs)."""

    def __init__(self, mf2: MF2, dfn: DFN):
        super().__init__()
        self.mf2, self.dfn, self.cfg = mf2, dfn, mf2.cfg

    @torch.no_grad()
    def predict(self, tokens, au_tokens):
        emotion, au, _ = self.dfn.heads(vision_block_outputs(self.mf2, tokens, au_tokens))
        return emotion.softmax(-1), au.sigmoid()


@torch.no_grad()
def _validate(dfn: DFN, split: zarr.Group) -> dict:
    dfn.eval()
    emo, au, y_emo, y_au = [], [], [], []
    for x in _batches(split, 512, None, 0):
        e, a, _ = dfn.heads(x)
        emo.append(e.softmax(-1))
        au.append(a.sigmoid())
        y_emo.append(x["emotion"])
        y_au.append(x["aus"])
    dfn.train()
    return validation_row(*(torch.cat(t).numpy() for t in (emo, au, y_emo, y_au)))


def trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def finetune_dfn(from_run, cache, out, dfn_cfg: DFNConfig, cfg: TrainConfig, resume: bool = False,
                 overwrite: bool = False, log=print, max_epochs_this_run: int | None = None) -> dict:
    from mf2.evaluation.evaluate import base_run, load_run

    out = Path(out)
    if out.exists() and (out / "config.json").exists() and not resume:
        if not overwrite:
            raise RunError(f"{out} holds an earlier run; pass --resume to continue it or --overwrite to replace it")
        shutil.rmtree(out)
    if resume:
        saved = json.loads((out / "config.json").read_text())
        from_run, dfn_cfg = base_run(out, saved), DFNConfig(**saved["dfn"])
        cfg = TrainConfig(**{**saved["train"], "device": cfg.device})
    rank, world = _dist()
    seed_everything(cfg.seed + rank, cfg.deterministic, cfg.device)
    device = torch.device(cfg.device)
    mf2, base_config, base_ckpt = load_run(from_run, cfg.device)
    mf2.requires_grad_(False)
    dfn = DFN(mf2.cfg, dfn_cfg)
    dfn.init_heads_from(mf2)
    dfn = dfn.to(device)
    optimizer = make_optimizer(dfn, cfg)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    signature = {"base": str(Path(from_run).resolve()), "base_model": _digest(base_ckpt / "model.safetensors"),
                 "cache": str(Path(cache).resolve()), "cache_signature": json.dumps(
                     dict(zarr.open_group(str(cache), mode="r").attrs["signature"]), sort_keys=True)}
    if rank == 0:
        group = build_dfn_cache(mf2, cache, out / "dfn_cache.zarr", signature, device, log=log)
    if world > 1:  # the other ranks read the cache rank 0 wrote
        import torch.distributed as dist

        dist.barrier()
        group = zarr.open_group(str(out / "dfn_cache.zarr"), mode="r")
    net = dfn
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(dfn, find_unused_parameters=True)
    start_epoch, step = 0, 0
    if resume:
        ckpt = latest_checkpoint(out)
        state, rng = load_checkpoint(ckpt, dfn, optimizer)
        start_epoch, step = state["epoch"] + 1, state["step"]
        torch.set_rng_state(rng["torch"])
    elif rank == 0:
        params = {"dfn": trainable(dfn), "paper_dfn": PAPER_DFN_PARAMS, "frozen_mf2": sum(p.numel() for p in mf2.parameters())}
        atomic_write_text(out / "config.json", json.dumps({"kind": "dfn", "base_run": str(Path(from_run).resolve()), "dfn": dfn_cfg.to_dict(),
                                                           "train": {**cfg.__dict__}, "cache": str(cache),
                                                           "model": mf2.cfg.to_dict()}, indent=2))
        atomic_write_text(out / "params.json", json.dumps(params, indent=2))
    n_train = group["train/emotion"].shape[0]
    total = max(1, n_train // cfg.batch_size // world * cfg.epochs)
    end_epoch = cfg.epochs if max_epochs_this_run is None else min(cfg.epochs, start_epoch + max_epochs_this_run)
    row = None
    for epoch in range(start_epoch, end_epoch):
        dfn.train()
        batches = ({k: v.to(device) for k, v in x.items()}
                   for x in _batches(group["train"], cfg.batch_size, epoch, cfg.seed, rank=rank, world=world))
        step, stats = train_epoch(batches, lambda x: net(x, cfg.tasks), optimizer, step, total, cfg)
        row = {"epoch": epoch + 1, "rank": rank, "step": step, "seconds": stats["seconds"],
               "samples_per_s": round(stats["samples"] * world / stats["seconds"], 2) if stats["seconds"] else None,
               **stats["train"]}
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
        if rank != 0:
            continue
        row.update(_validate(dfn, group["val"]))
        _append_log(out, row)
        save_checkpoint(out, epoch, dfn, optimizer, {"step": step}, {"torch": torch.get_rng_state()})
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                     if k in ("epoch", "train_loss", "val_au_f1", "val_emotion_mean_acc", "samples_per_s", "seconds")))
    return row
