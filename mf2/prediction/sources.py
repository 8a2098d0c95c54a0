"""What prediction reads: image files, folders, globs, video files and images already in memory,
one frame at a time.

``expand`` turns the inputs into items (a folder: its image and video files by extension,
recursively, sorted; a glob: its matches, sorted; a file named: itself, whatever its extension;
a PIL image or an RGB array: itself, named ``<image k>`` after its place k in the inputs) and
the inputs that name nothing. ``frames`` yields one ``Frame`` per image and per sampled video
frame: a file is an image or a video by its extension, or by its content when the extension is
neither (``kind``); a video (and an animated image: GIF, WebP, PNG or multi-page TIFF of several
frames) is sampled at ``fps`` frames per second of its own timeline (``fps`` None or 0: every
frame) and streamed, so memory does not grow with its length.

A video frame is what a player shows: the container's display matrix (a phone's portrait clip
is stored sideways with a 90 degree rotation) is applied, and ``Frame.rotation`` /
``Frame.mirrored`` say how. Its ``time`` is seconds since the video's first decoded frame (a
clip cut from a longer stream starts at 0, not at its container timestamp, which is
``Frame.start``).

An image file's pixels are decoded later, by whoever finds its faces (``Frame.load``), so
decoding runs in the face-finding workers. A file that cannot be decoded gives one ``Frame``
with ``error`` set; so does a video that opens but decodes no frame ("no frames could be
decoded"), and the frames of a video that cannot be used (too small, an unsupported pixel
format) give one per reason, with how many frames it held ("image too small (...), 3 of 3
frames"): one input, one skip.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mf2.features.pixels import (ImageError, display_orientation, frame_count, image_frames, load_image, orient,
                                 to_rgb)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif", ".tif", ".tiff",
                    ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga"}
# the containers FFmpeg reads video from, by their usual extensions (a folder's other files are not
# opened; a file given by name is read by its content whatever its extension: ``kind``)
VIDEO_EXTENSIONS = {
    ".mp4", ".m4v", ".mov", ".qt", ".3gp", ".3g2", ".mj2",  # ISO/QuickTime (phones: .mp4, .mov, .3gp)
    ".mkv", ".mk3d", ".webm",  # Matroska
    ".avi", ".divx", ".wmv", ".asf", ".flv", ".f4v", ".ogv", ".mxf", ".gxf", ".dv", ".nut", ".rm", ".rmvb",
    ".mpg", ".mpeg", ".m1v", ".m2v", ".mpv", ".vob", ".ts", ".mts", ".m2ts", ".m2t", ".trp", ".tod", ".wtv",
    ".y4m", ".ivf", ".h264", ".264", ".h265", ".265", ".hevc", ".mjpeg", ".mjpg",  # raw streams
}


class InputError(ValueError):
    """Inputs that give nothing to predict on, as one line."""


@dataclass
class InMemory:
    """An image given as a PIL image or an array, with the name its rows get as ``source``."""

    name: str
    image: object


@dataclass
class Frame:
    source: str  # the file, as found (or an in-memory image's name)
    frame: int | None = None  # video frame index (0-based, in decoding order); None for an image
    time: float | None = None  # seconds since the video's first decoded frame (not the container's clock)
    image: np.ndarray | None = None  # RGB uint8 [H, W, 3], C-contiguous; None until loaded (image files)
    error: str | None = None  # why the input could not be read
    path: str | None = None  # an image file still to decode
    near_misses: list = field(default_factory=list)  # faces found under the score threshold
    seed: bool = False  # a frame where tracking looks for new people with the finer cascade
    rotation: int = 0  # degrees counter-clockwise the video's display matrix turned the frame (0, 90, 180, -90)
    mirrored: bool = False  # and whether it mirrored it left-right after
    start: float | None = None  # a video's clock (seconds) at its first decoded frame, where ``time`` is 0

    def load(self) -> np.ndarray | None:
        """Decode an image file's pixels (once); sets ``error`` instead of raising."""
        if self.image is None and self.error is None and self.path is not None:
            try:
                self.image = load_image(self.path)
            except ImageError as exc:
                self.error = str(exc)
        return self.image


