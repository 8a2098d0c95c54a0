"""``extract_features``: a manifest to a feature store (SPEC §4).

Per block of rows: decode -> face crop + 68 landmarks -> frozen vision backbone (global tokens
and spatial map) -> AU centres -> ``au_region_pool`` (native op) at both centres of each AU ->
frozen text encoder on every caption type and every AU's own sentence -> store. Bad images are
recorded (``meta/valid`` false, ``meta/error``) and counted; faces not found keep a fallback
crop and the canonical landmarks (``meta/face_found`` false) and are counted too.

* Decoding, face finding and landmarks run in ``workers`` processes (a ``DataLoader`` over the
  blocks), a block or two ahead of the backbones; the store is written by a thread of its own.
* Texts are encoded per *unit* of rows (the store's ``unit`` attribute: a multiple of the block
  size, up to 512 rows): every distinct text of a unit once, in batches of similar token
  length. A text's float values depend (in the last bits) on the batch it was encoded in, so a
  unit's texts are a function of that unit's rows alone: a resumed run re-encodes the unit it
  stopped in and writes the same bits as an uninterrupted one.
* Several processes (``torchrun --nproc_per_node N --no-python mf2 extract-features ...``, one
  node or several sharing a file system): the rows not yet written are cut at the store's
  alignment (unit and chunk edges) and dealt out contiguously; each process writes its own
  chunks and its own progress record (``FeatureStore.record``), the first process folds the
  records in at the start and finishes the store once every process has. Each process's
  blocks are the one-process run's blocks, so the store is the same, bit for bit.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from mf2._version import __version__
from mf2 import distributed
from mf2.data.labels import AUS, CAPTION_COLUMN, CAPTION_TYPES, TEXT_CAPS
from mf2.devices import resolve_device
from mf2.data.landmarks import au_centres, au_regions, au_window_factors, mirror_landmarks, ruler
from mf2.data.manifest import Manifest
from mf2.devices import resolve_precision
from mf2.features.backbones import load_text, load_vision
from mf2.features.face_align import FaceFinder, ImageError, align, apply, canonical_landmarks, resize_square
from mf2.features.pixels import read_image
from mf2.features.store import FeatureStore, merge_intervals
from mf2.io import exclusive, path_in_errors, refuse_overlap
from mf2.ops import au_region_pool
from mf2.features import schema

# decode and face run in the workers (worker-seconds); wait = the backbones waiting for them
STAGES = ("decode", "face", "wait", "vision", "pooling", "text", "write")
AUGMENTATIONS = ("flip",)
UNIT_ROWS = 512  # the most rows a unit holds (texts encoded together; the grain ranks split at)
TEXT_BATCH = 256  # texts per text-encoder call (sorted by token length)
# --augment auto stores the mirrored views when the manifest's training split is at most this many
# faces (not the default: it has not been shown to win yet; README, "Mirrored views").
FLIP_AUTO_MAX_TRAIN = 5000


@dataclass
class ExtractSettings:
    vision: str = "auto"
    vision_weights: str | None = None
    text: str = "auto"
    face: str = "aligned"  # 'detect' | 'aligned'
    landmarks: str = "auto"  # 'dlib' | 'manifest' | 'canonical' | 'auto' (manifest when every row has them, else dlib)
    image_size: int = 224
    batch_size: int = 32
    device: str = "auto"  # the first CUDA GPU, else the CPU
    au_samples: int = 3  # R: R x R samples around each of an AU's two centres
    au_window: float = 1.0  # side of the sampling grid, in rulers (inner-eye-corner distances)
    padding: str = "border"
    caps: dict = field(default_factory=lambda: dict(TEXT_CAPS))
    # 'auto': bf16 autocast of both backbones on GPUs that support it, fp32 elsewhere; 'bf16' also
    # on CPUs (~1.8x faster text on CPUs with AVX512-BF16)
    precision: str = "auto"
    allow_download: bool = False
    # the map AU regions are pooled from: last | stride16 | stride8; auto = stride16 for a CNN (its
    # last map is 7 x 7 at 224 px), the patch grid for a ViT
    au_map: str = "auto"
    # ('flip',): also store each image's mirrored view (training samples from both); () none; 'auto':
    # flip for training splits of at most FLIP_AUTO_MAX_TRAIN faces (``resolve_augment``)
    augment: tuple | str = ()
    # each AU's centres and window (``data.landmarks.AU_REGIONS``): 'table' = DATA.md's, one window for all
    au_regions: str = "table"
    workers: int | str = "auto"  # decoding + face processes; auto: see ``resolve_workers``
    unit: int | None = None  # a new store's unit (rows, a multiple of batch_size); None = ``unit_rows``


# what --augment may say, and the settings each word stands for
AUGMENT_CHOICES = {"none": (), "flip": ("flip",), "auto": "auto"}


def augment_word(augment) -> str:
    """The --augment word of an ``ExtractSettings.augment``."""
    return next(k for k, v in AUGMENT_CHOICES.items() if v == (augment if augment == "auto" else tuple(augment)))


def resolve_workers(workers, device: str) -> int:
    """Processes that decode images and find faces. 'auto': none on a CPU (the backbones use
    every core there), else up to 8 of this process's share of the cores (one core stays with
    the process that feeds the GPU)."""
    if workers != "auto":
        n = int(workers)
        if n < 0:
            raise ValueError(f"workers: expected 'auto' or a number >= 0, got {workers!r}")
        return n
    if torch.device(device).type == "cpu":
        return 0
    share = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(8, share - 1))


def unit_rows(n: int, batch_size: int) -> int:
    """A new store's unit: the block size times the largest power of two that keeps it within
    ``UNIT_ROWS`` and gives the store at least 16 units (so that small stores still split
    across processes)."""
    m = 1
    while batch_size * m * 2 <= min(UNIT_ROWS, n // 16):
        m *= 2
    return batch_size * m


class UnitTexts:
    """The encoded texts of one unit of rows: every distinct (text, token cap) once, sorted by
    token length and encoded in batches of ``TEXT_BATCH``; a text's states are kept at its own
    length and padded to the cap when a block asks for it."""

    def __init__(self, encoder, precision: str):
        self.encoder, self.precision = encoder, precision
        self.items: dict = {}
        self.encoded = self.reused = 0

    def load(self, wanted: dict) -> None:
        """wanted: cap -> texts (repeats allowed) of the unit; replaces what was held."""
        self.items = {}
        tokenizer = self.encoder.tokenizer
        for cap, texts in wanted.items():
            unique = list(dict.fromkeys(texts))
            self.reused += len(texts) - len(unique)
            self.encoded += len(unique)
            if not unique:
                continue
            lengths = [len(x) for x in tokenizer(unique, truncation=True, max_length=cap)["input_ids"]]
            order = sorted(range(len(unique)), key=lambda i: (lengths[i], unique[i]))
            for i in range(0, len(order), TEXT_BATCH):
                chunk = [unique[j] for j in order[i:i + TEXT_BATCH]]
                ids, mask, hidden = self.encoder.encode(chunk, cap, self.precision)
                for j, t in enumerate(chunk):
                    k = int(mask[j].sum())
                    self.items[(t, cap)] = (ids[j, :k], hidden[j, :k].astype(np.float16))

    def arrays(self, texts: list, cap: int, prefix: str) -> dict:
        """ids/mask/hidden [len(texts), cap, ...] for a block; None (no caption) gives zeros."""
        n = len(texts)
        ids = np.zeros((n, cap), np.int32)
        mask = np.zeros((n, cap), bool)
        hidden = np.zeros((n, cap, self.encoder.dim), np.float16)
        for i, t in enumerate(texts):
            if t:
                row_ids, row_hidden = self.items[(t, cap)]
                k = len(row_ids)
                ids[i, :k], mask[i, :k], hidden[i, :k] = row_ids, True, row_hidden
        return {f"{prefix}/ids": ids, f"{prefix}/mask": mask, f"{prefix}/hidden": hidden}


def _manifest_digest(manifest: Manifest) -> str:
    h = hashlib.sha256()
    for r in manifest.rows:
        h.update(repr(sorted(r.items())).encode())
    return h.hexdigest()[:16]


def resolve_landmarks(settings: ExtractSettings, manifest: Manifest) -> str:
    if settings.landmarks != "auto":
        return settings.landmarks
    return "manifest" if all("landmarks" in r for r in manifest.rows) else "dlib"


class Faces(torch.utils.data.Dataset):
    """Blocks of rows -> face crops [b, S, S, 3] uint8, landmarks in the crop [b, 68, 2], found /
    valid flags, errors, counts and the seconds spent decoding and finding faces. Runs in the
    ``DataLoader``'s worker processes (each loads dlib's models once, on first use)."""

    def __init__(self, manifest: Manifest, blocks: list, face: str, landmark_source: str, size: int):
        self.manifest, self.blocks, self.face, self.landmark_source, self.size = \
            manifest, blocks, face, landmark_source, size
        self.finder = None

    def __len__(self):
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        start, stop = self.blocks[i]
        if self.finder is None and (self.face == "detect" or self.landmark_source == "dlib"):
            self.finder = FaceFinder()
        size = self.size
        canon = canonical_landmarks() * size
        b = stop - start
        crops = np.zeros((b, size, size, 3), np.uint8)
        lms = np.repeat(canon[None], b, 0).astype(np.float64)
        found, valid, errors = np.zeros(b, bool), np.ones(b, bool), [""] * b
        counts, seconds = Counter(), Counter()
        for i, row in enumerate(self.manifest.rows[start:stop]):
            t0 = time.perf_counter()
            try:
                image, frames = read_image(self.manifest.image_path(row))
            except ImageError as exc:
                valid[i], errors[i] = False, str(exc)
                counts[f"skipped: {str(exc).split(' (')[0]}"] += 1
                seconds["decode"] += time.perf_counter() - t0
                continue
            if frames > 1:  # a data set's image is one picture: said
                counts["note: animated images (their first frame used)"] += 1
            t1 = time.perf_counter()
            seconds["decode"] += t1 - t0
            crops[i], lms[i], found[i] = _face(image, row, self.face, self.landmark_source, self.finder, size, canon,
                                               counts)
            seconds["face"] += time.perf_counter() - t1
        return {"start": start, "crops": crops, "landmarks": lms, "found": found, "valid": valid,
                "errors": np.array(errors, dtype=object), "counts": dict(counts), "seconds": dict(seconds)}


def plan(n: int, done: list, alignment: int, world: int) -> list[list[list[int]]]:
    """The rows not in ``done`` (merged [start, stop) intervals), cut at multiples of
    ``alignment`` and dealt out contiguously to ``world`` processes by row count: per process,
    its intervals."""
    pieces, cursor = [], 0
    for a, b in [*done, [n, n]]:
        while cursor < a:
            hi = min(a, (cursor // alignment + 1) * alignment)
            pieces.append((cursor, hi))
            cursor = hi
        cursor = max(cursor, b)
    total = sum(hi - lo for lo, hi in pieces)
    out, seen = [[] for _ in range(world)], 0
    for lo, hi in pieces:
        out[min(world - 1, seen * world // total)].append([lo, hi])
        seen += hi - lo
    return [merge_intervals(x) for x in out]


class Writer:
    """Writes blocks to the store in a thread of its own (compression and disk off the loop that
    feeds the backbones), in order; then moves this process's progress (``count`` or its
    record). An error there is raised in the loop at its next block or at ``close``."""

    def __init__(self, store: FeatureStore, progress):
        self.store, self.progress, self.error = store, progress, None
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, name="mf2-store-writer", daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            try:
                t0 = time.perf_counter()
                start, arrays, counts = item
                self.store.write_rows(start, arrays)
                self.progress(start, len(arrays[schema.VALID]), counts)
                self.seconds += time.perf_counter() - t0
            except BaseException as exc:  # handed to the loop
                self.error = exc

    def put(self, start: int, arrays: dict, counts: Counter) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((start, arrays, counts))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


@dataclass
class _Job:
    """What every step of one extraction reads: its settings, inputs and backbones."""

    s: ExtractSettings
    manifest: Manifest
    vision: object
    text: object
    au_map: str
    precision: str
    workers: int
    landmark_source: str
    types: list
    has_sentences: bool


def resolve_augment(augment, manifest: Manifest, out=None, overwrite: bool = False) -> tuple[tuple, str]:
    """(the augmentations to store, why): 'auto' is what a store already at ``out`` holds (it
    resumes as it began), else flip for a training split of at most ``FLIP_AUTO_MAX_TRAIN`` faces."""
    if augment != "auto":
        return ((augment,) if isinstance(augment, str) else tuple(sorted(augment))), "asked"
    if out is not None and not overwrite:
        try:
            return tuple(FeatureStore.open(out).signature.get("augment", [])), "auto: as the store at --out began"
        except ValueError:  # no store there yet
            pass
    n_train = sum(r.get("split") == "train" for r in manifest.rows)
    if n_train <= FLIP_AUTO_MAX_TRAIN:
        return ("flip",), f"auto: {n_train:,} training faces, at most {FLIP_AUTO_MAX_TRAIN:,}"
    return (), f"auto: {n_train:,} training faces, more than {FLIP_AUTO_MAX_TRAIN:,}"


def extract_features(manifest: Manifest, out, settings: ExtractSettings | None = None, overwrite: bool = False,
                     progress=None, log=print) -> dict:
    s = settings or ExtractSettings()
    s = replace(s, device=str(resolve_device(s.device)))  # before anything is written
    augment, why = resolve_augment(s.augment, manifest, out, overwrite)
    s = replace(s, augment=augment)
    rank, world = distributed.init_from_env(s.device, backend="gloo")  # the processes only wait for each other
    device = str(distributed.local_device(s.device, share=True))
    precision = resolve_precision(s.precision, device)
    if s.face not in ("detect", "aligned"):
        raise ValueError(f"face: expected 'detect' or 'aligned', got {s.face!r}")
    workers = resolve_workers(s.workers, device)
    if s.unit is not None and (s.unit < 1 or s.unit % s.batch_size):
        raise ValueError(f"unit: expected a multiple of batch_size {s.batch_size}, got {s.unit!r}")
    refuse_overlap({"--manifest": manifest.path, "images": [manifest.image_path(r) for r in manifest.rows],
                    "--vision-weights": s.vision_weights}, {"--out": out})
    landmark_source = resolve_landmarks(s, manifest)
    if landmark_source not in ("dlib", "manifest", "canonical"):
        raise ValueError(f"landmarks: expected dlib, manifest, canonical or auto, got {s.landmarks!r}")
    if s.face == "detect" and landmark_source != "dlib":
        raise ValueError("--face detect finds landmarks with dlib; use --landmarks dlib (or auto)")
    unknown = set(s.augment) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"augment: expected {', '.join(AUGMENTATIONS)}, got {', '.join(sorted(unknown))}")
    au_regions(s.au_regions)  # a known table, before any work
    vision = load_vision(s.vision, s.vision_weights, s.allow_download, device)
    text = load_text(s.text, s.allow_download, device)
    if rank == 0:
        log(f"vision: {vision.name} ({vision.source}); text: {text.name} ({text.source}); {precision}; "
            f"augment: {', '.join(augment) or 'none'} ({why})" + (f"; {world} processes" if world > 1 else ""))
    rows = manifest.rows
    job = _Job(s, manifest, vision, text, vision.resolve_au_map(s.au_map), precision, workers, landmark_source,
               [t for t in CAPTION_TYPES if any(r.get(CAPTION_COLUMN[t]) for r in rows)],
               any(r.get("au_sentences") for r in rows))
    n = len(rows)
    if rank == 0 and not (job.types or job.has_sentences):
        log(f"warning: {manifest.path or 'the manifest'} holds no captions ({', '.join(CAPTION_COLUMN.values())}, "
            "au_sentences): the store will hold no text, and MF² pretraining aligns faces with their captions. "
            "mf2 caption --manifest M writes them (into M's .captioned.jsonl: extract from that)")
    signature, meta, layout_spec = _layout(job, device)
    # a second extract-features into it stops at once (each process of a torchrun holds a lock of
    # its own); a full disk names the store
    with exclusive(out if rank == 0 else Path(f"{out}.rank{rank}"), "this feature store"), path_in_errors(out):
        store, done = _open(out, signature, meta, layout_spec, overwrite, s.unit or unit_rows(n, s.batch_size), rank,
                            world)
        if store.complete:
            if rank != 0:
                return {}
            log(f"{out}: already complete ({n} rows)")
            # what the store holds, not what the run that wrote it did (or, from an older version, omitted)
            return {**dict(store.group.attrs["summary"]), "extracted_this_run": 0, "resumed_from": n,
                    "images_per_second": None, "captions": _captions(job)}
        already = sum(b - a for a, b in done)
        if rank == 0 and already:
            log(f"{out}: resuming at row {store.count} of {n}" if done == [[0, store.count]] else
                f"{out}: resuming with {already} of {n} rows written")
        t_run = time.perf_counter()
        alignment = store.alignment(layout_spec)
        if rank == 0 and world > 1 and store.unit is None and alignment >= n:
            log(f"{out}: its chunks (a store begun before units) let one process write it; the others wait")
        mine = plan(n, done, alignment, world)[rank]
        stats = _extract(job, store, mine, rank, progress if rank == 0 else None)
        if world > 1:
            store.record(rank, stats.pop("intervals"), stats.pop("counts"), finished=True, stats=stats)
        if rank != 0:
            return {}
        records = _await(store, world) if world > 1 else {0: {"stats": stats}}
        store.consolidate(world)
        summary = _summary(job, store, [r["stats"] for r in records.values() if "stats" in r], already, world,
                           time.perf_counter() - t_run)
        store.finish(summary)
        return summary


def _layout(job: _Job, device: str) -> tuple[dict, dict, dict]:
    """The store's signature, the arrays written at its creation, and its per-row arrays
    (name -> (per-row shape, dtype)), from the backbones' output shapes."""
    s, rows = job.s, job.manifest.rows
    size = s.image_size
    with torch.no_grad():  # probe the backbone's token and map shapes
        tokens, fmap, layout = job.vision(torch.zeros(1, 3, size, size, device=device), au_map=job.au_map)
    T, C = tokens.shape[1:]
    C_au = fmap.shape[1] if layout == "BCHW" else fmap.shape[-1]
    RR2 = 2 * s.au_samples ** 2
    vision, text = job.vision, job.text
    signature = {
        "mf2": __version__, "manifest": {"rows": len(rows), "digest": _manifest_digest(job.manifest)},
        "vision": {"name": vision.name, "weights": vision.weights_id, "image_size": size},
        "text": {"name": text.name, "weights": text.weights_id, "types": job.types, "au_sentences": job.has_sentences,
                 "caps": {k: s.caps[k] for k in [*job.types, "au_sentences"]}},
        "face": s.face, "landmarks": job.landmark_source, "au_set": list(AUS), "precision": job.precision,
        "pooling": {"R": s.au_samples, "window_rulers": s.au_window, "padding": s.padding, "tokens_per_au": RR2,
                    "au_map": job.au_map, "map_size": list(fmap.shape[2:] if layout == "BCHW" else fmap.shape[1:3]),
                    "channels": C_au},
        "augment": sorted(s.augment),
    }
    if s.au_regions != "table":  # (stores without the field were pooled with DATA.md's table)
        signature["pooling"]["regions"] = s.au_regions
    meta = {schema.IDS: [r["id"] for r in rows], schema.VIDEO: [r["video"] for r in rows],
            schema.SPLIT: [r["split"] or "" for r in rows], schema.IMAGE: [r["image"] for r in rows],
            schema.EMOTION: np.array([r["emotion"] for r in rows], np.int8),
            schema.AUS: np.array([[r[a] for a in AUS] for r in rows], np.int8)}
    layout_spec = {schema.FACE_FOUND: ((), bool), schema.VALID: ((), bool), schema.ERROR: ((), str),
                   schema.TOKENS: ((T, C), np.float16), schema.AU_TOKENS: ((len(AUS), RR2, C_au), np.float16),
                   schema.LANDMARKS: ((68, 2), np.float32)}
    if "flip" in s.augment:
        layout_spec.update({schema.flipped(schema.TOKENS): ((T, C), np.float16),
                            schema.flipped(schema.AU_TOKENS): ((len(AUS), RR2, C_au), np.float16)})
    for t in job.types:
        L = s.caps[t]
        layout_spec.update({schema.text(t, "ids"): ((L,), np.int32), schema.text(t, "mask"): ((L,), bool),
                            schema.text(t, "hidden"): ((L, text.dim), np.float16)})
    if job.has_sentences:
        L = s.caps["au_sentences"]
        layout_spec.update({schema.text(schema.AU_SENTENCES, "ids"): ((len(AUS), L), np.int32),
                            schema.text(schema.AU_SENTENCES, "mask"): ((len(AUS), L), bool),
                            schema.text(schema.AU_SENTENCES, "hidden"): ((len(AUS), L, text.dim), np.float16)})
    return signature, meta, layout_spec


