"""The streaming loop behind ``mf2.Detector`` (and so ``mf2 predict``): frames -> faces ->
batches through the model -> each frame with its predicted faces, in input order.

* Face finding (decoding an image file, dlib's detector and landmarks, the aligned crop) runs
  in a pool of worker threads, ``window`` frames ahead of the model: dlib releases the GIL, so
  it works while the backbone and MF² run their batch.
* With worker threads, a batch runs through the model on a thread of its own while the frames
  of the next one are tracked (one batch in flight; results stay in order); not for a live
  source (``Detector.detect_frames``), whose results come as soon as their batch is through.
* Faces of consecutive frames and files are batched (``batch_size`` faces per forward pass;
  a frame without a face counts as one, so a faceless video still moves on).
* A frame's pixels and face crops are dropped as soon as they are used (``keep_images`` keeps a
  frame's pixels until the caller has drawn it), so a long video streams in bounded memory:
  at most ``window`` frames are decoded ahead, and one batch is held.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Iterable, Iterator

from mf2.prediction.predictor import AlignedFace, Predictor
from mf2.prediction.sources import Frame


def ordered_map(fn, items: Iterable, pool: Executor | None, window: int) -> Iterator:
    """(item, fn(item)) in the order of ``items``, with at most ``window`` calls in flight on
    ``pool`` (None: called here, one at a time). Results that are ready are handed on at once,
    so a slow source (a camera) is not held back to fill the window."""
    if pool is None:
        for item in items:
            yield item, fn(item)
        return
    queue: deque = deque()
    try:
        for item in items:
            queue.append((item, pool.submit(fn, item)))
            while queue and (len(queue) >= window or queue[0][1].done()):
                head, future = queue.popleft()
                yield head, future.result()
        while queue:
            head, future = queue.popleft()
            yield head, future.result()
    finally:  # the consumer stopped early: nothing more starts
        for _, future in queue:
            future.cancel()


def _chunks(items: Iterable, n: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _seeded(frames: Iterable[Frame], every: int) -> Iterator[Frame]:
    """The frames, each video's first and every ``every``-th after it marked ``seed``."""
    source, n = None, 0
    for frame in frames:
        if frame.frame is not None:
            n = 0 if frame.source != source else n + 1
            source = frame.source
            frame.seed = n % every == 0
        yield frame


def detections(predictor: Predictor, frames: Iterable[Frame], batch_size: int = 32, explain: str | None = None,
               beams: int = 3, pool: Executor | None = None, workers: int = 0, keep_images: bool = False,
               track=None, grounding: str = "heads", seed_every: int = 0,
               overlap: bool = True) -> Iterator[tuple[Frame, list[AlignedFace] | None]]:
    """Each frame with its faces, predicted (largest face first; ``[]``: no face), in order.
    A frame that could not be read comes with ``None`` (and ``frame.error``) as soon as it is met.
    ``pool``: the ``workers`` threads that find faces (None: this thread). ``track(frame, faces)``:
    called in frame order, while the frame's pixels are still there, to set each face's ``track``.
    The near-misses of a frame (faces under the score threshold) are in ``frame.near_misses``.
    ``seed_every``: the first of a video's frames and every ``seed_every``-th after it are seed
    frames (``frame.seed``), where faces are found with the finer cascade (``Predictor.find(...,
    fine=True)``): a person the published cascade misses starts a track there (0: none).
    ``overlap``: with ``pool``, a batch runs through the model on a thread of its own while the
    next one is found and tracked (files and videos); False for a live source, whose results
    should come as soon as their batch is through."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected at least 1, got {batch_size}")

    def find(chunk: list[Frame]):
        readable = [f for f in chunk if f.load() is not None and f.error is None]
        found = {}
        for fine in (False, True):
            part = [f for f in readable if f.seed == fine]
            if part:
                found.update(zip(map(id, part), predictor.find([f.image for f in part], fine=fine)))
        out = []
        for frame in chunk:
            faces, near = found.get(id(frame), (None, []))
            frame.near_misses = near
            if track is None and not keep_images:
                frame.image = None
            out.append(faces)
        return out

    if seed_every:
        frames = _seeded(frames, seed_every)
    window = max(1, (batch_size + 2 * workers) // predictor.detect_batch)  # found faces for the next batch
    # with worker threads, a batch runs through the model on a thread of its own while this one
    # tracks the next batch's frames (dlib's descriptors and the local searches release the GIL as
    # the model does): one batch in flight, so results stay in order and memory stays bounded
    # (``overlap`` False: a live source's batch is handed on as soon as it is through the model,
    # not when the next one is full)
    model = ThreadPoolExecutor(1, thread_name_prefix="mf2-model") if pool is not None and overlap else None
    pending, n_pending, running = [], 0, None

    def predict(batch):
        faces = [f for _, fs in batch for f in fs]
        if model is None:
            predictor.predict(faces, explain, beams, grounding)
            return None, batch
        return model.submit(predictor.predict, faces, explain, beams, grounding), batch

    def done(run):
        if run[0] is not None:
            run[0].result()
        return run[1]

    try:
        for chunk, found in ordered_map(find, _chunks(frames, predictor.detect_batch), pool, window):
            for frame, faces in zip(chunk, found):
                if faces is None:
                    yield frame, None
                    continue
                if track is not None:
                    track(frame, faces)
                    if not keep_images:
                        frame.image = None
                pending.append((frame, faces))
                n_pending += max(1, len(faces))
                if n_pending >= batch_size:
                    if running is not None:
                        yield from done(running)
                    running, pending, n_pending = predict(pending), [], 0
        if running is not None:
            yield from done(running)
            running = None
        yield from done(predict(pending))
    finally:  # the consumer stopped early (or an error): the batch in flight ends before we return
        if model is not None:
            model.shutdown(wait=True, cancel_futures=True)
