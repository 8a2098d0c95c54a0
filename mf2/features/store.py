"""The feature cache on disk: a Zarr group with a fixed layout (SPEC §4).

    meta/{ids, video, split, image}            [N] str
    meta/{emotion [N] i8, aus [N,12] i8, face_found [N] bool, valid [N] bool, error [N] str}
    vision/{tokens [N,T,C] f16, au_tokens [N,12,2R²,C] f16, landmarks [N,68,2] f32}
    text/<type>/{ids [N,L] i32, mask [N,L] bool, hidden [N,L,D] f16}   type in au, emotion, key_au
    text/au_sentences/{ids [N,12,L] i32, mask [N,12,L] bool, hidden [N,12,L,D] f16}

Arrays are chunked along the sample axis only (about 2 MB a chunk) with a fast codec. Rows
are written in blocks; after each block the ``count`` attribute (the index a reader trusts)
moves forward, so a killed run resumes at the last complete block. The ``unit`` attribute (rows;
a multiple of the block size) is the grain several processes split a store at
(``torchrun ... mf2 extract-features``): every row-wise array's chunk holds a divisor of it, so
two processes never write one chunk. Each process records what it has written beyond ``count``
in a group of its own (``progress/<rank>``, its attributes: no two processes write one file; the
metadata file is replaced atomically, so a kill leaves the last whole record); ``consolidate``
folds those records into the root attributes (``done``, ``partial_counts``), and a complete store
has none left. The ``signature``
attribute is written at creation and ``complete`` when the last block is in: a store whose
signature differs from the run's is refused, naming the field. Every chunk carries a CRC32C that is
checked when it is read (a changed byte is an error naming the array and rows). Every chunk is written, empty ones
included (``all_chunks``), so that a reader can tell a chunk lost on disk from one of zeros: a
complete store with a missing chunk is an error naming the array and its rows, never zeros.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from mf2.features import schema

CHUNK_BYTES = 2 << 20
# lz4 (fast; float16 features barely compress), then a CRC32C of every stored chunk: a chunk
# whose bytes changed on disk (a flipped bit, a bad copy) is an error when read, never other
# numbers (``read_rows`` names the array and its rows). Stores written before it read as before.
CODECS = (BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"), Crc32cCodec())


def chunk_rows(per_sample: int, n: int, unit: int | None = None) -> int:
    """Rows a chunk holds for samples of ``per_sample`` bytes: about ``CHUNK_BYTES`` a chunk;
    with ``unit``, the largest divisor of it that fits (so that chunk edges fall on unit edges)."""
    fit = max(1, CHUNK_BYTES // max(per_sample, 1))
    if unit is None:
        return max(1, min(n, fit))
    return max(d for d in range(1, unit + 1) if unit % d == 0 and d <= fit)


def merge_intervals(intervals) -> list[list[int]]:
    """[start, stop) intervals, sorted and merged where they touch or overlap (empty ones dropped)."""
    out = []
    for a, b in sorted((int(a), int(b)) for a, b in intervals if b > a):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _write_group(folder: Path, attributes: dict) -> None:
    """A Zarr group's metadata with these attributes, written whole or not at all (a temporary
    file renamed over the last one)."""
    folder.mkdir(exist_ok=True)
    tmp = folder / f".zarr.json.{os.getpid()}"
    tmp.write_text(json.dumps({"attributes": attributes, "zarr_format": 3, "node_type": "group"}))
    os.replace(tmp, folder / "zarr.json")


class StoreError(ValueError):
    """A store that cannot be used for this run, as one line."""


def _first_difference(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            diff = _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            if diff:
                return diff
        return None
    if a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)):
        return path, a, b
    return None


def _array_names(group, prefix: str) -> list[str]:
    """Every array under a group, as paths from the store's root."""
    out = [f"{prefix}/{name}" for name in group.array_keys()]
    for name in group.group_keys():
        out += _array_names(group[name], f"{prefix}/{name}")
    return out


def store_path(group: zarr.Group) -> Path:
    return Path(str(group.store).removeprefix("file://"))


