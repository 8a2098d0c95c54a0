"""dlib's 128-d face descriptor (``dlib_face_recognition_resnet_model_v1``) in a process of its own.

dlib's Python binding holds the GIL for the whole forward pass of its ResNet (about 0.15-0.2 s
per face on one CPU core): run in the tracking thread, it stopped the face finders and the model
thread for as long, and a video with tracking used 1.45 of 2 cores. So the descriptor runs in a
child process (``python -m mf2.prediction.face_descriptor``, started on first use and shared by
every tracker of the process): the face's 150-px chip is cut here (``dlib.get_face_chip``, as
``compute_face_descriptor(image, shape)`` cuts it itself: the descriptors are identical) and sent
down a pipe; waiting for the answer releases the GIL. A plain child over pipes, not
``multiprocessing``: spawning would import the user's main script again in the child, which an
unguarded script (no ``if __name__ == "__main__"``) cannot survive.

Where the child cannot be started or dies, the descriptor is computed in this process (the same
numbers, only without the overlap), with one warning.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import warnings

import numpy as np

CHIP, PADDING = 150, 0.25  # dlib's chip: side in pixels, padding around the face (its defaults)
_CHIP_BYTES, _OUT_BYTES = CHIP * CHIP * 3, 128 * 8

_lock = threading.Lock()
_child: subprocess.Popen | None = None
_owner = 0  # the pid that started ``_child`` (a forked copy of this process starts its own)
_in_process = False  # the child failed once: compute here from then on
_local = threading.local()


def _after_fork() -> None:
    """In a forked copy: a new lock (one another thread held at the fork would never be released
    here), and the parent's pipes to its child closed here, so that child still sees the end of
    its input when the parent leaves (the copy starts a child of its own when it needs one)."""
    global _lock, _child
    _lock = threading.Lock()
    if _child is not None:
        for stream in (_child.stdin, _child.stdout):
            try:
                stream.close()
            except OSError:
                pass
        _child = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _model():
    import dlib
    import face_recognition_models

    model = getattr(_local, "model", None)
    if model is None:
        model = _local.model = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
    return model


def chip(image: np.ndarray, box, landmarks: np.ndarray) -> np.ndarray:
    """The [150, 150, 3] uint8 chip dlib's descriptor network reads for this face."""
    import dlib

    rect = dlib.rectangle(*[int(round(v)) for v in box])
    shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])
    return np.ascontiguousarray(dlib.get_face_chip(image, shape, size=CHIP, padding=PADDING), dtype=np.uint8)


# The child says it is ready once its model is loaded; an answer slower than this is a child that
# will not answer (an executable that is not Python, a frozen app, a hung process): it is killed
# and the descriptors are computed here.
READY, START_TIMEOUT, ANSWER_TIMEOUT = b"mf2-descriptor-ready\n", 120.0, 60.0


def _start() -> subprocess.Popen:
    global _owner
    child = subprocess.Popen([sys.executable, "-m", "mf2.prediction.face_descriptor"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    _owner = os.getpid()
    atexit.register(_stop, child, _owner)
    try:
        if _read(child.stdout, len(READY), START_TIMEOUT) != READY:
            raise EOFError("the descriptor process said something else than ready")
    except BaseException:
        _kill(child)
        raise
    return child


def _kill(child: subprocess.Popen) -> None:
    try:
        child.kill()
        child.wait(timeout=5)
    except Exception:  # noqa: BLE001 -- already gone
        pass


def _stop(child: subprocess.Popen, owner: int) -> None:
    if os.getpid() != owner:  # a forked copy of this process leaves its parent's child alone
        return
    try:
        child.stdin.close()
        child.wait(timeout=5)
    except Exception:  # noqa: BLE001 -- leaving: a child that will not stop is killed
        child.kill()


def _read(stream, n: int, timeout: float | None = None) -> bytes:
    """Exactly ``n`` bytes from a child's pipe; EOFError when it ends, TimeoutError when nothing
    comes for ``timeout`` seconds."""
    import select

    fd, data = stream.fileno(), b""  # read from the descriptor itself: nothing waits in a buffer select cannot see
    while len(data) < n:
        if timeout is not None and not select.select([fd], [], [], timeout)[0]:
            raise TimeoutError(f"no answer from the descriptor process in {timeout:g} s")
        part = os.read(fd, n - len(data))
        if not part:
            raise EOFError("the descriptor process ended")
        data += part
    return data


def _ask(face_chip: np.ndarray) -> np.ndarray:
    """One request to the child (started here if there is none): the chip written whole
    (a buffered pipe retries short writes), the answer read whole. Any interruption in between
    -- Ctrl-C, an error, a timeout -- kills the child, so that no answer is left in the pipe to be
    taken for the next request's; the next request starts a fresh one."""
    global _child
    if _child is None or _owner != os.getpid() or _child.poll() is not None:
        _child = _start()
    try:
        _child.stdin.write(face_chip.tobytes())
        _child.stdin.flush()
        return np.frombuffer(_read(_child.stdout, _OUT_BYTES, ANSWER_TIMEOUT), np.float64).copy()
    except BaseException:
        _kill(_child)
        _child = None
        raise


def describe_chip(face_chip: np.ndarray) -> np.ndarray:
    """dlib's descriptor [128] float64 of a 150-px chip, computed in the child process (a child
    that died is replaced once; where that fails too, computed here from then on, with a warning)."""
    global _in_process
    face_chip = np.ascontiguousarray(face_chip, dtype=np.uint8)
    if face_chip.shape != (CHIP, CHIP, 3):
        raise ValueError(f"face chip: expected shape ({CHIP}, {CHIP}, 3), got {face_chip.shape}")
    with _lock:
        if not _in_process and os.name == "posix":  # (select on pipes: POSIX only)
            for attempt in (1, 2):
                try:
                    return _ask(face_chip)
                except (OSError, EOFError, ValueError) as e:  # TimeoutError is an OSError
                    if attempt == 2:
                        _in_process = True
                        warnings.warn(f"face descriptors: the child process failed ({e}); computing them in "
                                      "this process", RuntimeWarning, stacklevel=2)
    return np.asarray(_model().compute_face_descriptor(face_chip), np.float64)


def descriptor(image: np.ndarray, box, landmarks: np.ndarray) -> np.ndarray:
    """dlib's 128-d face descriptor of the face with these 68 landmarks (see the module's text)."""
    return describe_chip(chip(image, box, landmarks))


def _serve() -> None:
    """The child: a chip in (150 x 150 x 3 bytes), its descriptor out (128 float64), until EOF."""
    model = _model()
    src, dst = sys.stdin.buffer, sys.stdout.buffer
    dst.write(READY)
    dst.flush()
    while True:
        try:
            data = _read(src, _CHIP_BYTES)
        except EOFError:
            return
        face_chip = np.frombuffer(data, np.uint8).reshape(CHIP, CHIP, 3)
        dst.write(np.asarray(model.compute_face_descriptor(face_chip), np.float64).tobytes())
        dst.flush()


if __name__ == "__main__":
    _serve()