def _extract(job: _Job, store: FeatureStore, mine: list, rank: int, progress=None) -> dict:
    """This process's rows ``mine`` (intervals) into the store, block by block: faces from the
    workers, the backbones here, the writes in the writer thread, which then moves this
    process's progress. Returns its statistics, intervals and counts."""
    s, rows = job.s, job.manifest.rows
    blocks = [(i, min(b, i + s.batch_size)) for a, b in mine for i in range(a, b, s.batch_size)]
    unit = store.unit or s.batch_size  # stores from before units: texts per block, as they were written
    texts = UnitTexts(job.text, job.precision)
    timing, recorded = Counter(), Counter()
    intervals = [[a, b, 0] for a, b in mine]

    def advance(start, b, block_counts):
        for iv in intervals:
            if iv[0] <= start < iv[1]:
                iv[2] = start + b - iv[0]
        if rank == 0 and start == store.count:  # the prefix a reader trusts, moved as by one process
            partial = Counter(dict(store.group.attrs.get("partial_counts", {})))
            partial.update(block_counts)
            store.group.attrs.update({"count": start + b, "partial_counts": dict(partial)})
        else:
            recorded.update(block_counts)
            store.record(rank, intervals, recorded)

    loader = torch.utils.data.DataLoader(Faces(job.manifest, blocks, s.face, job.landmark_source, s.image_size),
                                         batch_size=None, collate_fn=_as_is, num_workers=job.workers,
                                         prefetch_factor=2 if job.workers else None)
    writer = Writer(store, advance)
    t_run, current_unit = time.perf_counter(), None
    try:
        it = iter(loader)
        for _ in blocks:
            t0 = time.perf_counter()
            item = next(it)
            if job.workers:  # (without workers, the block's decode and face seconds are this wait)
                timing["wait"] += time.perf_counter() - t0
            timing.update(item["seconds"])
            start = item["start"]
            t1 = time.perf_counter()
            if start // unit != current_unit:  # the unit's texts, encoded together
                current_unit = start // unit
                texts.load(_unit_texts(rows[current_unit * unit:(current_unit + 1) * unit], job.types,
                                       job.has_sentences, s.caps))
            timing["text"] += time.perf_counter() - t1
            arrays = _block_arrays(job, item, texts, timing)
            t2 = time.perf_counter()
            writer.put(start, arrays, Counter(item["counts"]))
            timing["write_wait"] += time.perf_counter() - t2
            if progress:
                progress(len(item["valid"]))
    finally:
        writer.close()
    timing["write"] += writer.seconds
    return {"seconds": time.perf_counter() - t_run, "rows": sum(b - a for a, b in mine), "timing": dict(timing),
            "encoded": texts.encoded, "reused": texts.reused, "intervals": intervals, "counts": dict(recorded)}


