"""``mf2.Detector``: a trained MF² (or DFN) run, or an exported model folder, applied to photos,
folders, globs, videos and frames in memory, with the results as a ``mf2.Faces`` DataFrame.

    from mf2 import Detector

    det = Detector.from_run("runs/mf2-dfn")              # or Detector.from_pretrained("mf2-model")
    faces = det.detect(["photos/", "clip.mp4"], fps=2)   # one row per face
    faces.plot_timeline()

``mf2 predict`` is a thin wrapper over ``detect``: the same frames, batches and numbers.
Face finding (decoding, dlib's detector and landmarks, the aligned crop) runs in worker threads
while the backbone and the model run their batch; nothing is downloaded unless asked.
"""

from __future__ import annotations

import logging
import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

import torch

from mf2.devices import resolve_device, resolve_precision
from mf2.faces import Faces
from mf2.prediction.annotate import Annotator
from mf2.prediction.predict import detections
from mf2.prediction.predictor import DECODINGS, PredictSettings, Predictor
from mf2.prediction.sources import InputError, expand, frames, in_memory_frame
from mf2.prediction.table import TableBuilder

logger = logging.getLogger("mf2")


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _workers(num_workers) -> int:
    if num_workers == "auto":  # the cores but one (at most 4: dlib is the cheaper stage), at least one
        return max(1, min(4, _cores() - 1))
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers: expected 'auto' or a number >= 0, got {num_workers!r}")
    return num_workers


def _threads(torch_threads, workers: int, device: str) -> int | None:
    if torch_threads is None:
        return None
    if torch_threads == "auto":  # on a CPU, the cores the face finders leave
        return max(1, _cores() - workers) if device == "cpu" else None
    if not isinstance(torch_threads, int) or torch_threads < 1:
        raise ValueError(f"torch_threads: expected 'auto', None or a number >= 1, got {torch_threads!r}")
    return torch_threads


def _decoding(explain) -> str | None:
    if explain is None or explain is False:
        return None
    if explain is True:
        return "greedy"
    if explain not in DECODINGS:
        raise ValueError(f"explain: expected True, False, 'greedy' or 'beam', got {explain!r}")
    return explain


@contextlib.contextmanager
def _partial_on_failure(so_far):
    """An exception (or Ctrl-C, or SIGTERM's SystemExit) that stops ``detect`` carries the rows
    predicted until then as ``exc.partial`` (a ``Faces``), for the caller to keep."""
    try:
        yield
    except BaseException as exc:
        try:
            exc.partial = so_far()
        except Exception:  # noqa: BLE001 - the original failure is what matters
            pass
        raise


