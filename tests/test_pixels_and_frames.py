"""Pixels as they are (issue 21) and frames as they are (issue 22): one conversion
(``mf2.features.pixels.to_rgb``) for image files of every mode and bit depth, arrays of every
dtype and layout, and decoded video frames of every pixel format and width.

* Each mode decodes to the 8-bit picture it holds (16-bit grey PNG and TIFF, 16-bit RGB, 32-bit
  integer and float, palette, alpha, CMYK, LA, 1-bit), or is a counted skip "unsupported pixel
  format" -- never a clipped or blackened face; a 16-bit PNG gives the faces, probabilities and
  cached features of its 8-bit copy.
* Video frames at widths 600-1000 that are not multiples of 16, in yuv420p, yuv444p and grey:
  the faces found in each frame equal those found in the same frames passed as images, on
  every call.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

import mf2
from .conftest import store_arrays, text_encoder_args
from mf2.cli.main import main
from mf2.data.manifest import read_manifest, write_manifest
from mf2.features.face_align import FaceFinder
from mf2.features.pixels import ImageError, UnsupportedPixels, load_image, to_rgb


@pytest.fixture(scope="module")
def photo():
    from skimage.data import astronaut

    return astronaut()


def png16(path, array: np.ndarray) -> None:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA by the channel count), written by hand: Pillow
    does not write 16-bit colour PNGs."""
    h, w = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _grey(photo):
    return np.asarray(Image.fromarray(photo).convert("L"))


def test_the_16_bit_grey_png_of_issue_21_is_not_clipped(photo, tmp_path):
    grey = _grey(photo)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode == "I;16" and np.asarray(im.convert("RGB")).mean() > 220  # what Pillow alone gives
    rgb = load_image(tmp_path / "g16.png")
    assert rgb.mean() == pytest.approx(grey.mean(), abs=0.01)  # 115.4, not 226.8
    assert np.array_equal(rgb, np.repeat(grey[..., None], 3, 2))


def _files(photo, tmp_path):
    """(file, the 8-bit RGB picture it holds) for every mode and bit depth."""
    import tifffile

    grey = _grey(photo)
    grey3 = np.repeat(grey[..., None], 3, 2)
    out = {}

    def add(name, expected, write):
        write(tmp_path / name)
        out[name] = expected

    add("grey16.png", grey3, lambda p: Image.fromarray(grey.astype(np.uint16) * 257).save(p))
    add("grey16.tif", grey3, lambda p: Image.fromarray(grey.astype(np.uint16) * 257).save(p))
    add("rgb16.png", photo, lambda p: png16(p, photo.astype(np.uint16) * 257))
    add("rgb16.tif", photo, lambda p: tifffile.imwrite(p, photo.astype(np.uint16) * 257))
    add("la16.png", grey3, lambda p: png16(p, np.stack([grey.astype(np.uint16) * 257,
                                                        np.full(grey.shape, 65535, np.uint16)], -1)))
    add("int32.tif", grey3, lambda p: Image.fromarray(grey.astype(np.int32) * 257, mode="I").save(p))
    add("int32_8bit_values.tif", grey3, lambda p: Image.fromarray(grey.astype(np.int32), mode="I").save(p))
    add("float01.tif", grey3, lambda p: Image.fromarray(grey.astype(np.float32) / 255, mode="F").save(p))
    add("float255.tif", grey3, lambda p: Image.fromarray(grey.astype(np.float32), mode="F").save(p))
    add("palette.png", None, lambda p: Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE).save(p))
    add("palette_transparent.png", None, lambda p: Image.fromarray(photo).convert(
        "P", palette=Image.Palette.ADAPTIVE).save(p, transparency=255))
    add("rgba.png", photo, lambda p: Image.fromarray(np.dstack([photo, np.full(grey.shape, 255, np.uint8)])).save(p))
    add("la.png", grey3, lambda p: Image.fromarray(np.dstack([grey, np.full(grey.shape, 255, np.uint8)])).save(p))
    add("cmyk.tif", photo, lambda p: Image.fromarray(photo).convert("CMYK").save(p))
    add("cmyk.jpg", None, lambda p: Image.fromarray(photo).convert("CMYK").save(p, quality=95))
    add("onebit.png", np.repeat(np.where(grey >= 128, 255, 0).astype(np.uint8)[..., None], 3, 2),
        lambda p: Image.fromarray(grey >= 128).save(p))
    # transparent around the face: composited over white, the face as it is
    alpha = np.zeros(grey.shape, np.uint8)
    alpha[40:300, 100:360] = 255
    over_white = np.where(alpha[..., None] == 255, photo, 255).astype(np.uint8)
    add("cutout.png", over_white, lambda p: Image.fromarray(np.dstack([photo, alpha])).save(p))
    add("all_transparent.png", photo, lambda p: Image.fromarray(np.dstack([photo, np.zeros_like(grey)])).save(p))
    return out


