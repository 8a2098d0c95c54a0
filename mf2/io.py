"""File output that is never left half-written, file digests, and reading back what mf2 wrote:
the one home of all three.

Every file mf2 writes goes through a temporary file beside its destination and an
``os.replace``: a reader (or a resumed run) sees the old file or the new one, never a part.
Folders (checkpoints) are written under a temporary name and renamed into place the same way.

A folder mf2 hands to its later self or to a user (a checkpoint, an exported model) carries a
``SHA256SUMS`` file (the format of ``sha256sum``; ``sha256sum -c SHA256SUMS`` checks it by hand)
written last. Every file listed there is checked when it is read back (``verify``): a changed,
truncated or missing file is one ``IntegrityError`` line naming it and what to do, never other
weights or a library's traceback. Folders written before the record existed read as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
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
        if self.path.is_dir():
            raise OutputPathError(f"{self.path} is a folder, and a file is needed here; choose a file name")
        for part in self.path.parents:
            if part.exists() and not part.is_dir():
                raise OutputPathError(f"{self.path}: {part} is a file, not a folder; choose another path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:  # mkstemp makes it 0600: the file gets the mode a plain open() would give (a file replaced keeps its own)
            os.fchmod(fd, self.path.stat().st_mode & 0o7777 if self.path.exists() else 0o666 & ~_umask())
        except OSError:
            pass
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


CHECKSUMS = "SHA256SUMS"


class IntegrityError(ValueError):
    """A file mf2 wrote that is not what it wrote (changed, truncated, missing), as one line."""


def write_checksums(folder, names=None) -> Path:
    """``folder/SHA256SUMS`` for ``names`` (paths relative to ``folder``; default: every file under
    it), atomically. Written last, after the files it lists."""
    folder = Path(folder)
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS) \
        if names is None else sorted(str(n) for n in names)
    lines = "".join(f"{file_digest(folder / n, None)}  {n}\n" for n in names)
    return atomic_write_text(folder / CHECKSUMS, lines)


def _recorded(root: Path) -> dict | None:
    record = root / CHECKSUMS
    if not record.is_file():
        return None
    out = {}
    for line in record.read_text(encoding="utf-8", errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise IntegrityError(f"{record}: not a SHA256SUMS record (line {line[:60]!r}); the folder is damaged")
        out[name] = digest
    return out


_VERIFIED: dict = {}  # (path, size, mtime, inode) -> digest: a file is hashed once per process


def verify(path, root=None, remedy: str = "restore it from a copy") -> bool:
    """Check ``path`` against the ``SHA256SUMS`` of ``root`` (default: its folder). True when it
    matches the record, False when the folder has no record (written before records existed);
    an ``IntegrityError`` when the file differs from what was recorded, is missing, or is not in
    the record at all (mf2 lists every file it writes into a folder with a record, so an unlisted
    one means the record was edited)."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    record = _recorded(root)
    if record is None:
        return False
    name = str(path.relative_to(root))
    if name not in record:
        raise IntegrityError(f"{path}: not listed in {root / CHECKSUMS}, which lists every file mf2 wrote there: the "
                             f"record was edited; {remedy}")
    try:
        st = path.stat()
    except FileNotFoundError:
        raise IntegrityError(f"{path}: missing (listed in {root / CHECKSUMS}); {remedy}") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    digest = _VERIFIED.get(key) or file_digest(path, None)
    if digest != record[name]:
        raise IntegrityError(f"{path}: its SHA-256 ({digest[:12]}…) differs from the one recorded when mf2 wrote it "
                             f"({record[name][:12]}…): the file was changed or damaged; {remedy}")
    _VERIFIED[key] = digest
    return True


def verify_folder(folder, root=None, remedy: str = "restore it from a copy") -> bool:
    """Every file under ``folder`` (a part of ``root``, default the folder itself) checked as
    ``verify`` checks one, and every file the record lists under it present: for folders that
    another library reads file by file (a tokenizer). False when ``root`` has no record."""
    folder = Path(folder)
    root = Path(root) if root is not None else folder
    record = _recorded(root)
    if record is None:
        return False
    prefix = str(folder.relative_to(root))
    prefix = "" if prefix == "." else prefix + "/"
    present = {str(p.relative_to(root)) for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS}
    for name in sorted({n for n in record if n.startswith(prefix)} | present):  # each once: listed or there
        verify(root / name, root, remedy)
    return True