def _block_arrays(job: _Job, item: dict, texts: UnitTexts, timing: Counter) -> dict:
    """Every per-row array of one block: the faces' visual features (and their mirrored views')
    and the block's texts."""
    s = job.s
    valid, crops, lms = item["valid"], item["crops"], item["landmarks"]
    tokens_np, au_np = visual_features(job.vision, crops, lms, s.au_samples, s.au_window, s.padding, job.precision,
                                       timing, job.au_map, s.au_regions)
    tokens_np[~valid], au_np[~valid] = 0, 0  # a skipped image holds no features
    arrays = {schema.FACE_FOUND: item["found"], schema.VALID: valid, schema.ERROR: item["errors"],
              schema.TOKENS: tokens_np, schema.AU_TOKENS: au_np, schema.LANDMARKS: lms.astype(np.float32)}
    if "flip" in s.augment:  # the mirrored face: same labels (the 12 AUs are bilateral)
        flip_tokens, flip_au = visual_features(job.vision, crops[:, :, ::-1], mirror_landmarks(lms, s.image_size),
                                               s.au_samples, s.au_window, s.padding, job.precision, timing, job.au_map,
                                               s.au_regions)
        flip_tokens[~valid], flip_au[~valid] = 0, 0
        arrays.update({schema.flipped(schema.TOKENS): flip_tokens, schema.flipped(schema.AU_TOKENS): flip_au})
    t0 = time.perf_counter()
    b = len(valid)
    block = job.manifest.rows[item["start"]:item["start"] + b]
    for t in job.types:
        arrays.update(texts.arrays([r.get(CAPTION_COLUMN[t]) for r in block], s.caps[t], schema.text(t)))
    if job.has_sentences:
        flat = [sent for r in block for sent in (r.get("au_sentences") or [None] * len(AUS))]
        enc = texts.arrays(flat, s.caps["au_sentences"], schema.text(schema.AU_SENTENCES))
        arrays.update({k: v.reshape(b, len(AUS), *v.shape[1:]) for k, v in enc.items()})
    timing["text"] += time.perf_counter() - t0
    return arrays


