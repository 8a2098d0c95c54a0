"""The streaming loop behind ``mf2.Detector`` (and so ``mf2 predict``): frames -> faces ->
batches through the model -> each frame with its predicted faces, in input order.

* Face finding (decoding an image file, dlib's detector and landmarks, the aligned crop) runs
  in a pool of worker threads, ``window`` frames ahead of the model: dlib releases the GIL, so
  it works while the backbone and MF² run their batch.
* Faces of consecutive frames and files are batched (``batch_size`` faces per forward pass;
  a frame without a face counts as one, so a faceless video still moves on).
* A frame's pixels and face crops are dropped as soon as they are used (``keep_images`` keeps a
  frame's pixels until the caller has drawn it), so a long video streams in bounded memory:
  at most ``window`` frames are decoded ahead, and one batch is held.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Executor
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


def detections(predictor: Predictor, frames: Iterable[Frame], batch_size: int = 32, explain: str | None = None,
               beams: int = 3, pool: Executor | None = None, workers: int = 0, keep_images: bool = False,
               grounding: str = "heads") -> Iterator[tuple[Frame, list[AlignedFace] | None]]:
    """Each frame with its faces, predicted (largest face first; ``[]``: no face), in order.
    A frame that could not be read comes with ``None`` (and ``frame.error``) as soon as it is met.
    ``pool``: the ``workers`` threads that find faces (None: this thread)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected at least 1, got {batch_size}")

    def find(frame: Frame):
        image = frame.load()
        if frame.error is not None:
            return None
        faces = predictor.faces(image)
        if not keep_images:
            frame.image = None
        return faces

    window = batch_size + 2 * workers  # enough found faces for the next batch while this one runs
    pending, n_pending = [], 0
    for frame, faces in ordered_map(find, frames, pool, window):
        if faces is None:
            yield frame, None
            continue
        pending.append((frame, faces))
        n_pending += max(1, len(faces))
        if n_pending >= batch_size:
            predictor.predict([f for _, fs in pending for f in fs], explain, beams, grounding)
            yield from pending
            pending, n_pending = [], 0
    predictor.predict([f for _, fs in pending for f in fs], explain, beams, grounding)
    yield from pending
