"""``mf2.Detector``: a trained MF² (or DFN) run, or an exported model folder, applied to photos,
folders, globs, videos and frames in memory, with the results as a ``mf2.Faces`` DataFrame.

    from mf2 import Detector

    det = Detector.from_run("runs/mf2-dfn")              # or Detector.from_pretrained("mf2-model")
    faces = det.detect(["photos/", "clip.mp4"], fps=2)   # one row per face, a track per person
    faces.tracks()                                       # per person: frames, times, mean probabilities
    faces.plot_timeline(track=0)

``mf2 predict`` is a thin wrapper over ``detect``: the same frames, batches and numbers.
Face finding (decoding, the face detector, dlib's landmarks, the aligned crop) runs in worker threads
while the backbone and the model run their batch; nothing is downloaded unless asked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

import numpy as np
import torch

from mf2._checks import au_thresholds, flag, number
from mf2._checks import path as file_path
from mf2.devices import resolve_device, resolve_precision
from mf2.faces import Faces
from mf2.features.face_align import resolve_detector
from mf2.prediction.annotate import Annotator
from mf2.prediction.stream import detections
from mf2.prediction.predictor import DECODINGS, GROUNDINGS, PredictSettings, Predictor, intra_op_threads
from mf2.prediction.sources import InputError, expand, flatten, frames, in_memory_frame, is_clip
from mf2.prediction.table import TableBuilder
from mf2.prediction.tracking import SAME_FACE, Tracker, TrackSettings, iou

logger = logging.getLogger("mf2")


class _DefaultFps(float):
    """``detect``'s default ``fps`` (1.0), told apart from an ``fps`` a caller gave (which
    ``skip_frames`` contradicts)."""

    def __repr__(self) -> str:
        return "1.0"


DEFAULT_FPS = _DefaultFps(1.0)


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


MAX_THREADS = 1024  # more threads than any machine has cores is a typo (10**12 overflowed torch at detect time)


def _workers(num_workers) -> int:
    num_workers = number("num_workers", num_workers, integer=True, low=0, high=MAX_THREADS, words=("auto",))
    if num_workers == "auto":  # the cores but one (at most 4: dlib is the cheaper stage), at least one
        return max(1, min(4, _cores() - 1))
    return num_workers


def _threads(torch_threads, workers: int, device: str) -> int | None:
    torch_threads = number("torch_threads", torch_threads, integer=True, low=1, high=MAX_THREADS, none=True,
                           words=("auto",))
    if torch_threads == "auto":  # on a CPU, the cores the face finders leave
        return max(1, _cores() - workers) if device == "cpu" else None
    return torch_threads


def _tracking(tracking) -> TrackSettings | None:
    if isinstance(tracking, (bool, np.bool_)):
        tracking = bool(tracking)
    if tracking is True:
        return TrackSettings()
    if tracking is False or tracking is None:
        return None
    if isinstance(tracking, TrackSettings):
        return tracking
    if isinstance(tracking, dict):
        known = {f.name for f in dataclasses.fields(TrackSettings)}
        unknown = sorted(set(map(str, tracking)) - known)
        if unknown:
            raise ValueError(f"tracking: unknown setting {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
        return TrackSettings(**tracking)
    raise ValueError(f"tracking: expected True, False, a TrackSettings or a dict of its fields, got {tracking!r}")


class _Tracks:
    """The ``track`` of every face, source by source, in frame order: a video's faces get the ids
    of a ``Tracker``; an image's faces their rank (each face is its own)."""

    def __init__(self, settings: TrackSettings | None, predictor=None):
        self.settings, self.source, self.tracker, self.predictor = settings, None, None, predictor
        self.descriptors = self.recovered = self.searched = self.found = 0

    def __call__(self, frame, faces) -> None:
        if frame.frame is None:
            for i, f in enumerate(faces):
                f.track = i
            return
        if self.settings is None:
            return
        if frame.source != self.source or self.tracker is None:
            self.source, self.tracker, self.clock = frame.source, Tracker(self.settings), -np.inf
        before = self.tracker.descriptors_computed
        t = frame.time if frame.time is not None else float(frame.frame)
        # a frame timed before the one before it (a damaged stream's timestamps) is tracked as if at
        # that one's time (the Tracker refuses time going back); its row keeps its own time
        t = self.clock = max(t, self.clock)
        ids = self.tracker.update(frame.image, faces, t)
        self.descriptors += self.tracker.descriptors_computed - before
        for f, k in zip(faces, ids):
            f.track = k
        if self.predictor is None or frame.image is None or self.predictor.settings.face != "detect":
            return
        added = self._keep(frame, faces, frame.near_misses, self.tracker.recover(frame.near_misses, t,
                                                                                  taken=[f.box for f in faces]))
        taken = [f.box for f in faces]
        wanted, by_search = self.tracker.searched(t, taken), 0
        if wanted:
            found = [c for _, box in wanted for c in self.predictor.finder.search(frame.image, box)]
            by_search = self._keep(frame, faces, found, self.tracker.recover(found, t, min_iou=0.3, taken=taken,
                                                                             tracks=[k for k, _ in wanted]))
            self.searched, self.found = self.searched + len(wanted), self.found + by_search
        if added or by_search:
            kept = np.array([f.box for f in faces], float)
            frame.near_misses = [n for n in frame.near_misses if iou(np.array([n.box], float), kept).max() < SAME_FACE]
            faces.sort(key=lambda f: (f.box[2] - f.box[0] + 1) * (f.box[3] - f.box[1] + 1), reverse=True)
        self.recovered += added

    def _keep(self, frame, faces: list, candidates: list, tracks: list) -> int:
        """Candidates a track took (``Tracker.recover``) join the frame's faces, aligned."""
        n = 0
        for candidate, k in zip(candidates, tracks):
            if k is not None:
                face = self.predictor.aligned(frame.image, candidate)
                face.track = k
                faces.append(face)
                n += 1
        return n