def _summary(job: _Job, store: FeatureStore, stats: list, already: int, world: int, seconds: float) -> dict:
    """The run's summary (``extract-features`` prints it; the store keeps it), over every
    process's statistics."""
    timing = sum((Counter(x["timing"]) for x in stats), Counter())
    done_now = sum(x["rows"] for x in stats)
    counts = store.group.attrs["partial_counts"]
    valid = store[schema.VALID][:]
    return {
        "rows": len(store), "extracted_this_run": done_now, "resumed_from": already, "processes": world,
        "faces_not_found": int((~store[schema.FACE_FOUND][:] & valid).sum()),
        "skipped": {k.split(": ", 1)[1]: v for k, v in counts.items() if k.startswith("skipped: ")},
        "landmarks": {k.split(": ", 1)[1]: v for k, v in counts.items() if k.startswith("landmarks: ")},
        "notes": {k.split(": ", 1)[1]: v for k, v in counts.items() if k.startswith("note: ")},
        "seconds": round(seconds, 3), "images_per_second": round(done_now / seconds, 2) if seconds else None,
        "stage_seconds": {k: round(timing[k], 3) for k in STAGES},
        **stage_shares(timing, job.workers),
        "text_cache": {"encoded": sum(x["encoded"] for x in stats), "reused": sum(x["reused"] for x in stats)},
        "captions": _captions(job),
        "settings": {**asdict(job.s), "landmarks": job.landmark_source, "precision": job.precision,
                     "workers": job.workers},
        "backbones": {"vision": f"{job.vision.name} ({job.vision.source})",
                      "text": f"{job.text.name} ({job.text.source})"},
    }


