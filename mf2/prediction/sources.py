"""What ``mf2 predict`` reads: images, folders, globs and video files, one frame at a time.

``expand`` turns the command line into files (a folder: its image and video files, recursively,
sorted; a glob: its matches, sorted) and the inputs that name nothing. ``frames`` decodes them
lazily: an image is one frame; a video is sampled at ``fps`` frames per second of its own
timeline (``fps`` None or 0: every frame) and streamed, so memory does not grow with its
length. A file that cannot be decoded yields one ``Frame`` with ``error`` set.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mf2.features.faces import ImageError, load_image

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}


@dataclass
class Frame:
    source: str  # the file, as found
    frame: int | None = None  # video frame index (0-based, in decoding order); None for an image
    time: float | None = None  # seconds into the video
    image: np.ndarray | None = None  # RGB uint8 [H, W, 3]
    error: str | None = None  # why the file could not be read


def is_video(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def expand(inputs) -> tuple[list[str], list[tuple[str, str]]]:
    """(files to read, [(input, why nothing was read)]) for the command line's INPUTs."""
    files, problems = [], []
    for item in inputs:
        item = str(item)
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
            files += found
            if not found:
                problems.append((item, "no image or video files in this folder"))
        elif path.is_file():
            files.append(item)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file())
            files += found
            if not found:
                problems.append((item, "no files match"))
        else:
            problems.append((item, "missing file"))
    return list(dict.fromkeys(files)), problems


def video_frames(path: str, fps: float | None):
    """Frames of a video at ``fps`` (None or 0: all), decoded one at a time."""
    import av

    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as exc:
        yield Frame(path, error=f"unreadable video ({str(exc).splitlines()[0]})")
        return
    with container:
        if not container.streams.video:
            yield Frame(path, error="no video stream")
            return
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or 25)
        step = 1.0 / fps if fps else 0.0
        next_time, index = 0.0, -1
        try:
            for frame in container.decode(stream):
                index += 1
                t = float(frame.time) if frame.time is not None else index / rate
                if t + 1e-6 < next_time:
                    continue
                # the next sample time; after a gap in the video (or with step 0), from this frame
                next_time = next_time + step if next_time + step > t else t + step
                yield Frame(path, index, round(t, 4), frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as exc:
            yield Frame(path, index + 1, error=f"video decoding stopped ({str(exc).splitlines()[0]})")


def frames(files: list[str], fps: float | None):
    """Every frame to predict on, in the order of ``files``."""
    for path in files:
        if is_video(path):
            yield from video_frames(path, fps)
            continue
        try:
            yield Frame(path, image=load_image(path))
        except ImageError as exc:
            yield Frame(path, error=str(exc))