def read_json(path, what: str = "file", remedy: str = "restore it from a copy", root=None):
    """A JSON file mf2 wrote, verified (``verify``) and parsed; anything unreadable is one
    ``IntegrityError`` line naming the file."""
    path = Path(path)
    verify(path, root, remedy)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IntegrityError(f"{path}: missing ({what}); {remedy}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{path}: not valid JSON ({what}: {str(exc).splitlines()[0]}); {remedy}") from None


def _safetensors_error(path, exc, remedy: str) -> IntegrityError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return IntegrityError(f"{path}: not a readable safetensors file ({first}): it is damaged or truncated; {remedy}")


def load_tensors(path, root=None, remedy: str = "restore it from a copy") -> dict:
    """A safetensors file's tensors, verified first (``verify``); a damaged, truncated or missing
    file is one ``IntegrityError`` line, not a ``SafetensorError`` traceback."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    verify(path, root, remedy)
    if not path.is_file():
        raise IntegrityError(f"{path}: missing; {remedy}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _safetensors_error(path, exc, remedy) from None


def tensor_shapes(path, remedy: str = "restore it from a copy") -> dict:
    """name -> shape of every tensor in a safetensors file, read from its header only."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"{path}: missing; {remedy}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _safetensors_error(path, exc, remedy) from None


def fresh_base(folder, base: str, suffixes, used: set) -> str:
    """A name for the files ``name + suffix`` (each of ``suffixes``) in ``folder``: ``base``, else
    ``base_2``, ``base_3``, ... -- the first for which no such file was taken in this run (``used``,
    file names; the chosen ones are added) nor is already there. mf2 writes into a folder it was
    given (``--annotate``, ``--plots``, OpenFace's folder) only under names nobody holds: never
    over a user's own file, nor over an earlier run's (a rerun writes beside it)."""
    folder, suffixes = Path(folder), list(suffixes)
    name, k = base, 1
    while any(name + x in used or os.path.lexists(folder / (name + x)) for x in suffixes):
        k += 1
        name = f"{base}_{k}"
    used.update(name + x for x in suffixes)
    return name


class OutputPathError(ValueError):
    """An output that cannot be written as asked (a folder where a file goes, a file where a
    folder goes), as one line naming it."""


def output_folder(path, what: str = "output") -> Path:
    """``path`` made as a folder (with its parents), or an ``OutputPathError`` saying which part
    of it is a file."""
    path = Path(path)
    for part in [path, *path.parents]:
        if part.exists() and not part.is_dir():
            raise OutputPathError(f"{what} {path}: {'it' if part == path else part} is a file, and a folder is needed "
                                  "here; choose another path")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _umask() -> int:
    """The process's umask (read from /proc where there is one, so no thread sees it changed)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class PathConflict(ValueError):
    """An output that would write over, into or around one of the command's inputs, as one line."""


def _resolved(path) -> Path:
    """``path`` with its links followed; a loop of links stays as written (reading it fails later,
    where it is said as a broken link), never a RuntimeError."""
    path = Path(path).expanduser()
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # "Symlink loop from ..."
        return Path(os.path.abspath(path))