def kind(path) -> str:
    """'video', 'image' or 'unknown': by the extension when it is an image's or a video's (the
    sets above), else by the content -- an image when Pillow identifies it from its header, else
    a video when FFmpeg opens it with a video stream (a file named ``clip.dat`` or ``frames``)."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    from PIL import Image

    try:
        with Image.open(path):
            return "image"
    except Exception:  # noqa: BLE001 - not an image Pillow knows: a video?
        pass
    import av

    try:
        with av.open(str(path)) as container:
            return "video" if container.streams.video else "unknown"
    except Exception:  # noqa: BLE001 - neither
        return "unknown"


def is_video(path) -> bool:
    return kind(path) == "video"


ANIMATED_EXTENSIONS = {".gif", ".webp", ".png", ".apng", ".tif", ".tiff"}


def is_animated(path) -> bool:
    """An image file of several frames (animated GIF/WebP/PNG, multi-page TIFF; by content when
    its extension is not an image's): read like a video."""
    suffix = Path(path).suffix.lower()
    return (suffix in ANIMATED_EXTENSIONS or suffix not in IMAGE_EXTENSIONS) and frame_count(path) > 1


def _is_image_object(item) -> bool:
    from PIL import Image

    return isinstance(item, (Image.Image, np.ndarray)) or type(item).__name__ == "VideoFrame"


def _flatten(inputs) -> list:
    """One input or an iterable of them -> a list of inputs (a 4-D array is a stack of images)."""
    if isinstance(inputs, (str, Path)) or _is_image_object(inputs) and not (
            isinstance(inputs, np.ndarray) and inputs.ndim == 4):
        return [inputs]
    return list(inputs)


def _not_read(path: Path) -> str:
    """Why an input that names something is not read as a file."""
    if path.is_symlink() and not path.exists():  # a link to nothing, or a loop of links
        return "a broken link"
    if path.is_dir():
        return "a folder (a glob's or a folder's matches are read as files)"
    return "not a regular file"  # a FIFO, a device: never read (it could block or never end)


def expand(inputs) -> tuple[list, list[tuple[str, str]]]:
    """(items to read: file paths and ``InMemory`` images, [(input, why nothing was read)]).

    ``inputs``: a path, folder, glob, PIL image or array, or a list of them."""
    items, problems = [], []
    for k, item in enumerate(_flatten(inputs)):
        if _is_image_object(item):
            items.append(InMemory(f"<image {k}>", item))
            continue
        if not isinstance(item, (str, Path)):
            problems.append((f"<input {k}>", f"not a path, PIL image or array ({type(item).__name__})"))
            continue
        item = str(item)
        if not item.strip():  # an unset shell variable: not "the current folder"
            problems.append((repr(item), "an empty path"))
            continue
        path = Path(item)
        if path.is_dir():
            wanted = [p for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS]
            found = [str(p) for p in wanted if p.is_file()]
            items += found
            # a link to nothing (or to a folder) named like an image: said, not passed over
            problems += [(str(p), _not_read(p)) for p in wanted if not p.is_file()]
            if not found:
                problems.append((item, "no image or video files in this folder"))
        elif path.is_file():
            items.append(item)
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            found = [p for p in matches if Path(p).is_file()]
            items += found
            problems += [(p, _not_read(Path(p))) for p in matches if not Path(p).is_file()]
            if not matches:
                problems.append((item, "no files match"))
        elif path.is_symlink() or path.exists():
            problems.append((item, _not_read(path)))
        else:
            problems.append((item, "missing file"))
    seen, unique = {}, []
    for item in items:  # a file named twice (a folder and a glob in it, a link, ./a.jpg) is read once, and said so
        if isinstance(item, str):
            try:
                st = Path(item).stat()
                key = (st.st_dev, st.st_ino)
            except OSError:
                key = item
            if key in seen:
                if seen[key] != item:
                    problems.append((item, f"the same file as {seen[key]} (read once)"))
                continue
            seen[key] = item
        unique.append(item)
    return unique, problems


def as_rgb(image) -> np.ndarray:
    """A PIL image, an array of any dtype and layout, or a decoded video frame -> contiguous RGB
    uint8 [H, W, 3] (``mf2.features.pixels.to_rgb``, the one conversion every input goes through)."""
    return to_rgb(image)


def in_memory_frame(name: str, image, frame: int | None = None, time: float | None = None) -> Frame:
    try:
        return Frame(name, frame, time, as_rgb(image))
    except ImageError as exc:
        return Frame(name, frame, time, error=str(exc))


def video_frames(path: str, fps: float | None, every: int | None = None):
    """Frames of a video at ``fps`` (None or 0: all), or every ``every``-th decoded frame,
    decoded one at a time, each as a player shows it (the container's display rotation applied)
    and timed in seconds since the first decoded frame. Frames that decode but cannot be used
    (too small, an unsupported pixel format) are one ``Frame`` with ``error`` per reason, after
    the others, counting them; a video that opens but decodes no frame is one too."""
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
        tagged = _rotate_tag(stream)
        step = 1.0 / fps if fps else 0.0
        next_time, index, start, sampled = 0.0, -1, None, 0
        unusable: dict[str, list] = {}  # why -> [frames, the first]
        try:
            for frame in container.decode(stream):
                index += 1
                stamp = float(frame.time) if frame.time is not None else index / rate
                start = stamp if start is None else start
                t = stamp - start
                if every and index % every:
                    continue
                if t + 1e-6 < next_time:
                    continue
                # the next sample time; after a gap in the video (or with step 0), from this frame
                next_time = next_time + step if next_time + step > t else t + step
                sampled += 1
                turn = display_orientation(frame)
                try:
                    image = to_rgb(frame)
                    if turn == (0, False) and tagged:  # an older FFmpeg: the rotation as a tag only
                        turn, image = (tagged, False), np.ascontiguousarray(orient(image, tagged))
                except ImageError as exc:
                    unusable.setdefault(str(exc), [0, index])[0] += 1
                    continue
                yield Frame(path, index, round(t, 4), image, rotation=turn[0], mirrored=turn[1], start=round(start, 6))
        except av.error.FFmpegError as exc:
            yield from _unusable(path, unusable, sampled)
            yield Frame(path, index + 1, error=f"video decoding stopped ({str(exc).splitlines()[0]})")
            return
        yield from _unusable(path, unusable, sampled)
        if index < 0:
            yield Frame(path, error="no frames could be decoded")


def _rotate_tag(stream) -> int:
    """The degrees counter-clockwise of a stream's ``rotate`` tag (FFmpeg before 7 gave a track's
    rotation as this tag, clockwise); 0 without one."""
    try:
        return (0, 90, 180, -90)[round(-float(stream.metadata.get("rotate", 0)) / 90) % 4]
    except (TypeError, ValueError):
        return 0


def _unusable(path: str, unusable: dict, sampled: int):
    """One skip per reason the frames of a video could not be used, counting them: a video of
    frames too small is one skipped input, not one per frame."""
    for why, (n, first) in unusable.items():
        yield Frame(path, first, error=f"{why}, {n} of {sampled} frames" if sampled > 1 else why)


def animated_frames(path: str, fps: float | None, every: int | None = None):
    """Frames of an animated image, sampled as ``video_frames`` samples a video."""
    step = 1.0 / fps if fps else 0.0
    next_time = 0.0
    unusable: dict[str, list] = {}  # why -> [frames, the first]
    sampled = 0
    try:
        for index, t, image in image_frames(path):
            if every and index % every or t + 1e-6 < next_time:
                continue
            next_time = next_time + step if next_time + step > t else t + step
            sampled += 1
            if isinstance(image, ImageError):
                unusable.setdefault(str(image), [0, index])[0] += 1
            else:
                yield Frame(path, index, t, image)
    except (OSError, SyntaxError, ValueError) as exc:
        yield from _unusable(path, unusable, sampled)
        yield Frame(path, error=f"unreadable image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
        return
    yield from _unusable(path, unusable, sampled)


def video_frame(path: str, index: int) -> np.ndarray:
    """Frame ``index`` (decoding order) of a video or an animated image, RGB uint8 [H, W, 3];
    decodes up to it."""
    for f in (video_frames(path, None) if is_video(path) else animated_frames(path, None)):
        if f.error:  # (unusable frames are said after the usable ones)
            raise ImageError(f"{path}: {f.error}")
        if f.frame == index:
            return f.image
    raise ImageError(f"{path}: no frame {index}")


def frames(items: list, fps: float | None, every: int | None = None):
    """Every frame to predict on, in the order of ``items`` (paths and ``InMemory`` images)."""
    for item in items:
        if isinstance(item, InMemory):
            yield in_memory_frame(item.name, item.image)
            continue
        what = kind(item)
        if what == "video":
            yield from video_frames(item, fps, every)
        elif what == "unknown":
            yield Frame(item, error="neither an image nor a video (by its content)")
        elif is_animated(item):  # its frames, on the clock of their own durations
            yield from animated_frames(item, fps, every)
        else:
            yield Frame(item, path=item)