def test_every_mode_decodes_to_the_picture_it_holds(photo, tmp_path):
    for name, expected in _files(photo, tmp_path).items():
        rgb = load_image(tmp_path / name)
        assert rgb.dtype == np.uint8 and rgb.shape == photo.shape and rgb.flags.c_contiguous, name
        # a palette and a CMYK JPEG: the colours Pillow maps them to (8-bit modes it converts right)
        reference = expected if expected is not None else np.asarray(Image.open(tmp_path / name).convert("RGB"))
        if name == "palette_transparent.png":  # its transparent colour shows the white behind it
            rgba = np.asarray(Image.open(tmp_path / name).convert("RGBA"))
            assert (rgba[..., 3] == 0).any()
            reference = np.where(rgba[..., 3:] == 0, 255, rgba[..., :3])
        error = np.abs(rgb.astype(int) - reference.astype(int)).mean()
        assert error < 0.51, (name, error)


def test_arrays_of_every_dtype_and_layout(photo):
    grey = _grey(photo)
    grey3 = np.repeat(grey[..., None], 3, 2)
    cases = {
        "uint16": (photo.astype(np.uint16) * 257, photo),
        # an array does not say its bit depth: uint16 values all within 0-255 are 8-bit (astype(np.uint16)
        # of an 8-bit frame was divided by 257, near black), as for every integer array
        "uint16 8-bit values": (photo.astype(np.uint16), photo),
        "uint16 16-bit values": (np.maximum(photo.astype(np.uint16) * 257, 256), photo),
        "uint32 8-bit values": (photo.astype(np.uint32), photo),
        "float32 0-1": (photo.astype(np.float32) / 255, photo),
        "float64 0-255": (photo.astype(np.float64), photo),
        "int64 8-bit values": (photo.astype(np.int64), photo),
        "int32 16-bit values": (grey.astype(np.int32) * 257, grey3),
        "bool": (grey >= 128, np.repeat(np.where(grey >= 128, 255, 0).astype(np.uint8)[..., None], 3, 2)),
        "grey [H, W, 1]": (grey[..., None], grey3),
        "grey+alpha [H, W, 2]": (np.dstack([grey, np.full_like(grey, 255)]), grey3),
        "rgba": (np.dstack([photo, np.full_like(grey, 255)]), photo),
        "bgr view (negative stride)": (photo[..., ::-1][..., ::-1], photo),
        "every other row (strided)": (photo[::2], photo[::2]),
        "Fortran order": (np.asfortranarray(photo), photo),
        "row-padded like PyAV": (np.lib.stride_tricks.as_strided(
            np.pad(photo.reshape(512, -1), ((0, 0), (0, 12))).ravel(), photo.shape, (512 * 3 + 12, 3, 1)), photo),
    }
    for name, (array, expected) in cases.items():
        rgb = to_rgb(array)
        assert rgb.flags.c_contiguous and rgb.dtype == np.uint8 and rgb.shape[2] == 3, name
        assert np.abs(rgb.astype(int) - expected.astype(int)).max() <= 1, name
    for bad, why in ((np.full((64, 64), np.nan), "NaN"), (np.full((64, 64), -0.5), "float values"),
                     (np.full((64, 64), 70000, np.int32), "outside 0-65535"),
                     (np.zeros((64, 64, 3), np.complex64), "complex64"), (np.full((64, 64), 300.0), "outside 0-1 and 0-255"),
                     (np.full((64, 64), -1, np.int16), "outside 0-65535"), (np.zeros((64, 64), object), "object"),
                     (np.zeros((64, 64), "datetime64[s]"), "datetime64")):
        with pytest.raises(UnsupportedPixels, match=f"unsupported pixel format .*{why}"):
            to_rgb(bad)
    with pytest.raises(ImageError, match="not an image array"):
        to_rgb(np.zeros((3, 64, 64, 2), np.uint8))


def test_native_code_refuses_an_array_it_would_misread(photo):
    """dlib reads memory as rows of W x 3 bytes: a strided array there is a bug, not a face."""
    finder = FaceFinder("hog")
    with pytest.raises(TypeError, match="C-contiguous RGB uint8"):
        finder.detect(photo[:, ::2])
    assert len(finder.detect(to_rgb(photo[:, ::2]))) >= 0