def listed(path, root=None) -> bool:
    """Whether the ``SHA256SUMS`` of ``root`` (default: ``path``'s folder) lists ``path``."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    record = _recorded(root)
    return record is not None and str(path.relative_to(root)) in record


_ANY = object()  # a path part that can be any name (something an output folder will hold)


def _parts_match(pattern: list[str], path: list) -> bool:
    """Glob ``pattern`` parts against ``path`` parts ('**' matches zero or more parts; ``_ANY``
    matches any pattern part)."""
    import fnmatch

    if not pattern:
        return not path
    if pattern[0] == "**":
        return any(_parts_match(pattern[1:], path[i:]) for i in range(len(path) + 1))
    if not path:
        return False
    head = path[0] is _ANY or fnmatch.fnmatchcase(path[0], pattern[0])
    return head and _parts_match(pattern[1:], path[1:])


def glob_reaches(pattern: str, path, folder: bool = False) -> bool:
    """Whether the glob ``pattern`` matches ``path`` (``folder``: or something inside it), as
    paths resolved from the current folder: an output that a later run of the same glob would
    read as its input."""
    pattern_parts = list(_resolved(Path(pattern).parent).parts) + [Path(pattern).name] \
        if not any(c in str(Path(pattern).parent) for c in "*?[") else list(Path(os.path.abspath(pattern)).parts)
    target = list(_resolved(path).parts)
    return _parts_match(pattern_parts, target) or (folder and _parts_match(pattern_parts, target + [_ANY]))


def _is_glob(value) -> bool:
    import glob

    return isinstance(value, str) and glob.has_magic(value) and not Path(value).exists()


def refuse_overlap(inputs: dict, outputs: dict) -> None:
    """The input/output rule every command checks before any work: no output is one of its
    inputs, contains one, or lies inside an input folder (a run, a feature store, a folder of
    images), and no output is something an input glob matches (a rerun would read it). An
    output beside an input file (a cache next to its manifest) is fine.

    ``inputs`` and ``outputs`` map a name for the message (``--manifest``, ``--out``, ``images``)
    to a path or a list of paths (an input may be a glob: its matches are inputs, and outputs must
    stay out of its reach); folders are told from files by what is on disk (an output that does
    not exist yet counts as a folder when its name has no suffix)."""
    import glob

    def paths(value):
        return [value] if isinstance(value, (str, Path)) else list(value or [])

    ins, patterns = [], []
    for name, value in inputs.items():
        for p in paths(value):
            if not p or (isinstance(p, str) and not p.strip()):
                continue
            if _is_glob(p):
                patterns.append((name, p))
                ins += [(name, m, _resolved(m)) for m in glob.glob(p, recursive=True)]
            else:
                ins.append((name, p, _resolved(p)))
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
            for in_name, pattern in patterns:
                if glob_reaches(pattern, out, folder=o.is_dir() or not Path(out).suffix):
                    raise PathConflict(f"{out_name} {out} is reached by the {in_name} glob {pattern!r}: a later run of "
                                       "the same command would read it as an input; choose an output the glob does "
                                       "not match")


class LockError(ValueError):
    """Another process is writing the same output, as one line."""


@contextlib.contextmanager
def exclusive(path, what: str = "it"):
    """Hold ``path``'s lock while writing it (a run folder, a feature store): a second mf2 process
    that writes the same output stops at once with a one-line error instead of interleaving
    writes. The lock is a hidden file beside ``path`` (``.<name>.lock``), so that replacing or
    deleting ``path`` never drops it; it exists only while held."""
    import fcntl

    path = Path(path)
    if path.is_symlink() and not path.exists():  # writing would fail deep inside with "file exists"
        raise PathConflict(f"{path}: a link to {os.readlink(path)}, which is not there; remove the link or choose "
                          "another output")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    while True:
        handle = open(lock, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise LockError(f"{path}: {owner} is writing {what}; wait for it to finish (or stop it)") from None
        try:  # the lock file may have been removed (and made anew) by its last holder meanwhile
            same = os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"mf2 process {os.getpid()}")
        handle.flush()
        yield
    finally:  # removed while held, so no command leaves its lock behind (nor in a folder it reads)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        handle.close()


@contextlib.contextmanager
def exclusive_outputs(outputs: dict):
    """Hold ``exclusive`` for every output of a command (name for the message -> path or None):
    a second process writing any of them stops at once, before any work."""
    with contextlib.ExitStack() as stack:
        for name, path in outputs.items():
            if path is not None:
                stack.enter_context(exclusive(path, f"{name} {path}"))
        yield


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
def path_in_errors(path):
    """OS errors raised inside without a file name (zarr's writes) name ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from None
        raise