def lost_chunk(group: zarr.Group, names) -> tuple[str, int, int] | None:
    """The first array of ``names`` (paths in ``group``, chunked along rows only, every chunk
    written) with a chunk missing on disk, as (name, first row, last row); None if all are there."""
    root = store_path(group)
    for name in names:
        arr = group[name]
        if arr.nchunks_initialized == arr.nchunks:
            continue
        rows = arr.chunks[0]
        for i in range(-(-arr.shape[0] // rows)):
            key = arr.metadata.encode_chunk_key((i,) + (0,) * (arr.ndim - 1))
            if not (root / arr.path / key).exists():
                return name, i * rows, min(arr.shape[0], (i + 1) * rows) - 1
    return None


def read_rows(group: zarr.Group, name: str, start: int, stop: int,
              remedy: str = "extract again with --overwrite") -> np.ndarray:
    """Rows [start, stop) of ``group[name]``; an undecodable chunk is a StoreError naming the
    array and the rows, not a codec's traceback."""
    try:
        return group[name][start:stop]
    except Exception as exc:  # numcodecs / zarr decoding errors have no common base class
        first = str(exc).splitlines()[0] if str(exc) else ""
        why = "fails its checksum (its bytes changed on disk)" if "checksum" in first.lower() else \
            f"cannot be decoded ({type(exc).__name__}: {first})"
        raise StoreError(f"{store_path(group)}: array {name}, rows {start}-{stop - 1}, {why}; the store is damaged: "
                         f"{remedy}") from None


class FeatureStore:
    def __init__(self, group: zarr.Group):
        self.group = group

    @property
    def count(self) -> int:
        return int(self.group.attrs.get("count", 0))

    @property
    def complete(self) -> bool:
        return bool(self.group.attrs.get("complete", False))

    @property
    def signature(self) -> dict:
        return dict(self.group.attrs["signature"])

    @property
    def unit(self) -> int | None:
        """The store's unit (rows), or None for a store written before units."""
        unit = self.group.attrs.get("unit")
        return int(unit) if unit else None

    def alignment(self, names) -> int:
        """The least number of rows whose multiples are chunk edges of every array of ``names`` and
        unit edges: where the rows two processes write may meet."""
        return math.lcm(self.unit or 1, *(self.group[name].chunks[0] for name in names))

    def __len__(self):
        return self.group[schema.IDS].shape[0]

    def __getitem__(self, name):
        return self.group[name]

    def verify(self, names=None) -> None:
        """A complete store holds every chunk of every array (``names``: of these): a missing one is
        a StoreError naming the array and its rows. Stores written before every chunk was kept
        (no ``all_chunks`` attribute) store no all-zero chunks, so they cannot be checked."""
        if not (self.complete and self.group.attrs.get("all_chunks")):
            return
        names = names or [n for kind in ("meta", "vision", "text") if kind in self.group
                          for n in _array_names(self.group[kind], kind)]
        lost = lost_chunk(self.group, names)
        if lost:
            name, first, last = lost
            raise StoreError(f"{store_path(self.group)}: array {name} has lost rows {first}-{last} (a missing chunk); "
                             "the store is damaged: extract again with --overwrite")

    def read(self, name: str, start: int, stop: int):
        """Rows [start, stop) of array ``name``; an undecodable chunk is a StoreError naming the
        array and the rows, not a codec's traceback."""
        return read_rows(self.group, name, start, stop)

    @classmethod
    def open(cls, path, writable: bool = False) -> "FeatureStore":
        path = Path(path)
        if not path.exists():
            raise StoreError(f"{path}: no feature store here (run mf2 extract-features first)")
        if not path.is_dir():
            raise StoreError(f"{path}: not a feature store (a file, not a Zarr folder)")
        try:
            group = zarr.open_group(str(path), mode="r+" if writable else "r")
        except Exception as exc:  # not a zarr group
            raise StoreError(f"{path}: not a feature store ({type(exc).__name__})") from None
        if "signature" not in group.attrs:
            raise StoreError(f"{path}: not an mf2 feature store (no signature)")
        return cls(group)

    @classmethod
    def create_or_resume(cls, path, signature: dict, meta: dict, layout: dict, overwrite: bool = False,
                         unit: int | None = None) -> "FeatureStore":
        """Open ``path`` to continue the run described by ``signature``, or create it.

        meta: name -> full array (written at creation); layout: name -> (per-sample shape, dtype);
        unit: rows (see the module's notes; chunks then hold divisors of it)."""
        path = Path(path)
        if path.exists() and overwrite:
            cls.open(path)  # only a feature store mf2 wrote is ever deleted
            shutil.rmtree(path)
        if path.exists():
            store = cls.open(path)
            diff = _first_difference(store.signature, signature)
            if diff:
                field, old, new = diff
                raise StoreError(f"{path} was written with a different {field} (stored {old!r}, now {new!r}); "
                                 "use --overwrite to start again or another --out")
            return cls(zarr.open_group(str(path), mode="r+"))
        group = zarr.open_group(str(path), mode="w")
        n = len(next(iter(meta.values())))
        for name, values in meta.items():
            values = np.asarray(values)
            arr = group.create_array(name, shape=values.shape, dtype=str if values.dtype.kind in "UO" else values.dtype,
                                     chunks=(max(1, min(n, 65536)),) + values.shape[1:], compressors=CODECS,
                                     config={"write_empty_chunks": True})
            arr[:] = values
        for name, (shape, dtype) in layout.items():
            per_sample = int(np.prod(shape)) * np.dtype(dtype).itemsize
            rows = chunk_rows(per_sample, n, unit)
            group.create_array(name, shape=(n, *shape), dtype=dtype, chunks=(rows, *shape), compressors=CODECS,
                               fill_value=0, config={"write_empty_chunks": True})
        group.attrs.update({"signature": signature, "count": 0, "complete": False, "all_chunks": True,
                            **({"unit": unit} if unit else {})})
        return cls(group)

    def write_rows(self, start: int, arrays: dict) -> int:
        """Write rows [start, start + b) of every array (no attribute moves); returns b."""
        b = 0
        for name, values in arrays.items():
            b = len(values)
            self.group[name][start:start + b] = values
        return b

    def write_block(self, start: int, arrays: dict) -> None:
        """Write rows [start, start + b) of every array, then move ``count`` (last)."""
        if start != self.count:
            raise StoreError(f"block starts at {start} but the store holds {self.count} rows")
        self.group.attrs["count"] = start + self.write_rows(start, arrays)

    # -- several processes ------------------------------------------------------------------
    @property
    def _progress(self) -> Path:
        return store_path(self.group) / "progress"

    def records(self) -> dict[int, dict]:
        """Every process's progress record (rank -> its fields) left in the store."""
        out = {}
        for path in sorted(self._progress.glob("*/zarr.json")) if self._progress.is_dir() else []:
            if path.parent.name.isdigit():
                out[int(path.parent.name)] = json.loads(path.read_text())["attributes"]
        return out

    def done(self) -> list[list[int]]:
        """The rows written so far, as merged [start, stop) intervals: ``count``'s prefix, the
        folded ``done`` attribute and what each process's record says it wrote."""
        intervals = [[0, self.count], *self.group.attrs.get("done", [])]
        for record in self.records().values():
            intervals += [[a, a + written] for a, _, written in record.get("intervals", [])]
        return merge_intervals(intervals)

    def consolidate(self, world: int) -> list[list[int]]:
        """Fold every process's record into the root attributes and start ``world`` empty
        ones (one process only, while the others wait); returns the rows done so far. A kill
        in between loses nothing: the records are emptied after the root holds what they said."""
        done = self.done()
        records = self.records()
        counts = Counter(dict(self.group.attrs.get("partial_counts", {})))
        for record in records.values():
            counts.update(record.get("counts", {}))
        count = done[0][1] if done and done[0][0] == 0 else 0
        self.group.attrs.update({"count": count, "done": [iv for iv in done if iv[0] > 0],
                                 "partial_counts": dict(counts)})
        for rank in set(records) - set(range(world)):  # ranks of an earlier, wider run
            shutil.rmtree(self._progress / str(rank))
        for rank in range(world):
            self.record(rank, [], {})
        return done

    def record(self, rank: int, intervals: list, counts: dict, finished: bool = False, **extra) -> None:
        """Process ``rank``'s progress: intervals [start, stop, rows written from start], the
        counts of what its written rows hold, and whether it is done (written to a temporary
        file, then renamed over the last record)."""
        if not (self._progress / "zarr.json").is_file():
            _write_group(self._progress, {})
        _write_group(self._progress / str(rank), {"intervals": intervals, "counts": dict(counts),
                                                  "finished": finished, **extra})

    def finish(self, summary: dict) -> None:
        self.group.attrs.update({"summary": summary, "complete": True, "count": len(self), "done": []})
        shutil.rmtree(self._progress, ignore_errors=True)
