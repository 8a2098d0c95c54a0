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
import os
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
            # FFmpeg renders text art as video (a film's .nfo release notes through its tty
            # demuxer): a text file is not a video, whatever FFmpeg makes of it
            real = [v for v in container.streams.video if v.codec_context.name not in TEXT_CODECS]
            return "video" if real else "unknown"
    except Exception:  # noqa: BLE001 - neither
        return "unknown"


TEXT_CODECS = {"ansi", "bintext", "xbin", "idf"}  # FFmpeg's text-art "video" codecs (tty, bintext, xbin, idf)


def is_video(path) -> bool:
    return kind(path) == "video"


ANIMATED_EXTENSIONS = {".gif", ".webp", ".png", ".apng", ".tif", ".tiff"}


def is_animated(path) -> bool:
    """An image file of several frames (animated GIF/WebP/PNG, multi-page TIFF; by content when
    its extension is not an image's): read like a video."""
    suffix = Path(path).suffix.lower()
    return (suffix in ANIMATED_EXTENSIONS or suffix not in IMAGE_EXTENSIONS) and frame_count(path) > 1


def is_clip(path) -> bool:
    """A video, or an animated image whose frames are a clip's (GIF, WebP, PNG: timed by their
    durations) -- what ``data_type='video'`` takes; a multi-page TIFF's pages are images."""
    if is_video(path):
        return True
    if not is_animated(path):
        return False
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.format != "TIFF"
    except Exception:  # noqa: BLE001 - unreadable: said when it is read
        return False


def _is_image_object(item) -> bool:
    from PIL import Image

    return isinstance(item, (Image.Image, np.ndarray)) or type(item).__name__ == "VideoFrame"


def flatten(inputs) -> list:
    """One input or an iterable of them -> a list of inputs (a 4-D array is a stack of images)."""
    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "OUS":  # df["path"].to_numpy(): paths
        return inputs.ravel().tolist()
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


def _once_per_folder(matches: list[str]) -> list[str]:
    """A recursive glob's matches, each real folder's entries once (the first path that reached
    it): through a link loop a glob lists the same folder again and again."""
    first, out = {}, []
    for p in matches:
        parent = os.path.dirname(p.rstrip("/")) or "."
        if first.setdefault(os.path.realpath(parent), parent) == parent:
            out.append(p)
    return out


def _folder_files(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """(every entry under ``folder`` but its folders, sorted; [(sub-folder, why it could not be
    listed)]): linked folders are followed (a ``photos/2023`` linked to an archive is read as a
    glob ``photos/**/*`` reads it), each real folder once (a loop of links ends)."""
    out, seen, unreadable = [], set(), []

    def said(error: OSError) -> None:  # a sub-folder that cannot be listed: said, as a file is
        unreadable.append((str(error.filename), f"a folder that cannot be read ({error.strerror or error})"))

    for root, dirs, files in os.walk(folder, followlinks=True, onerror=said):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        out += [Path(root) / f for f in files]
    return sorted(out), unreadable


def expand(inputs) -> tuple[list, list[tuple[str, str]]]:
    """(items to read: file paths and ``InMemory`` images, [(input, why nothing was read)]).

    ``inputs``: a path, folder, glob, PIL image or array, or a list of them."""
    items, problems = [], []
    for k, item in enumerate(flatten(inputs)):
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
            listed, unreadable = _folder_files(path)
            problems += unreadable
            wanted = [p for p in listed if p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS]
            found = [str(p) for p in wanted if p.is_file()]
            items += found
            # a link to nothing (or to a folder) named like an image: said, not passed over
            problems += [(str(p), _not_read(p)) for p in wanted if not p.is_file()]
            if not found:
                problems.append((item, "no image or video files in this folder"))
        elif path.is_file():
            items.append(item)
        elif glob.has_magic(item):
            recursive = "**" in item
            matches = sorted(glob.glob(item, recursive=True))
            if recursive:  # each real folder once: a loop of links is not followed to the system's limit
                matches = _once_per_folder(matches)
            found = [p for p in matches if Path(p).is_file()]
            items += found
            # (the folders a recursive glob such as photos/**/* matches are passed over: their files
            # are matched too; a plain glob's folders are said)
            problems += [(p, _not_read(Path(p))) for p in matches
                         if not Path(p).is_file() and not (recursive and Path(p).is_dir())]
            if not matches:
                problems.append((item, "no files match"))
            elif recursive and all(Path(p).is_dir() for p in matches):
                problems.append((item, "only folders match (a folder's files: name the folder, or end the glob in /**/*)"))
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


class Sampler:
    """Which frames ``fps`` (None or 0: all) or ``every`` (every n-th decoded frame) takes, for
    videos and animated images alike. A frame is taken when its time reaches the next sample time
    less half a frame (``interval``): containers round timestamps to their clock (Matroska and
    WebM to milliseconds: a 30 fps clip's second frame is at 0.033 s, before 1/30), so a frame a
    tick early is still the one a rate asks for -- the video's own rate (or more) reads every
    frame, half of it every other one. After a gap, the sample times start again from the frame."""

    def __init__(self, fps: float | None, every: int | None = None):
        self.step, self.every, self.next = (1.0 / fps if fps else 0.0), every, 0.0

    def take(self, index: int, t: float, interval: float) -> bool:
        if self.every and index % self.every or t + max(0.5 * interval, 1e-6) < self.next:
            return False
        self.next = self.next + self.step if self.next + self.step > t else t + self.step
        return True


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
        streams = [v for v in container.streams.video if v.codec_context.name not in TEXT_CODECS]
        if not streams:
            yield Frame(path, error="no video stream" if not container.streams.video else
                        "neither an image nor a video (text, which FFmpeg would render as a video)")
            return
        stream = streams[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or 25)
        tagged = _rotate_tag(stream)
        sampler, index, start, sampled = Sampler(fps, every), -1, None, 0
        unusable: dict[str, list] = {}  # why -> [frames, the first]
        try:
            for frame in container.decode(stream):
                index += 1
                stamp = float(frame.time) if frame.time is not None else index / rate
                start = stamp if start is None else start
                t = stamp - start
                # half of this frame's own duration where the container gives it (a variable-rate
                # video's burst of short frames is not judged by its average rate)
                own = frame.duration * frame.time_base if frame.duration and frame.time_base else None
                if not sampler.take(index, t, float(own) if own else 1.0 / rate):
                    continue
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
    """Frames of an animated image, sampled as ``video_frames`` samples a video; frames without a
    duration (a multi-page TIFF's pages: pages, not a clip) are all read, whatever the rate."""
    sampler, pages = Sampler(fps, every), Sampler(None, every)
    unusable: dict[str, list] = {}  # why -> [frames, the first]
    sampled = 0
    try:
        for index, t, duration, image in image_frames(path):
            if not (sampler if duration is not None else pages).take(index, t, duration or 0.0):
                continue
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