class Detector:
    """AU and emotion probabilities (and explanations) for every face, from a trained model.

    ``run``: a run folder (``mf2 pretrain`` / ``mf2 finetune``) or an exported folder
    (``mf2 export``). ``device``: 'auto' (the first GPU, else the CPU), 'cpu', 'cuda', ...;
    ``precision``: 'auto' (bf16 on GPUs that support it, else fp32), 'bf16' or 'fp32', of the
    model's forward (the frozen backbone keeps the precision its features were made in).
    ``face``: 'detect' (every face dlib finds, scoring at least ``min_face_score``) or 'aligned'
    (each input is one aligned face crop). ``threshold``: the AU probability at which an AU is
    active (explained, drawn); None (the default): each AU's threshold tuned on the run's validation
    split (0.5 for runs without them). ``num_workers``: face-finding threads ('auto': the cores but one,
    at most 4; 0: in the calling thread). ``torch_threads``: torch's intra-op threads while a batch
    runs ('auto': on a CPU, the cores the face finders leave, so the two stages run side by side
    instead of fighting over cores; None: torch's own setting). ``vision_weights``: the weights
    file the run's cache was extracted with, when it was not a packaged backbone;
    ``allow_download``: let missing backbone weights download (off by default). ``tta``: 'flip'
    averages each face's probabilities with its mirrored view's (each AU's two centres swapped,
    as in training; one more backbone pass per face); None (default): the face as it is.
    """

    def __init__(self, run, device: str = "auto", precision: str = "auto", face: str = "detect", *,
                 min_face_score: float = 0.25, threshold: float | None = None, num_workers="auto", torch_threads="auto",
                 vision_weights: str | None = None, allow_download: bool = False, tta: str | None = None):
        device = str(resolve_device(device))
        self.workers = _workers(num_workers)
        self.settings = PredictSettings(face=face, threshold=threshold, min_face_score=min_face_score, device=device,
                                        precision=resolve_precision(precision, device),
                                        vision_weights=vision_weights, allow_download=allow_download,
                                        threads=_threads(torch_threads, self.workers, torch.device(device).type),
                                        tta=tta)
        self.predictor = Predictor(run, self.settings)
        self.run = str(run)
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_run(cls, run, device: str = "auto", precision: str = "auto", face: str = "detect",
                 **options) -> "Detector":
        """A run folder's latest checkpoint (a DFN run loads its base MF² run too)."""
        return cls(run, device, precision, face, **options)

    @classmethod
    def from_pretrained(cls, path_or_hub_id, device: str = "auto", precision: str = "auto", face: str = "detect", *,
                        allow_download: bool = False, revision: str | None = None, cache_dir=None,
                        **options) -> "Detector":
        """An exported model folder (``mf2 export``), offline; or a Hugging Face Hub id
        ("owner/name"), from the local Hugging Face cache, or downloaded only when
        ``allow_download``."""
        from mf2.export import locate

        folder = locate(path_or_hub_id, allow_download, revision, cache_dir)
        return cls(folder, device, precision, face, allow_download=allow_download, **options)

    def __repr__(self) -> str:
        s = self.settings
        return (f"Detector({self.run!r}, device={s.device!r}, precision={s.precision!r}, face={s.face!r}, "
                f"model={type(self.predictor.model).__name__}, vision={self.predictor.vision.name!r})")

    # -- worker threads -------------------------------------------------------------------------
    def _workers_pool(self) -> ThreadPoolExecutor | None:
        if self.workers and self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="mf2-faces")
        return self._pool

    def close(self) -> None:
        """Stop the face-finding threads (they start again if the detector is used again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- detection ------------------------------------------------------------------------------
    def detect(self, inputs, *, batch_size: int = 32, fps: float | None = 1.0, explain=False, beams: int = 3,
               progress: bool | None = True, annotate=None, log=None) -> Faces:
        """Every face of ``inputs``: an image file (path), a PIL image or an RGB array
        [H, W, 3] uint8, a folder (searched recursively for images and videos), a glob, a video
        file, or a list of these. Videos are sampled at ``fps`` frames per second of their own
        clock (0 or None: every frame) and streamed. ``batch_size`` faces go through the model
        at a time (the results do not depend on it). ``explain``: True (greedy) or 'greedy' /
        'beam' (``beams`` wide) adds a generated description per face. ``progress``: a bar with
        faces/s on stderr (None: only on a terminal). ``annotate``: a folder to write each frame
        into with its faces drawn (as ``mf2 predict --annotate``).

        Inputs that cannot be read are skipped, each reported (``log``, default the 'mf2'
        logger) and listed in ``faces.attrs["skipped"]``; ``InputError`` (a ``ValueError``) if
        nothing at all could be read."""
        if fps is not None and fps < 0:
            raise ValueError(f"fps: expected a positive number (0 = every frame), got {fps}")
        decoding = _decoding(explain)
        log = log or logger.warning
        items, problems = expand(inputs)
        skipped = [{"source": item, "error": why} for item, why in problems]
        for item in skipped:
            log(f"skipped {item['source']}: {item['error']}")
        if not items:
            raise InputError("no input files to predict on" + (f" ({skipped[0]['source']}: {skipped[0]['error']})"
                                                               if skipped else ""))
        annotator = Annotator(annotate, self.predictor.thresholds, self.predictor.pooling["window_rulers"]) \
            if annotate is not None else None
        counts = {"files": len(items), "frames": 0, "faces": 0, "frames_without_face": 0}
        table = TableBuilder()
        with self._bar(progress) as bar, _partial_on_failure(lambda: self._faces(table, counts, skipped, annotator)):
            for frame, faces in detections(self.predictor, frames(items, fps or None), batch_size, decoding, beams,
                                           self._workers_pool(), self.workers, keep_images=annotator is not None):
                if faces is None:
                    skipped.append({"source": frame.source, "frame": frame.frame, "error": frame.error})
                    log(f"skipped {frame.source}" + (f" at frame {frame.frame}" if frame.frame is not None else "")
                        + f": {frame.error}")
                    continue
                counts["frames"] += 1
                counts["faces"] += len(faces)
                counts["frames_without_face"] += not faces
                table.add(frame, faces)
                if annotator:
                    annotator.write(frame, faces)
                    frame.image = None
                bar.update(len(faces))
                bar.set_postfix(frames=counts["frames"], refresh=False)
        if not counts["frames"]:
            raise InputError(f"nothing could be read ({len(skipped)} inputs skipped)")
        return self._faces(table, counts, skipped, annotator)

    def detect_frames(self, frames_in: Iterable, *, batch_size: int = 1, fps: float | None = None, explain=False,
                      beams: int = 3, source: str = "<frames>") -> Iterator[Faces]:
        """One ``Faces`` per frame of ``frames_in`` (RGB arrays [H, W, 3] uint8 or PIL images, e.g.
        a webcam loop; from OpenCV pass ``frame[..., ::-1]``), in order, as soon as its batch of
        ``batch_size`` faces is through the model. Rows are named ``source``, numbered by
        ``frame`` from 0, and timed at ``frame / fps`` when ``fps`` (the frames' rate) is given.
        A frame that is not an image gives a 'not an RGB image array' ``InputError``."""
        decoding = _decoding(explain)

        def numbered():
            for k, image in enumerate(frames_in):
                frame = in_memory_frame(source, image, k, round(k / fps, 4) if fps else None)
                if frame.error:
                    raise InputError(f"{source} frame {k}: {frame.error}")
                yield frame

        for frame, faces in detections(self.predictor, numbered(), batch_size, decoding, beams, self._workers_pool(),
                                       self.workers):
            table = TableBuilder()
            table.add(frame, faces)
            yield self._faces(table, {"files": 0, "frames": 1, "faces": len(faces),
                                      "frames_without_face": int(not faces)}, [], None)

    def _faces(self, table: TableBuilder, counts: dict, skipped: list, annotator) -> Faces:
        attrs = {"checkpoint": str(self.predictor.checkpoint), "counts": counts,
                 "skipped": [{k: v for k, v in s.items() if v is not None} for s in skipped],
                 "threshold": self.predictor.thresholds.tolist(), "au_window": self.predictor.pooling["window_rulers"],
                 "face": self.settings.face}
        if annotator is not None:
            attrs["annotated"] = annotator.written
        return Faces.from_columns(table.columns(), attrs)

    @staticmethod
    def _bar(progress):
        from tqdm.auto import tqdm

        return tqdm(desc="detect", unit=" faces", disable=None if progress is None else not progress,
                    dynamic_ncols=True, leave=False)