def _versions() -> dict:
    """The versions a result was made with (``Faces.info``)."""
    import dlib

    from mf2._version import __version__

    return {"mf2": __version__, "torch": torch.__version__, "dlib": dlib.__version__}


MAX_NEAR_MISSES = 1000  # listed in faces.attrs["near_misses"] (all are counted)


def _decoding(explain, grounding: str = "heads") -> str | None:
    if grounding not in GROUNDINGS:
        raise ValueError(f"grounding: expected 'heads' or 'none', got {grounding!r}")
    if isinstance(explain, (bool, np.bool_)):
        explain = bool(explain)
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
    ``face``: 'detect' (every face the face detector finds, scoring at least ``min_face_score``)
    or 'aligned' (each input is one aligned face crop). ``face_detector``: 'hog' (dlib's frontal
    HOG), 'cnn' (dlib's MMOD CNN; slow on a CPU), 'mtcnn' (batched on a GPU) or 'auto' (the
    default detector, MTCNN); ``min_face_score``: None for the detector's own default (HOG 0.25,
    CNN 0.3, MTCNN 0.7). ``tracking``: True (``TrackSettings()``), False, a ``TrackSettings`` or a
    dict of its fields (``mf2.prediction.tracking``): one ``track`` id per person in a video. ``threshold``: the AU probability at which an AU is
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
                 face_detector: str = "auto", min_face_score: float | None = None, threshold: float | None = None,
                 tracking=True, num_workers="auto", torch_threads="auto", vision_weights: str | None = None,
                 allow_download: bool = False, tta: str | None = None):
        # every argument is checked here, before the model loads
        min_face_score = number("min_face_score", min_face_score, none=True)
        if min_face_score is not None and resolve_detector(face_detector) == "mtcnn" and not 0 <= min_face_score <= 1:
            raise ValueError(f"min_face_score: MTCNN's score is a probability, expected a value in [0, 1], got {min_face_score!r}")
        threshold = au_thresholds("threshold", threshold)
        allow_download = flag("allow_download", allow_download)
        vision_weights = file_path("vision_weights", vision_weights, none=True)
        self.tracking = _tracking(tracking)
        device = str(resolve_device(device))
        self.workers = _workers(num_workers)
        self.settings = PredictSettings(face=face, threshold=threshold, min_face_score=min_face_score, device=device,
                                        precision=resolve_precision(precision, device), face_detector=face_detector,
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
    def detect(self, inputs, *, batch_size: int = 32, fps: float | None = DEFAULT_FPS, skip_frames: int | None = None,
               explain=False, beams: int = 3, progress: bool | None = True, annotate=None, log=None,
               smooth: float | None = None, data_type: str | None = None, grounding: str = "heads") -> Faces:
        """Every face of ``inputs``: an image file (path), a PIL image or an image array (any
        dtype, [H, W], [H, W, 3] or [H, W, 4]), a folder (searched recursively for images and
        videos), a glob, a video file, or a list of these. Videos are sampled at ``fps`` frames
        per second of their own clock (0 or None: every frame), or every ``skip_frames``-th frame
        (py-feat's name; giving both a positive ``fps`` and ``skip_frames`` is a ``ValueError``),
        and streamed, each frame as a player shows it (the container's display rotation applied;
        ``attrs["videos"]`` records it per video with the clock of its first frame) and timed in
        seconds since the video's first frame; each person keeps one ``track`` id across a video's frames
        (``tracking=`` of the Detector). ``batch_size`` faces go through the model at a time (the
        results do not depend on it). ``explain``: True (greedy) or 'greedy' / 'beam' (``beams``
        wide) adds a generated description per face, worded from what the heads decided
        (``grounding='heads'``) or by the ITG decoder alone (``'none'``). ``progress``: a bar with faces/s on stderr
        (None: only on a terminal). ``annotate``: a folder to write each frame into with its faces
        drawn (as ``mf2 predict --annotate``). ``smooth``: seconds of per-track temporal smoothing
        of the probabilities (``Faces.smooth``; None: off; it needs tracking and a video among the
        inputs, and says so before any work). ``data_type``: 'image' or 'video'
        refuses inputs of the other kind (py-feat's argument; None: both).

        Inputs that cannot be read are skipped, each reported (``log``, default the 'mf2'
        logger) and listed in ``faces.attrs["skipped"]``; ``InputError`` (a ``ValueError``) if
        nothing at all could be read. Faces scoring under ``min_face_score`` but above the
        detector's floor are counted in ``attrs["counts"]["near_misses"]`` and listed (the first
        1,000) in ``attrs["near_misses"]``."""
        # every argument is checked before any work (a bad one is not found after an hour of video)
        batch_size = number("batch_size", batch_size, integer=True, low=1)
        fps_given = fps is not DEFAULT_FPS
        fps = number("fps", fps, low=0, none=True, note="(frames per second; 0 or None: every frame)")
        skip_frames = number("skip_frames", skip_frames, integer=True, low=1, none=True)
        if skip_frames is not None:
            if fps and fps_given:  # not a precedence to guess: the caller asked for two samplings
                raise ValueError(f"skip_frames={skip_frames} and fps={fps!r}: give one (skip_frames reads every n-th "
                                 f"frame, fps samples the video's clock)")
            fps = None
        beams = number("beams", beams, integer=True, low=1)
        progress = flag("progress", progress, none=True)
        smooth = number("smooth", smooth, low=0, low_open=True, none=True, note="(seconds; None: off)")
        if smooth is not None and self.tracking is None:
            raise ValueError("smooth: smoothing averages each person's track over time, and this Detector does not "
                             "track (tracking=False): use tracking=True, or leave smooth off")
        if data_type not in (None, "image", "video"):
            raise ValueError(f"data_type: expected 'image', 'video' or None, got {data_type!r}")
        if log is not None and not callable(log):
            raise ValueError(f"log: expected a function that takes a message (or None: the 'mf2' logger), got {log!r}")
        if annotate is not None and not isinstance(annotate, (str, os.PathLike)):
            raise ValueError(f"annotate: expected a folder (a path) or None, got {annotate!r}")
        decoding = _decoding(explain, grounding)
        log = log or logger.warning
        inputs = flatten(inputs)  # once: a generator (or a Series, a set) is read here, and checked below as given
        items, problems = expand(inputs)
        if data_type is not None:
            wrong = [i for i in items if isinstance(i, str) and is_clip(i) != (data_type == "video")]
            if wrong:  # (an animated GIF, WebP or PNG is a clip; a multi-page TIFF's pages are images)
                raise InputError(f"data_type={data_type!r}, but {wrong[0]} is "
                                 f"{'a video (or an animated image)' if data_type == 'image' else 'not a video'}")
        if smooth is not None and not any(isinstance(i, str) and is_clip(i) for i in items):
            raise ValueError("smooth: no video among the inputs, and smoothing averages each person's track over a "
                             "video's time (an image has no time): leave smooth off for images")
        skipped = [{"source": item, "error": why} for item, why in problems]
        for item in skipped:
            log(f"skipped {item['source']}: {item['error']}")
        if not items:
            raise InputError("no input files to predict on" + (f" ({skipped[0]['source']}: {skipped[0]['error']})"
                                                               if skipped else ""))
        if annotate is not None:  # the CLI's rule, for the library too: never write over or into an input
            from mf2.io import refuse_overlap

            refuse_overlap({"input": [i for i in inputs if isinstance(i, (str, os.PathLike))]}, {"annotate": annotate})
        annotator = Annotator(annotate, self.predictor.thresholds, self.predictor.pooling["window_rulers"]) \
            if annotate is not None else None
        counts = {"files": len(items), "frames": 0, "faces": 0, "frames_without_face": 0, "near_misses": 0}
        near: list[dict] = []
        videos: dict[str, dict] = {}  # per video: how its frames were turned, its clock at the first frame
        table = TableBuilder()
        tracks = _Tracks(self.tracking, self.predictor)
        # torch's threads for the whole run (MTCNN in the face-finding threads, the model here), not only a batch
        with self._bar(progress) as bar, _partial_on_failure(lambda: self._faces(table, counts, skipped, annotator,
                                                                                 near, videos)), \
                intra_op_threads(self.settings.threads):
            for frame, faces in detections(self.predictor, frames(items, fps or None, skip_frames), batch_size,
                                           decoding, beams, self._workers_pool(), self.workers,
                                           keep_images=annotator is not None, track=tracks,
                                           grounding=grounding, seed_every=self._seed_every):
                if faces is None:
                    skipped.append({"source": frame.source, "frame": frame.frame, "error": frame.error})
                    log(f"skipped {frame.source}" + (f" at frame {frame.frame}" if frame.frame is not None else "")
                        + f": {frame.error}")
                    continue
                if frame.start is not None and frame.source not in videos:
                    videos[frame.source] = {"rotation": frame.rotation, "mirrored": frame.mirrored,
                                            "start_time": frame.start}
                counts["frames"] += 1
                counts["faces"] += len(faces)
                counts["frames_without_face"] += not faces
                counts["near_misses"] += len(frame.near_misses)
                for f in frame.near_misses[:max(0, MAX_NEAR_MISSES - len(near))]:
                    near.append({"source": frame.source, "frame": frame.frame, "score": round(f.score, 3),
                                 "box": [round(v, 1) for v in f.box]})
                table.add(frame, faces)
                if annotator:
                    annotator.write(frame, faces)
                    frame.image = None
                bar.update(len(faces))
                bar.set_postfix(frames=counts["frames"], refresh=False)
        if not counts["frames"]:
            raise InputError(f"nothing could be read ({len(skipped)} inputs skipped)")
        counts["descriptors"], counts["kept_by_tracking"] = tracks.descriptors, tracks.recovered
        counts["searched"], counts["found_by_search"] = tracks.searched, tracks.found
        faces = self._faces(table, counts, skipped, annotator, near, videos)
        return faces.smooth(smooth) if smooth is not None else faces

    def detect_image(self, inputs, **options) -> Faces:
        """py-feat's ``detect_image``: ``detect`` on image inputs only (``data_type='image'``)."""
        return self.detect(inputs, data_type="image", **options)

    def detect_video(self, inputs, *, skip_frames: int | None = None, fps: float | None = None, **options) -> Faces:
        """py-feat's ``detect_video``: ``detect`` on videos only, every frame unless ``skip_frames``
        (every n-th frame) or ``fps`` (frames per second of the video's clock) says otherwise."""
        return self.detect(inputs, data_type="video", skip_frames=skip_frames, fps=fps or None, **options)

    def detect_frames(self, frames_in: Iterable, *, batch_size: int = 1, frame_rate: float | None = None,
                      explain=False, beams: int = 3, source: str = "<frames>", fps=None,
                      grounding: str = "heads") -> Iterator[Faces]:
        """One ``Faces`` per frame of ``frames_in`` (image arrays of any dtype, PIL images or PyAV
        video frames, e.g. a webcam loop; from OpenCV pass ``frame[..., ::-1]``), in order, as soon
        as its batch of ``batch_size`` faces is through the model. Every frame given is read (none
        is skipped). Rows are named ``source``, numbered by ``frame`` from 0, timed at
        ``frame / frame_rate`` when ``frame_rate`` (the rate the frames were captured at) is given,
        and tracked across the frames (``track``): tracking needs ``frame_rate``, since its
        settings are seconds (with no rate a frame has no time; a ``ValueError`` says so at the
        call; a Detector with ``tracking=False`` takes frames without a rate, timed None). Every
        argument is checked at the call; a frame that is not an image gives a 'not an image
        array' ``InputError`` when it is reached. (``fps=`` was this argument's old name: it is
        refused, since ``detect``'s ``fps`` samples a video and this one did not.)"""
        if fps is not None:
            raise TypeError(f"detect_frames: fps= is now frame_rate= (the rate your frames were captured at, used "
                            f"only to time them; every frame given is read): pass frame_rate={fps!r}")
        # checked here, at the call, not at the first frame (this returns a generator)
        frame_rate = number("frame_rate", frame_rate, low=0, low_open=True, none=True, note="(frames per second)")
        if frame_rate is not None and not np.isfinite(1.0 / frame_rate):  # (a rate so small no time is finite)
            raise ValueError(f"frame_rate: expected frames per second whose frame times are finite, got {frame_rate!r}")
        if frame_rate is None and self.tracking is not None:
            raise ValueError("frame_rate: needed to track people across frames (the tracking settings are seconds: "
                             f"max_gap {self.tracking.max_gap:g} s, ...; frames without a rate have no time): pass the "
                             "rate your frames were captured at, or use a Detector with tracking=False")
        batch_size = number("batch_size", batch_size, integer=True, low=1)
        beams = number("beams", beams, integer=True, low=1)
        if not isinstance(source, str):
            raise ValueError(f"source: expected a name (a str), got {source!r}")
        decoding = _decoding(explain, grounding)
        return self._frames(frames_in, batch_size, frame_rate, decoding, beams, source, grounding)

    def _frames(self, frames_in, batch_size, frame_rate, decoding, beams, source, grounding) -> Iterator[Faces]:
        tracks = _Tracks(self.tracking, self.predictor)

        def numbered():
            for k, image in enumerate(frames_in):
                frame = in_memory_frame(source, image, k, round(k / frame_rate, 4) if frame_rate else None)
                if frame.error:
                    raise InputError(f"{source} frame {k}: {frame.error}")
                yield frame

        for frame, faces in detections(self.predictor, numbered(), batch_size, decoding, beams, self._workers_pool(),
                                       self.workers, track=tracks, grounding=grounding, seed_every=self._seed_every,
                                       overlap=False):
            table = TableBuilder()
            table.add(frame, faces)
            near = [{"source": source, "frame": frame.frame, "score": round(f.score, 3),
                     "box": [round(v, 1) for v in f.box]} for f in frame.near_misses]
            yield self._faces(table, {"files": 0, "frames": 1, "faces": len(faces),
                                      "frames_without_face": int(not faces), "near_misses": len(near)}, [], None, near)

    @property
    def _seed_every(self) -> int:
        """Frames between tracking's seed frames (``TrackSettings.seed_every``): with MTCNN
        finding faces in videos and tracking on; else 0."""
        if self.tracking is None or self.predictor.detector_name != "mtcnn" or self.predictor.settings.face != "detect":
            return 0
        return self.tracking.seed_every

    def _faces(self, table: TableBuilder, counts: dict, skipped: list, annotator, near=(), videos=None) -> Faces:
        p = self.predictor
        attrs = {"checkpoint": str(p.checkpoint), "counts": counts,
                 "skipped": [{k: v for k, v in s.items() if v is not None} for s in skipped],
                 "near_misses": list(near), "videos": dict(videos or {}),
                 "threshold": p.thresholds.tolist(), "au_window": p.pooling["window_rulers"],
                 "face": self.settings.face, "face_detector": p.detector_name, "min_face_score": p.min_face_score,
                 "tracking": None if self.tracking is None else dataclasses.asdict(self.tracking),
                 "model": type(p.model).__name__, "vision": p.vision.name, "versions": _versions()}
        if annotator is not None:
            attrs["annotated"] = annotator.written
        # the folder relative sources were read from (writers refuse them after a chdir too: one
        # string, not a path per source, since pandas copies attrs on every operation), and this
        # table's id (Faces.concat counts the pieces of one table once)
        with contextlib.suppress(OSError):  # (a working folder deleted since: nothing to resolve against)
            attrs["cwd"] = [os.getcwd()]
        attrs["tables"] = uuid.uuid4().hex
        return Faces.from_columns(table.columns(), attrs)

    @staticmethod
    def _bar(progress):
        from tqdm.auto import tqdm

        return tqdm(desc="detect", unit=" faces", disable=None if progress is None else not progress,
                    dynamic_ncols=True, leave=False)
