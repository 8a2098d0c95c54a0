"""Batches from a feature store, read without loading the store into memory.

Rows are grouped into windows of contiguous rows (whole chunks of every array). Each epoch
shuffles the windows, and the rows inside each window, with a generator seeded by (seed,
epoch): the same order on every run and on a resumed one. Under DDP each rank takes every
world-th row of each window and all ranks stop at the same step count. Text arrays are cut to the longest
text of the batch.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import torch

from mf2.features.store import FeatureStore
from mf2.features import schema

SPECIAL = [0, -1, -2]  # sub-vocabulary indices 0..2: PAD (original id 0), BOS, UNK


def sample_rows(rows: np.ndarray, limit: int | None, seed: int = 0) -> np.ndarray:
    """``limit`` of ``rows`` drawn at random with ``seed`` (in store order), or all of them: the
    training subset of a learning curve (``pretrain --train-rows``), the same for the model and the
    probe it is compared with."""
    if limit is None or limit >= len(rows):
        return rows
    if limit < 1:
        raise ValueError(f"train_rows: expected at least 1, got {limit}")
    return np.sort(np.random.default_rng([seed, 7]).choice(rows, limit, replace=False))


VIEWS = ("original", "flip")


class CacheReader:
    """The rows of one split of a feature store, as batches. With ``flip`` (a store extracted with
    ``--augment flip``), each row's visual features are its mirrored view's with probability 1/2,
    drawn per row and epoch from the seed: what training samples from; evaluation reads originals
    (``view='flip'``: the mirrored views only, what test-time flipping averages in)."""

    def __init__(self, path, split: str | None = "train", emo_text: str = "emotion", window: int = 512,
                 flip: bool = False, limit: int | None = None, seed: int = 0, view: str = "original"):
        self.store = FeatureStore.open(path)
        if not self.store.complete:
            raise ValueError(f"{path}: the feature store is incomplete (rerun mf2 extract-features to finish it)")
        self.store.verify()
        g = self.store.group
        valid = g[schema.VALID][:]
        splits = g[schema.SPLIT][:]
        keep = valid & ((splits == split) if split else True)
        self.rows = sample_rows(np.flatnonzero(keep), limit, seed)
        if len(self.rows) == 0:
            raise ValueError(f"{path}: no valid rows in split {split!r}")
        self.window = window
        self.emo_text = emo_text
        self.has_emo_text = schema.text(emo_text, "ids") in g
        self.has_au_text = schema.text(schema.AU_SENTENCES, "ids") in g
        self.vision_dim = g[schema.TOKENS].shape[-1]
        self.au_vision_dim = g[schema.AU_TOKENS].shape[-1]
        self.flip = flip and schema.flipped(schema.TOKENS) in g
        if view not in VIEWS:
            raise ValueError(f"view: expected {' or '.join(VIEWS)}, got {view!r}")
        if view == "flip" and schema.flipped(schema.TOKENS) not in g:
            raise ValueError(f"{path}: the store holds no mirrored views for test-time flipping (extract it with "
                             "--augment flip)")
        self.view = view
        self.text_dim = g[schema.text(emo_text, "hidden")].shape[-1] if self.has_emo_text else (
            g[schema.text(schema.AU_SENTENCES, "hidden")].shape[-1] if self.has_au_text else 1)

    def __len__(self):
        return len(self.rows)

    def text_coverage(self) -> dict:
        """How many of this split's rows carry each text the alignment losses read: name -> rows
        ('<type> captions' for Emo-VL's caption type, 'per-AU sentences' for AU-VL)."""
        out = {}
        for present, name, array in ((self.has_emo_text, f"{self.emo_text} captions", schema.text(self.emo_text, "mask")),
                                     (self.has_au_text, "per-AU sentences", schema.text(schema.AU_SENTENCES, "mask"))):
            if present:
                rows = 0
                for start in range(0, self.store.count, 4096):
                    mine = self.rows[(self.rows >= start) & (self.rows < start + 4096)] - start
                    if len(mine):
                        first = self.store.read(array, start, min(start + 4096, self.store.count))[mine][..., 0]
                        rows += int((first.reshape(len(mine), -1).any(1)).sum())
                out[name] = rows
        return out

    def aus(self) -> np.ndarray:
        """AU labels [N, 12] of this split's rows (-1 = missing)."""
        return self.store.group[schema.AUS][:][self.rows]

    def vocabulary(self) -> list[int]:
        """The ITG sub-vocabulary: special slots, then every token id of this split's texts."""
        seen = set()
        g = self.store.group
        names = ([schema.text(self.emo_text, "ids")] if self.has_emo_text else []) + \
                ([schema.text(schema.AU_SENTENCES, "ids")] if self.has_au_text else [])
        for name in names:
            arr = g[name]
            for start in range(0, arr.shape[0], 1024):
                stop = min(arr.shape[0], start + 1024)
                rows = self.rows[(self.rows >= start) & (self.rows < stop)] - start
                if len(rows):
                    seen.update(np.unique(arr[start:stop][rows]).tolist())
        seen.discard(0)
        return SPECIAL + sorted(seen)

    def _windows(self) -> list[np.ndarray]:
        edges = np.arange(0, self.store.count + self.window, self.window)
        out = []
        for a, b in zip(edges[:-1], edges[1:]):
            rows = self.rows[(self.rows >= a) & (self.rows < b)]
            if len(rows):
                out.append(rows)
        return out

    def _read(self, rows: np.ndarray) -> dict:
        """Arrays of the given (sorted) rows, read through their window's contiguous range."""
        a, b = int(rows[0]), int(rows[-1]) + 1
        local = rows - a
        seen = schema.flipped if self.view == "flip" else (lambda name: name)  # the view the model reads
        names = [seen(schema.TOKENS), seen(schema.AU_TOKENS), schema.EMOTION, schema.AUS]
        if self.flip and self.view != "flip":
            names += [schema.flipped(schema.TOKENS), schema.flipped(schema.AU_TOKENS)]
        if self.has_emo_text:
            names += [schema.text(self.emo_text, k) for k in ("ids", "mask", "hidden")]
        if self.has_au_text:
            names += [schema.text(schema.AU_SENTENCES, k) for k in ("ids", "mask", "hidden")]
        as_read = {seen(schema.TOKENS): schema.TOKENS, seen(schema.AU_TOKENS): schema.AU_TOKENS}
        return {as_read.get(name, name): self.store.read(name, a, b)[local] for name in names}

    def batches(self, batch_size: int, epoch: int = 0, seed: int = 0, shuffle: bool = True, drop_last: bool = True,
                rank: int = 0, world: int = 1):
        windows = self._windows()
        if shuffle:
            rng = np.random.default_rng([seed, epoch])
            windows = [windows[i] for i in rng.permutation(len(windows))]
            windows = [w[rng.permutation(len(w))] for w in windows]
        # each rank takes every world-th row of every window: balanced, and reads stay local
        mine = [w[rank::world] for w in windows if len(w[rank::world])]
        # mirrored or not: one draw per row of the store and epoch, the same on every rank and resume
        flipped = np.random.default_rng([seed, epoch, 1]).random(self.store.count) < 0.5 if self.flip else None
        if world > 1:  # every rank stops after the same number of steps
            limit = min(sum(len(w[r::world]) for w in windows) // batch_size for r in range(world))
        else:
            limit = None
        carry, done = None, 0
        for w in mine:
            rows_sorted = np.sort(w)
            data = self._read(rows_sorted)
            order = np.searchsorted(rows_sorted, w)  # the window's shuffled order
            data = {k: v[order] for k, v in data.items()}
            if flipped is not None:
                use = flipped[w]
                for name in (schema.TOKENS, schema.AU_TOKENS):
                    mirrored = data.pop(name + "_flip")
                    data[name] = np.where(use.reshape(-1, *[1] * (mirrored.ndim - 1)), mirrored, data[name])
            if carry is not None:  # the previous window's remainder goes first
                data = {k: np.concatenate([carry[k], v]) for k, v in data.items()}
            n_full = len(data[schema.EMOTION]) // batch_size
            for i in range(n_full):
                if limit is not None and done >= limit:
                    return
                yield self._batch({k: v[i * batch_size:(i + 1) * batch_size] for k, v in data.items()})
                done += 1
            carry = {k: v[n_full * batch_size:] for k, v in data.items()}
        if carry is not None and len(carry[schema.EMOTION]) and not drop_last and (limit is None or done < limit):
            yield self._batch(carry)

    def _batch(self, d: dict) -> dict:
        """A batch as torch tensors, features still float16 as stored (``to_device`` converts
        them where they will be used: half the bytes to copy to a GPU)."""
        batch = {"tokens": torch.from_numpy(np.ascontiguousarray(d[schema.TOKENS])),
                 "au_tokens": torch.from_numpy(np.ascontiguousarray(d[schema.AU_TOKENS])),
                 "emotion": torch.from_numpy(d[schema.EMOTION].astype(np.int64)),
                 "aus": torch.from_numpy(d[schema.AUS].astype(np.int64))}
        if self.has_emo_text:
            p = schema.text(self.emo_text)
            batch["emo_text"] = _text(d[f"{p}/ids"], d[f"{p}/mask"], d[f"{p}/hidden"])
        if self.has_au_text:
            p = schema.text(schema.AU_SENTENCES)
            batch["au_text"] = _text(d[f"{p}/ids"], d[f"{p}/mask"], d[f"{p}/hidden"])
        return batch


def _text(ids, mask, hidden):
    """(ids, mask, states, has_text) cut to the longest text in the batch."""
    length = max(1, int(mask.any(axis=tuple(range(mask.ndim - 1))).nonzero()[0].max() + 1) if mask.any() else 1)
    ids, mask, hidden = ids[..., :length], mask[..., :length], hidden[..., :length, :]
    return (torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(bool)),
            torch.from_numpy(np.ascontiguousarray(hidden)), torch.from_numpy(mask[..., 0].astype(bool)))


def _map(batch: dict, fn) -> dict:
    return {k: tuple(fn(t) for t in v) if isinstance(v, tuple) else fn(v) for k, v in batch.items()}


def to_device(batch: dict, device, non_blocking: bool = False) -> dict:
    """Every tensor of a batch on ``device``; float16 features become float32 there (after the
    copy, so half the bytes cross to a GPU)."""
    def move(t):
        t = t.to(device, non_blocking=non_blocking)
        return t.float() if t.dtype == torch.float16 else t

    return _map(batch, move)


def pin(batch: dict) -> dict:
    """The batch in page-locked memory, so that its copy to a GPU can overlap computation."""
    return _map(batch, lambda t: t.pin_memory())


def prefetch(batches, device, depth: int = 2):
    """``batches`` read ``depth`` ahead in a background thread (Zarr reads and decompression
    leave the training loop), pinned when the device is a GPU, and moved to ``device`` with
    non-blocking copies. Yields the batches on the device, in order; an error in the reader
    is raised here."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    ready: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    end = object()

    def reader():
        try:
            for batch in batches:
                item = pin(batch) if cuda else batch
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(end)
        except BaseException as exc:  # handed to the consumer
            ready.put(exc)

    thread = threading.Thread(target=reader, name="mf2-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield to_device(item, device, non_blocking=cuda)
    finally:
        stop.set()
        thread.join()


def videos_in_several_splits(store: FeatureStore) -> dict:
    """Video -> its splits, for every video whose valid rows are in more than one split (a cache
    from a manifest written before mf2 refused them, or by hand): validation or test would score
    people training saw."""
    g = store.group
    valid = g[schema.VALID][:]
    videos, splits = g[schema.VIDEO][:][valid], g[schema.SPLIT][:][valid]
    seen: dict = {}
    for v, sp in zip(videos.tolist(), splits.tolist()):
        if sp:
            seen.setdefault(str(v), set()).add(str(sp))
    return {v: sorted(s) for v, s in seen.items() if len(s) > 1}

