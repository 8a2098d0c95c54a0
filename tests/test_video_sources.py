"""Videos as a player shows them, found and counted (a stranger's probe of ``mf2.Detector`` /
``mf2 predict`` on videos): the container's display rotation is applied; ``time`` counts from
the first decoded frame; a video that decodes no frame, or whose frames are all too small, is
one counted skip with its reason; a folder's .ts/.3gp/.mxf/... are found, and a file named
with an unknown extension is read by its content; ``skip_frames`` with ``fps`` is refused;
uint16 arrays of 8-bit values are not made near black; repeated timestamps keep one track."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import mf2
from mf2.cli.main import main
from mf2.features.pixels import display_orientation, orient, to_rgb
from mf2.prediction.sources import InputError, expand, frames, kind, video_frames


@pytest.fixture(scope="module")
def face():
    from skimage.data import astronaut

    return np.ascontiguousarray(astronaut()[:256, 64:320])  # her face, upright, 256 x 256


@pytest.fixture(scope="module")
def detector(pretrained):
    with mf2.Detector.from_run(pretrained / "run", device="cpu", num_workers=0) as det:
        yield det


def clip(path, images, *, rate=10, codec="mpeg4", start=0, rotation=None, fmt=None, **options):
    """A clip of ``images`` (RGB uint8) at ``rate`` frames/s, its first timestamp ``start``
    frames in, with a display matrix turning it ``rotation`` degrees counter-clockwise."""
    import av

    h, w = images[0].shape[:2]
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.height, stream.width, stream.pix_fmt = h, w, "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for k, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = start + k
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _cli(*args):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


# -- 1. the display rotation of a phone's clip ------------------------------------------------------

def test_a_rotated_phone_clip_is_read_as_a_player_shows_it(detector, face, tmp_path):
    """A portrait phone clip is stored sideways with a 90 degree display matrix: its face was
    sideways (0 faces); it is turned, recorded, and the face is found in every frame."""
    import av

    path = clip(tmp_path / "portrait.mp4", [np.rot90(face, -1)] * 3, rotation=90)  # stored turned clockwise
    with av.open(str(path)) as video:
        decoded = next(video.decode(video=0))
    assert display_orientation(decoded) == (90, False)
    assert np.abs(to_rgb(decoded).astype(int) - face).mean() < 8  # PyAV frames (detect_frames) too
    read = list(video_frames(str(path), None))
    assert [(f.rotation, f.mirrored, f.image.shape) for f in read] == [(90, False, (256, 256, 3))] * 3
    assert np.abs(read[0].image.astype(int) - face).mean() < 8
    faces = detector.detect(path, fps=0, progress=False)
    assert faces.status.tolist() == ["ok"] * 3
    assert faces.attrs["videos"] == {str(path): {"rotation": 90, "mirrored": False, "start_time": 0.0}}
    # a non-square frame: the boxes are in the turned frame's pixels (its width is the stored height)
    wide = np.full((256, 320, 3), 90, np.uint8)
    wide[:, 32:288] = np.rot90(face, 1)
    path = clip(tmp_path / "upside.mp4", [wide] * 2, rotation=-90)
    faces = detector.detect(path, fps=0, progress=False)
    assert faces.status.tolist() == ["ok"] * 2 and faces.attrs["videos"][str(path)]["rotation"] == -90
    assert (faces.y + faces.h).max() <= 320 and (faces.x + faces.w).max() <= 256


def test_every_display_matrix_is_one_of_the_eight_orientations(tmp_path):
    """The eight matrices PyAV writes (a quarter turn counter-clockwise, then optionally mirrored
    left-right: the EXIF orientations) -> the frame a player shows, as FFmpeg's autorotation
    turns it."""
    import av

    image = np.zeros((16, 24, 3), np.uint8)
    image[:4, :8] = 255
    image[:4, 8:12, 0] = 255  # a corner that tells every orientation apart
    for degrees in (0, 90, 180, -90):
        for hflip in (False, True):
            path = tmp_path / f"o{degrees}{hflip}.mkv"
            with av.open(str(path), "w") as container:
                stream = container.add_stream("libx264", rate=10, options={"qp": "0"})
                stream.width, stream.height, stream.pix_fmt = 24, 16, "yuv444p"
                stream.set_display_rotation(degrees, hflip=hflip)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
                container.mux(stream.encode())
            expected = np.rot90(image, degrees // 90)
            expected = expected[:, ::-1] if hflip else expected
            [frame] = video_frames(str(path), None)
            assert (frame.rotation, frame.mirrored) == (degrees, hflip)
            assert frame.image.shape == expected.shape and np.abs(frame.image.astype(int) - expected).max() <= 2


# -- 2. a video that opens but decodes nothing ---------------------------------------------------------

def _no_keyframes(path, tmp_path, face):
    """An H.264 clip cut without its keyframe: it opens, has a video stream, decodes no frame."""
    import av

    full = clip(tmp_path / "full.mkv", [face] * 5, codec="libx264")
    with av.open(str(full)) as src, av.open(str(path), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.dts is not None and not packet.is_keyframe:
                packet.stream = out
                dst.mux(packet)
    return path


def test_a_video_that_decodes_no_frame_is_a_counted_skip(detector, face, tmp_path):
    cut = _no_keyframes(tmp_path / "cut.mkv", tmp_path, face)
    assert [(f.frame, f.error) for f in video_frames(str(cut), None)] == [(None, "no frames could be decoded")]
    photo = tmp_path / "face.png"
    Image.fromarray(face).save(photo)
    faces = detector.detect([photo, cut], progress=False)
    assert faces.attrs["skipped"] == [{"source": str(cut), "error": "no frames could be decoded"}]
    with pytest.raises(InputError, match=r"nothing could be read \(1 inputs skipped\)"):
        detector.detect(cut, progress=False)
    result = _cli("--checkpoint", detector.run, photo, cut, "--out", tmp_path / "out.csv", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert f"skipped {cut}: no frames could be decoded" in result.output and "1 skipped" in result.output


# -- 3. containers by extension, and files by content ----------------------------------------------------

def test_a_folder_finds_every_common_video_container(tmp_path):
    names = ["a.ts", "b.mts", "c.m2ts", "d.3gp", "e.ogv", "f.mxf", "g.vob", "h.3g2", "i.MTS", "j.mp4", "k.jpg"]
    for name in names:
        (tmp_path / name).write_bytes(b"\0")
    (tmp_path / "notes.txt").write_text("not read")
    items, problems = expand(tmp_path)
    assert sorted(items) == sorted(str(tmp_path / n) for n in names) and problems == []
    assert [kind(tmp_path / n) for n in names] == ["video"] * 10 + ["image"]


def test_a_file_named_with_an_unknown_extension_is_read_by_its_content(detector, face, tmp_path):
    video = clip(tmp_path / "recording.dat", [face] * 2, fmt="matroska")
    photo = tmp_path / "photo.upload"
    Image.fromarray(face).save(photo, format="PNG")
    text = tmp_path / "notes.xyz"
    text.write_text("neither\n" * 100)
    assert [kind(p) for p in (video, photo, text)] == ["video", "image", "unknown"]
    got = [(f.source, f.frame, f.error) for f in frames([str(video), str(photo), str(text)], None)]
    assert got == [(str(video), 0, None), (str(video), 1, None), (str(photo), None, None),
                   (str(text), None, "neither an image nor a video (by its content)")]
    faces = detector.detect([video, photo, text], fps=0, progress=False)
    assert faces.status.tolist() == ["ok"] * 3 and faces.frame.tolist()[:2] == [0, 1]
    assert faces.attrs["skipped"] == [{"source": str(text), "error": "neither an image nor a video (by its content)"}]
    assert len(detector.detect_video(video, progress=False)) == 2  # data_type knows it is a video


# -- 5. time since the first frame ------------------------------------------------------------------------

def test_time_counts_from_the_first_decoded_frame(detector, face, tmp_path):
    """A clip cut from a longer stream starts at 5 s on its container's clock: its times were
    5.0, 5.1, ... in the table and the OpenFace CSV."""
    for name in ("cut.mkv", "cut.mp4", "cut.ts"):
        path = clip(tmp_path / name, [face] * 4, start=50)
        read = list(video_frames(str(path), None))
        assert [f.time for f in read] == [0.0, 0.1, 0.2, 0.3] and read[0].start == 5.0, name
        assert [f.time for f in video_frames(str(path), 5)] == [0.0, 0.2], name  # sampled on the same clock
    faces = detector.detect(path, fps=0, progress=False)
    assert faces.time.tolist() == [0.0, 0.1, 0.2, 0.3]
    assert faces.attrs["videos"][str(path)]["start_time"] == 5.0
    [csv] = faces.to_openface(tmp_path / "openface.csv")
    import pandas as pd

    assert pd.read_csv(csv, skipinitialspace=True)["timestamp"].tolist() == [0.0, 0.1, 0.2, 0.3]


# -- 6. frames too small: one input, one skip ---------------------------------------------------------------

def test_a_video_of_tiny_frames_is_one_skip_with_its_frame_count(detector, face, tmp_path):
    tiny = clip(tmp_path / "tiny.mp4", [np.zeros((4, 4, 3), np.uint8)] * 3)
    photo = tmp_path / "face.png"
    Image.fromarray(face).save(photo)
    faces = detector.detect([photo, tiny], fps=0, progress=False)
    assert faces.attrs["skipped"] == [{"source": str(tiny), "frame": 0,
                                       "error": "image too small (4x4 px, at least 8 px a side), 3 of 3 frames"}]
    with pytest.raises(InputError, match=r"\(1 inputs skipped\)"):
        detector.detect(tiny, fps=0, progress=False)
    result = _cli("--checkpoint", detector.run, photo, tiny, "--fps", "0", "--out", tmp_path / "o.csv", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "1 skipped" in result.output and "3 of 3 frames" in result.output


# -- 7. two samplings asked for at once ------------------------------------------------------------------------

def test_skip_frames_and_fps_together_are_refused(detector, face, tmp_path):
    path = clip(tmp_path / "c.mp4", [face] * 4)
    for call in (lambda: detector.detect(path, skip_frames=2, fps=2, progress=False),
                 lambda: detector.detect_video(path, skip_frames=2, fps=5, progress=False)):
        with pytest.raises(ValueError, match="skip_frames=2 and fps=.*give one"):
            call()
    assert detector.detect(path, skip_frames=2, progress=False).frame.tolist() == [0, 2]  # fps left at its default
    assert detector.detect(path, skip_frames=3, fps=0, progress=False).frame.tolist() == [0, 3]
    assert detector.detect(path, progress=False).frame.tolist() == [0]  # the default 1 frame/s of a 0.4 s clip


# -- 8. repeated timestamps --------------------------------------------------------------------------------------

def test_frames_with_one_timestamp_keep_one_track(detector, face):
    """frame_rate=100000 rounds the first frames' times to 0.0: each frame's face was a new track."""
    per_frame = list(detector.detect_frames([face] * 3, frame_rate=100000))
    loop = mf2.Faces.concat(per_frame)
    assert loop.time.tolist() == [0.0, 0.0, 0.0] and loop.track.tolist() == [0, 0, 0]


# -- 4. uint16 arrays of 8-bit values ------------------------------------------------------------------------------

def test_a_uint16_array_of_8_bit_values_is_not_made_black(detector, face):
    """``astype(np.uint16)`` of an 8-bit frame was divided by 257 (near black, no face)."""
    assert np.array_equal(to_rgb(face.astype(np.uint16)), face)
    assert np.array_equal(to_rgb(face.astype(np.uint16) * 257), face)  # 16-bit values: still 16-bit
    [faces] = detector.detect_frames([face.astype(np.uint16)], frame_rate=25)
    assert faces.status.tolist() == ["ok"]


def test_an_older_ffmpegs_rotate_tag_is_applied_too(face, tmp_path, monkeypatch):
    """FFmpeg before 7 gave a track's rotation as the stream's ``rotate`` tag (clockwise degrees)
    and no matrix on the frames. This FFmpeg cannot write the tag, so the clip has no matrix and
    the tag's reading is monkeypatched: 'rotate' 270 -> turned 90 degrees counter-clockwise."""
    from mf2.prediction import sources

    assert sources._rotate_tag(type("S", (), {"metadata": {"rotate": "270"}})()) == 90
    assert sources._rotate_tag(type("S", (), {"metadata": {"rotate": "90"}})()) == -90
    assert sources._rotate_tag(type("S", (), {"metadata": {}})()) == 0
    path = clip(tmp_path / "old.mp4", [np.rot90(face, -1)] * 2)
    monkeypatch.setattr(sources, "_rotate_tag", lambda stream: 90)
    read = list(video_frames(str(path), None))
    assert [(f.rotation, f.image.shape) for f in read] == [(90, (256, 256, 3))] * 2
    assert np.abs(read[0].image.astype(int) - face).mean() < 8