def _captions(job: _Job) -> dict:
    """Which captions the store holds, and for how many rows (``extract-features`` says so)."""
    rows = job.manifest.rows
    counts = {t: sum(1 for r in rows if r.get(CAPTION_COLUMN[t])) for t in job.types}
    if job.has_sentences:
        counts["au_sentences"] = sum(1 for r in rows if r.get("au_sentences"))
    return {"types": list(job.types), "au_sentences": job.has_sentences, "rows": counts}


def stage_shares(timing: Counter, workers: int) -> dict:
    """Where the loop that feeds the backbones spent its time, as shares: its stages (decode and
    face run in it without workers; with workers, ``wait`` is its waiting for them), ``write``
    its waiting for the writer thread; ``writer_busy`` is the writer thread's own time over the
    loop's (near 1: the disk bounds the run). ``bound_by`` names the stage that bounds the run
    (for ``wait``, the workers' slower stage)."""
    loop = ("wait", "vision", "pooling", "text", "write_wait") if workers else \
        ("decode", "face", "vision", "pooling", "text", "write_wait")
    total = sum(timing[k] for k in loop) or 1.0
    shares = {("write" if k == "write_wait" else k): round(timing[k] / total, 3) for k in loop}
    busy = round(timing["write"] / total, 3)
    bound = max(shares, key=shares.get)
    if bound == "wait":
        bound = max(("decode", "face"), key=lambda k: timing[k])
    if busy > 0.9 or bound == "write":
        bound = "write"
    return {"stage_shares": shares, "writer_busy": busy, "bound_by": bound}


