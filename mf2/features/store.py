"""The feature cache on disk: a Zarr group with a fixed layout (SPEC §4).

    meta/{ids, video, split, image}            [N] str
    meta/{emotion [N] i8, aus [N,12] i8, face_found [N] bool, valid [N] bool, error [N] str}
    vision/{tokens [N,T,C] f16, au_tokens [N,12,2R²,C] f16, landmarks [N,68,2] f32}
    text/<type>/{ids [N,L] i32, mask [N,L] bool, hidden [N,L,D] f16}   type in au, emotion, key_au
    text/au_sentences/{ids [N,12,L] i32, mask [N,12,L] bool, hidden [N,12,L,D] f16}

Arrays are chunked along the sample axis only (about 2 MB a chunk) with a fast codec. Rows
are written in blocks; after each block the ``count`` attribute (the index a reader trusts)
moves forward, so a killed run resumes at the last complete block. The ``signature``
attribute is written at creation and ``complete`` when the last block is in: a store whose
signature differs from the run's is refused, naming the field. Every chunk carries a CRC32C that is
checked when it is read (a changed byte is an error naming the array and rows). Every chunk is written, empty ones
included (``all_chunks``), so that a reader can tell a chunk lost on disk from one of zeros: a
complete store with a missing chunk is an error naming the array and its rows, never zeros.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

CHUNK_BYTES = 2 << 20
# lz4 (fast; float16 features barely compress), then a CRC32C of every stored chunk: a chunk
# whose bytes changed on disk (a flipped bit, a bad copy) is an error when read, never other
# numbers (``read_rows`` names the array and its rows). Stores written before it read as before.
CODECS = (BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"), Crc32cCodec())


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

    def __len__(self):
        return self.group["meta/ids"].shape[0]

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
    def open(cls, path) -> "FeatureStore":
        path = Path(path)
        if not path.exists():
            raise StoreError(f"{path}: no feature store here (run mf2 extract-features first)")
        if not path.is_dir():
            raise StoreError(f"{path}: not a feature store (a file, not a Zarr folder)")
        try:
            group = zarr.open_group(str(path), mode="r")
        except Exception as exc:  # not a zarr group
            raise StoreError(f"{path}: not a feature store ({type(exc).__name__})") from None
        if "signature" not in group.attrs:
            raise StoreError(f"{path}: not an mf2 feature store (no signature)")
        return cls(group)

    @classmethod
    def create_or_resume(cls, path, signature: dict, meta: dict, layout: dict, overwrite: bool = False) -> "FeatureStore":
        """Open ``path`` to continue the run described by ``signature``, or create it.

        meta: name -> full array (written at creation); layout: name -> (per-sample shape, dtype)."""
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
            rows = max(1, min(n, CHUNK_BYTES // max(per_sample, 1)))
            group.create_array(name, shape=(n, *shape), dtype=dtype, chunks=(rows, *shape), compressors=CODECS,
                               fill_value=0, config={"write_empty_chunks": True})
        group.attrs.update({"signature": signature, "count": 0, "complete": False, "all_chunks": True})
        return cls(group)

    def write_block(self, start: int, arrays: dict) -> None:
        """Write rows [start, start + b) of every array, then move ``count`` (last)."""
        if start != self.count:
            raise StoreError(f"block starts at {start} but the store holds {self.count} rows")
        b = None
        for name, values in arrays.items():
            b = len(values)
            self.group[name][start:start + b] = values
        self.group.attrs["count"] = start + b

    def finish(self, summary: dict) -> None:
        self.group.attrs.update({"summary": summary, "complete": True})