def test_16_bit_png_predicts_and_extracts_like_its_8_bit_copy(pretrained, photo, tmp_path):
    grey = _grey(photo)
    Image.fromarray(grey).save(tmp_path / "g8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    with mf2.Detector.from_run(pretrained / "run", device="cpu") as det:
        faces = det.detect([tmp_path / "g8.png", tmp_path / "g16.png"], progress=False)
        unsupported = tmp_path / "nan.tif"
        Image.fromarray(np.full((64, 64), np.nan, np.float32), mode="F").save(unsupported)
        with_bad = det.detect([tmp_path / "g8.png", unsupported], progress=False)
    ok = faces[faces.status == "ok"]
    assert (ok.source.str.endswith("g8.png")).sum() == (ok.source.str.endswith("g16.png")).sum() >= 1
    a = pd.DataFrame(ok[ok.source.str.endswith("g8.png")]).drop(columns="source").reset_index(drop=True)
    b = pd.DataFrame(ok[ok.source.str.endswith("g16.png")]).drop(columns="source").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert [s["error"] for s in with_bad.attrs["skipped"]] == ["unsupported pixel format (NaN or infinite values)"]
    # extract-features: the same cached features from both files
    rows = read_manifest(pretrained / "d/manifest.captioned.jsonl").rows[:1]
    rows = [{**rows[0], "id": "g8", "image": str(tmp_path / "g8.png")}, {**rows[0], "id": "g16",
                                                                          "image": str(tmp_path / "g16.png")},
            {**rows[0], "id": "bad", "image": str(unsupported)}]
    write_manifest(rows, tmp_path / "m.jsonl")
    result = CliRunner().invoke(main, ["extract-features", "--manifest", str(tmp_path / "m.jsonl"), "--out",
                                       str(tmp_path / "f.zarr"), "--face", "detect", "--landmarks", "dlib",
                                       *text_encoder_args()])
    assert result.exit_code == 0, result.output
    assert "unsupported pixel format: 1" in result.output
    arrays, _ = store_arrays(tmp_path / "f.zarr")
    assert arrays["meta/valid"].tolist() == [True, True, False]
    for name, values in arrays.items():
        if name.startswith(("vision/", "landmarks")):
            np.testing.assert_array_equal(values[0], values[1], err_msg=name)


def _clip(path, frames: list[np.ndarray], pix_fmt: str) -> None:
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"qp": "0", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def _three_faces(photo, width: int, k: int) -> np.ndarray:
    """A width x 360 frame with three faces from the photo, moving a little with ``k``."""
    face = photo[30:290, 110:370]  # 260 x 260 around her face
    canvas = np.full((360, width, 3), 90, np.uint8)
    for j, side in enumerate((150, 120, 100)):
        small = np.asarray(Image.fromarray(face).resize((side, side)))
        x = 10 + j * (width - 30) // 3 + 6 * k
        canvas[40 + 30 * j:40 + 30 * j + side, x:x + side] = small
    return canvas


@pytest.mark.parametrize("width", [602, 700, 998])
def test_video_frames_find_the_faces_of_the_same_frames_as_images(pretrained, photo, tmp_path, width):
    """The acceptance of issue 22: widths that are not multiples of 16, in yuv420p, yuv444p and
    grey; faces found in each decoded frame == in the same frames given as images, every call."""
    import av

    assert width % 16
    with mf2.Detector.from_run(pretrained / "run", device="cpu") as det:
        for pix_fmt in ("yuv420p", "yuv444p", "gray"):
            clip = tmp_path / f"c_{pix_fmt}_{width}.mp4"
            _clip(clip, [_three_faces(photo, width, k) for k in range(2)], pix_fmt)
            with av.open(str(clip)) as video:  # the frames as the decoder gives them, saved as images
                padded = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
            assert not padded[0].flags.c_contiguous  # PyAV pads the rows: the case that broke dlib
            paths = []
            for k, image in enumerate(padded):
                paths.append(tmp_path / f"f_{pix_fmt}_{width}_{k}.png")
                Image.fromarray(np.ascontiguousarray(image)).save(paths[-1])
            as_images = det.detect(paths, progress=False)
            runs = [det.detect(clip, fps=0, progress=False) for _ in range(2)]
            columns = ["face", "status", "face_score", "x", "y", "w", "h", "yaw", "pitch", "roll", "AU01", "AU12",
                       "happiness", *[f"x_{i}" for i in range(68)]]
            expected = pd.DataFrame(as_images[columns]).reset_index(drop=True)
            assert (as_images.status == "ok").groupby(as_images.source).sum().tolist() == [3, 3], pix_fmt
            for got in runs:
                pd.testing.assert_frame_equal(pd.DataFrame(got[columns]).reset_index(drop=True), expected)
            assert runs[0].track.tolist() == runs[1].track.tolist()
            assert sorted(runs[0].track[runs[0].frame == 0]) == sorted(runs[0].track[runs[0].frame == 1]) == [0, 1, 2]