def _as_is(item):
    """The ``DataLoader``'s conversion: none (the blocks stay numpy arrays)."""
    return item


def _unit_texts(rows: list, types: list, has_sentences: bool, caps: dict) -> dict:
    """cap -> every text of these rows that the store holds at that cap."""
    wanted: dict = {}
    for t in types:
        wanted.setdefault(caps[t], []).extend(r[CAPTION_COLUMN[t]] for r in rows if r.get(CAPTION_COLUMN[t]))
    if has_sentences:
        wanted.setdefault(caps["au_sentences"], []).extend(x for r in rows for x in (r.get("au_sentences") or []) if x)
    return wanted


def _open(out, signature, meta, layout_spec, overwrite, unit, rank, world):
    """The store, opened by every process once the first has created or resumed it and folded
    the earlier runs' records in; and the rows written so far. An error there is every
    process's error."""
    error, done = None, None
    if rank == 0:
        try:
            store = FeatureStore.create_or_resume(out, signature, meta, layout_spec, overwrite, unit)
            done = store.done() if store.complete else store.consolidate(world)
        except Exception as exc:  # every process raises it (the others would wait for ever)
            if world == 1:
                raise
            error = exc
    if world > 1:
        shared = [error, done]
        torch.distributed.broadcast_object_list(shared, src=0)
        error, done = shared
    if error is not None:
        raise error
    if rank != 0:
        store = FeatureStore.open(out, writable=True)
    return store, done


