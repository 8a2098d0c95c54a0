"""File output that is never left half-written, and file digests: the one home of both.

Every file mf2 writes goes through a temporary file beside its destination and an
``os.replace``: a reader (or a resumed run) sees the old file or the new one, never a part.
Folders (checkpoints) are written under a temporary name and renamed into place the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path


class AtomicFile:
    """A file written under a temporary name beside ``path``; ``commit()`` renames it into place
    (after an fsync), ``discard()`` removes it. Use as a context manager: an exception discards.

        with AtomicFile(path, "w") as f:
            f.write(...)
    """

    def __init__(self, path, mode: str = "w", **open_kwargs):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        if "b" not in mode:
            open_kwargs = {"encoding": "utf-8", "newline": "", **open_kwargs}
        self.file = os.fdopen(fd, mode, **open_kwargs)
        self.done = False

    def write(self, data) -> int:
        return self.file.write(data)

    def commit(self) -> Path:
        """Flush, fsync and rename the temporary file into place."""
        if not self.done:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
            self.done = True
        return self.path

    def discard(self) -> None:
        if not self.done:
            self.file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)
            self.done = True

    def __enter__(self):
        return self.file

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.discard()
        return False


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half a file."""
    with AtomicFile(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path, data: bytes) -> Path:
    with AtomicFile(path, "wb") as f:
        f.write(data)
    return Path(path)


def save_image(path, image, format: str | None = None, **save_kwargs) -> Path:
    """An RGB array [H, W, 3] uint8 (or a PIL image) to ``path``, atomically; the format
    follows the suffix unless given."""
    from PIL import Image

    path = Path(path)
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    fmt = format or Image.registered_extensions().get(path.suffix.lower(), "PNG")
    with AtomicFile(path, "wb") as f:
        pil.save(f, format=fmt, **save_kwargs)
    return path


@contextlib.contextmanager
def atomic_folder(path):
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (an older
    folder of that name is removed first), on an exception it is deleted."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def file_digest(path, n: int | None = 16) -> str:
    """SHA-256 of a file's bytes, hex; the first ``n`` characters (None: all 64)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:n] if n else h.hexdigest()


class PathConflict(ValueError):
    """An output that would write over, into or around one of the command's inputs, as one line."""


def _resolved(path) -> Path:
    return Path(path).expanduser().resolve()


def refuse_overlap(inputs: dict, outputs: dict) -> None:
    """The input/output rule every command checks before any work: no output is one of its
    inputs, contains one, or lies inside an input folder (a run, a feature store, a folder of
    images). An output beside an input file (a cache next to its manifest) is fine.

    ``inputs`` and ``outputs`` map a name for the message (``--manifest``, ``--out``, ``images``)
    to a path or a list of paths; folders are told from files by what is on disk."""
    def paths(value):
        return [value] if isinstance(value, (str, Path)) else list(value or [])

    ins = [(name, p, _resolved(p)) for name, value in inputs.items() for p in paths(value) if p]
    ins = [(name, p, i, i.is_dir()) for name, p, i in ins]
    for out_name, value in outputs.items():
        for out in paths(value):
            o = _resolved(out)
            for in_name, given, i, folder in ins:
                if o == i:
                    raise PathConflict(f"{out_name} {out} is the {in_name} ({given}): mf2 never writes over its inputs; "
                                       "choose another output")
                if i.is_relative_to(o):
                    raise PathConflict(f"{out_name} {out} contains the {in_name} ({given}): mf2 never writes over its "
                                       "inputs; choose an output beside it")
                if folder and o.is_relative_to(i):
                    raise PathConflict(f"{out_name} {out} is inside the {in_name} folder ({given}): mf2 never writes "
                                       "into its inputs; choose an output beside it")


class LockError(ValueError):
    """Another process is writing the same output, as one line."""


@contextlib.contextmanager
def exclusive(path, what: str = "it"):
    """Hold ``path``'s lock while writing it (a run folder, a feature store): a second mf2 process
    that writes the same output stops at once with a one-line error instead of interleaving
    writes. The lock is a hidden file beside ``path`` (``.<name>.lock``), so that replacing or
    deleting ``path`` never drops it."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path.parent / f".{path.name}.lock", "a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise LockError(f"{path}: {owner} is writing {what}; wait for it to finish (or stop it)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"mf2 process {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


_OS_ERROR = re.compile(r"os error (\d+)")


def save_tensors(tensors: dict, path, metadata: dict | None = None) -> None:
    """safetensors' ``save_file``, its I/O failures (a full disk, no permission) raised as the
    ``OSError`` they are, naming ``path``."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as exc:
        found = _OS_ERROR.search(str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None


@contextlib.contextmanager
def naming(path):
    """OS errors raised inside without a file name (zarr's writes) name ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from None
        raise
