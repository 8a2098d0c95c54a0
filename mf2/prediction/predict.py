"""``mf2 predict``: a trained run on new images and videos, one row per face (SPEC §9).

Frames stream from ``sources`` through the ``Predictor`` in batches of ``batch_size`` faces and
are then dropped (``annotate`` keeps a batch's frames until they are drawn), so a long video
streams in bounded memory. Rows go to a ``RowWriter`` as they come.
"""

from __future__ import annotations

from mf2.prediction.annotate import Annotator
from mf2.prediction.predictor import Predictor, PredictSettings
from mf2.prediction.sources import expand, frames
from mf2.prediction.writers import RowWriter, face_row


def predict(run, inputs, out=None, annotate=None, fps: float | None = 1.0, settings: PredictSettings | None = None,
            progress=None, log=print) -> dict:
    """Predict every face of ``inputs`` (images, folders, globs, videos); returns a summary."""
    settings = settings or PredictSettings()
    if settings.batch_size < 1:
        raise ValueError(f"batch_size: expected at least 1, got {settings.batch_size}")
    if fps is not None and fps < 0:
        raise ValueError(f"fps: expected a positive number (0 = every frame), got {fps}")
    files, problems = expand(inputs)
    skipped = [{"source": item, "error": why} for item, why in problems]
    for item in skipped:
        log(f"skipped {item['source']}: {item['error']}")
    if not files:
        raise ValueError("no input files to predict on" + (f" ({skipped[0]['source']}: {skipped[0]['error']})"
                                                           if skipped else ""))
    predictor = Predictor(run, settings)
    writer = RowWriter(out, str(predictor.checkpoint))
    annotator = Annotator(annotate, settings.threshold, predictor.pooling["window_rulers"]) if annotate else None
    counts = {"files": len(files), "frames": 0, "faces": 0, "frames_without_face": 0}
    pending, n_pending, last_source = [], 0, None

    def flush():
        nonlocal pending, n_pending
        predictor.predict([f for _, faces in pending for f in faces])
        for frame, faces in pending:
            if not faces:
                writer.write({"source": frame.source, "frame": frame.frame, "time": frame.time, "face": None,
                              "status": "no face"})
            for i, f in enumerate(faces):
                writer.write(face_row(frame, i, f))
            if annotator:
                annotator.write(frame, faces)
        pending, n_pending = [], 0

    try:
        for frame in frames(files, fps):
            if progress and frame.source != last_source:
                progress(1)
                last_source = frame.source
            if frame.error:
                skipped.append({"source": frame.source, "frame": frame.frame, "error": frame.error})
                log(f"skipped {frame.source}" + (f" at frame {frame.frame}" if frame.frame is not None else "") +
                    f": {frame.error}")
                continue
            faces = predictor.faces(frame.image)
            counts["frames"] += 1
            counts["faces"] += len(faces)
            counts["frames_without_face"] += not faces
            if not annotator:
                frame.image = None
            pending.append((frame, faces))
            n_pending += max(1, len(faces))
            if n_pending >= settings.batch_size:
                flush()
        flush()
    finally:
        writer.close([{k: v for k, v in s.items() if v is not None} for s in skipped])
    return {**counts, "rows": writer.rows, "skipped": len(skipped), "out": str(out) if out else None,
            "annotated": annotator.written if annotator else 0, "checkpoint": str(predictor.checkpoint)}