def _await(store: FeatureStore, world: int, poll: float = 0.2) -> dict:
    """Every process's record once all of them say they are finished (a file the others write:
    no collective that a slower process would time out)."""
    while True:
        records = store.records()
        if all(records.get(r, {}).get("finished") for r in range(world)):
            return records
        time.sleep(poll)


def visual_features(vision, crops: np.ndarray, landmarks: np.ndarray, au_samples: int, au_window: float,
                    padding: str, precision: str = "fp32", timing: Counter | None = None, au_map: str = "last",
                    regions: str = "table"):
    """The image side of a cache row, in memory (extraction and ``mf2 predict`` share it): face
    crops [b, S, S, 3] uint8 and their landmarks [b, 68, 2] (crop pixels) -> global tokens
    [b, T, C] and AU tokens [b, 12, 2R², C_au] pooled from the ``au_map`` map at the centres and
    windows of the region table ``regions``, float16 as stored."""
    b, size = crops.shape[0], crops.shape[1]
    t0 = time.perf_counter()
    device = next(vision.model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float().div_(255)
    tokens, fmap, layout = vision(x, precision, au_map)
    t1 = time.perf_counter()
    centres = au_centres(landmarks, regions).reshape(b, 2 * len(AUS), 2) / size  # normalised, AU-major
    window = au_window * ruler(landmarks)[:, None] * np.repeat(au_window_factors(regions), 2)[None] / size  # [b, 24]
    pooled = au_region_pool(fmap, torch.as_tensor(centres, dtype=fmap.dtype, device=fmap.device),
                            torch.as_tensor(window, dtype=fmap.dtype, device=fmap.device), au_samples, padding,
                            layout=layout)
    au_tokens = pooled.reshape(b, len(AUS), 2 * au_samples ** 2, pooled.shape[-1])
    # float16 (as stored) before the copy off the device: half the bytes, the same rounding
    tokens_np, au_np = tokens.half().cpu().numpy(), au_tokens.half().cpu().numpy()
    if timing is not None:
        timing["vision"] += t1 - t0
        timing["pooling"] += time.perf_counter() - t1
    return tokens_np, au_np


def _face(image, row, face_mode, landmark_source, finder, size, canon, counts):
    """(crop, landmarks in the crop, face found) for one decoded image."""
    if face_mode == "detect":
        faces = finder.detect(image)
        if faces:
            crop, lm, _ = align(image, faces[0].landmarks, size)
            return crop, lm, True
        counts["landmarks: canonical (no face found)"] += 1
        crop, _ = resize_square(image, size)
        return crop, canon, False
    crop, m = resize_square(image, size)
    if landmark_source == "manifest":
        if "landmarks" in row:
            counts["landmarks: manifest"] += 1
            return crop, apply(m, np.asarray(row["landmarks"], dtype=np.float64)), True
        counts["landmarks: canonical (none in manifest)"] += 1
        return crop, canon, True
    if landmark_source == "dlib":
        counts["landmarks: dlib"] += 1
        return crop, finder.landmarks(crop, (0, 0, size - 1, size - 1)), True
    counts["landmarks: canonical"] += 1
    return crop, canon, True
