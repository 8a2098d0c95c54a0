"""Feature extraction on real inputs: the packaged backbones, dlib on a real photo, AU centres,
a SIGKILLed-and-resumed store equal to an uninterrupted one, and bad or faceless images."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mf2.cli.main import main
from mf2.data import synthfacs as sf
from mf2.data.labels import AUS
from mf2.data.landmarks import au_centres
from mf2.data.manifest import read_manifest
from mf2.features.backbones import load_text, load_vision
from mf2.features.extract import ExtractSettings, extract_features
from mf2.features.face_align import FaceFinder, ImageError, align, canonical_landmarks, load_image
from mf2.features.store import StoreError

from .conftest import store_arrays


@pytest.fixture(scope="module")
def vision():
    return load_vision()


@pytest.fixture(scope="module")
def text():
    return load_text()


def test_packaged_efficientnet_lite0_sees_an_espresso(vision):
    from skimage.data import coffee

    from mf2._compat import import_timm

    assert vision.name == "efficientnet_lite0" and "packaged" in vision.source
    x = torch.nn.functional.interpolate(torch.from_numpy(coffee()).permute(2, 0, 1)[None].float() / 255,
                                        size=(224, 224), mode="bilinear", antialias=True)
    mean, std = torch.tensor(vision.mean).view(1, 3, 1, 1), torch.tensor(vision.std).view(1, 3, 1, 1)
    with torch.no_grad():
        top = vision.model(((x - mean) / std).contiguous(memory_format=torch.channels_last)).softmax(-1)[0].argmax()
    assert import_timm().data.ImageNetInfo().index_to_description(int(top)) == "espresso"
    tokens, fmap, layout = vision(x)
    assert tokens.shape == (1, 50, 1280) and fmap.shape == (1, 1280, 7, 7) and layout == "BCHW"


def test_minilm_reproduces_known_sentence_similarities(text):
    """Mean-pooled, normalised MiniLM embeddings give the similarities published for
    all-MiniLM-L6-v2."""
    def embed(sentence):
        ids, mask, hidden = text.encode([sentence], 64)
        v = (hidden[0] * mask[0][:, None]).sum(0) / mask[0].sum()
        return v / np.linalg.norm(v)

    for a, b, expected in [("The new movie is awesome", "The new movie is so great", 0.8939),
                           ("The cat sits outside", "The dog plays in the garden", 0.2838),
                           ("I love pasta", "Do you like pizza?", 0.5096)]:
        assert float(embed(a) @ embed(b)) == pytest.approx(expected, abs=2e-3)
    ids, mask, hidden = text.encode(["short", "a much longer sentence than the first one"], 20)
    assert ids.shape == (2, 20) and mask[0].sum() < mask[1].sum() and not hidden[0][~mask[0]].any()


def test_dlib_finds_the_astronauts_face():
    from skimage.data import astronaut

    image = astronaut()
    faces = FaceFinder().detect(image)
    assert len(faces) == 1
    (x0, y0, x1, y1), lm = faces[0].box, faces[0].landmarks
    margin = 0.25 * (x1 - x0)
    assert lm.shape == (68, 2)
    assert np.all((lm[:, 0] > x0 - margin) & (lm[:, 0] < x1 + margin) & (lm[:, 1] > y0 - margin) & (lm[:, 1] < y1 + margin))
    assert lm[36:48, 1].mean() < lm[48:68, 1].mean()  # eyes above the mouth
    crop, lm_crop, _ = align(image, lm, 224)
    assert crop.shape == (224, 224, 3)
    assert np.abs(lm_crop[[36, 45, 30, 48, 54]] - canonical_landmarks()[[36, 45, 30, 48, 54]] * 224).max() < 12


def test_au_centres_on_the_canonical_template_match_the_table():
    lm = canonical_landmarks() * 224
    c = au_centres(lm)
    r = np.linalg.norm(lm[39] - lm[42])
    table = {"AU1": (21, 22, -r / 2), "AU2": (18, 25, -r / 3), "AU4": (19, 24, r / 3), "AU6": (41, 46, r),
             "AU7": (38, 43, 0), "AU10": (61, 63, 0), "AU12": (48, 54, 0), "AU15": (48, 54, 0), "AU23": (51, 57, 0),
             "AU24": (51, 57, 0), "AU25": (51, 57, 0), "AU26": (56, 58, r / 2)}
    for i, au in enumerate(AUS):
        a, b, dy = table[au]
        np.testing.assert_allclose(c[i], [lm[a] + [0, dy], lm[b] + [0, dy]])
    assert c[AUS.index("AU1"), :, 1].max() < lm[17:27, 1].min()  # above the brows
    assert c[AUS.index("AU26"), :, 1].min() > lm[57, 1]  # below the lower lip


@pytest.fixture
def captioned(tmp_path):
    sf.write_synthfacs(tmp_path / "d", 40, 112, seed=2, workers=1)
    CliRunner().invoke(main, ["caption", "--manifest", str(tmp_path / "d/manifest.jsonl")], catch_exceptions=False)
    return tmp_path / "d/manifest.captioned.jsonl"


def test_store_layout_and_settings(captioned, tmp_path):
    m = read_manifest(captioned)
    summary = extract_features(m, tmp_path / "f.zarr", ExtractSettings(batch_size=16), log=lambda *_: None)
    arrays, attrs = store_arrays(tmp_path / "f.zarr")
    n = len(m)
    assert arrays["vision/tokens"].shape == (n, 50, 1280) and arrays["vision/tokens"].dtype == np.float16
    # AU regions pooled from EfficientNet-Lite0's stride-16 stage (14 x 14 x 112 at 224 px; --au-map auto)
    assert arrays["vision/au_tokens"].shape == (n, 12, 18, 112)
    assert arrays["vision/landmarks"].shape == (n, 68, 2)
    assert arrays["text/au/hidden"].shape == (n, 169, 384) and arrays["text/emotion/ids"].shape == (n, 61)
    assert arrays["text/au_sentences/hidden"].shape == (n, 12, 32, 384)
    assert arrays["meta/valid"].all() and arrays["meta/face_found"].all()
    assert list(arrays["meta/ids"]) == [r["id"] for r in m.rows]
    np.testing.assert_array_equal(arrays["meta/aus"], [[r[a] for a in AUS] for r in m.rows])
    assert attrs["complete"] and attrs["count"] == n and attrs["signature"]["landmarks"] == "manifest"
    assert attrs["signature"]["pooling"]["au_map"] == "stride16"
    assert attrs["signature"]["vision"]["name"] == "efficientnet_lite0" and attrs["signature"]["text"]["name"] == "minilm"
    assert set(summary["stage_seconds"]) == {"decode", "face", "wait", "vision", "pooling", "text", "write"}
    assert summary["text_cache"]["reused"] > 0  # repeated per-AU sentences were encoded once
    # manifest landmarks scaled into the 224 crop: the AU tokens really sample around the AU centres
    np.testing.assert_allclose(arrays["vision/landmarks"][0], np.asarray(m.rows[0]["landmarks"]) * 2, atol=0.01)
    # the text states are those of the encoder on the caption
    ids, mask, hidden = load_text().encode([m.rows[3]["caption_emotion"]], 61)
    np.testing.assert_array_equal(arrays["text/emotion/ids"][3], ids[0])
    np.testing.assert_allclose(arrays["text/emotion/hidden"][3].astype(np.float32), hidden[0], atol=2e-2)


def test_other_signature_is_refused_and_overwrite_restarts(captioned, tmp_path):
    m = read_manifest(captioned)
    extract_features(m, tmp_path / "f.zarr", ExtractSettings(batch_size=40), log=lambda *_: None)
    with pytest.raises(StoreError, match=r"written with a different pooling.R \(stored 3, now 2\); use --overwrite"):
        extract_features(m, tmp_path / "f.zarr", ExtractSettings(batch_size=40, au_samples=2), log=lambda *_: None)
    result = CliRunner().invoke(main, ["extract-features", "--manifest", str(captioned), "--out", str(tmp_path / "f.zarr"),
                                       "--landmarks", "canonical"])
    assert result.exit_code == 1 and "different landmarks (stored 'manifest', now 'canonical')" in result.output
    result = CliRunner().invoke(main, ["extract-features", "--manifest", str(captioned), "--out", str(tmp_path / "f.zarr"),
                                       "--landmarks", "canonical", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "vision: efficientnet_lite0 (packaged" in result.output and "text: minilm (packaged" in result.output


def test_sigkill_then_resume_equals_an_uninterrupted_run(captioned, tmp_path):
    cmd = [sys.executable, "-m", "mf2.cli.main", "extract-features", "--manifest", str(captioned), "--batch-size", "8"]
    subprocess.run(cmd + ["--out", str(tmp_path / "full.zarr")], check=True, capture_output=True, cwd=tmp_path)
    killed = tmp_path / "killed.zarr"
    job = subprocess.Popen(cmd + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline:
        meta = killed / "zarr.json"
        try:
            count = json.loads(meta.read_text())["attributes"]["count"] if meta.exists() else 0
        except (ValueError, KeyError):
            count = 0
        if count >= 16:
            break
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait()
    _, attrs = store_arrays(killed)
    assert 16 <= attrs["count"] < 40 and not attrs["complete"]
    done = subprocess.run(cmd + ["--out", str(killed)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"resuming at row {attrs['count']}" in done.stdout
    full, full_attrs = store_arrays(tmp_path / "full.zarr")
    resumed, resumed_attrs = store_arrays(killed)
    assert full.keys() == resumed.keys()
    for name in full:
        np.testing.assert_array_equal(full[name], resumed[name], err_msg=name)
    assert resumed_attrs["complete"] and resumed_attrs["signature"] == full_attrs["signature"]


def test_bad_grey_tiny_and_faceless_images(tmp_path):
    from skimage.data import astronaut, camera

    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(astronaut()).save(d / "face.jpg")
    Image.fromarray(camera()).save(d / "grey.png")  # grey, and no face in it
    Image.fromarray(astronaut()[:6, :6]).save(d / "tiny.png")
    (d / "notes.jpg").write_text("not an image at all")
    data = (d / "face.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    Image.new("RGB", (160, 160), (90, 140, 200)).save(d / "sky.png")  # faceless
    names = ["face.jpg", "grey.png", "tiny.png", "notes.jpg", "truncated.jpg", "sky.png"]
    (d / "m.jsonl").write_text("".join(json.dumps({"id": n, "image": n}) + "\n" for n in names))
    with pytest.raises(ImageError, match="not an image"):
        load_image(d / "notes.jpg")
    with pytest.raises(ImageError, match=r"image too small \(6x6 px"):
        load_image(d / "tiny.png")
    assert load_image(d / "grey.png").shape == (512, 512, 3)
    result = CliRunner().invoke(main, ["extract-features", "--manifest", str(d / "m.jsonl"), "--out",
                                       str(tmp_path / "f.zarr"), "--face", "detect", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    arrays, attrs = store_arrays(tmp_path / "f.zarr")
    valid = dict(zip(names, arrays["meta/valid"]))
    found = dict(zip(names, arrays["meta/face_found"]))
    errors = dict(zip(names, arrays["meta/error"]))
    assert valid == {"face.jpg": True, "grey.png": True, "tiny.png": False, "notes.jpg": False,
                     "truncated.jpg": False, "sky.png": True}
    assert found["face.jpg"] and not found["grey.png"] and not found["sky.png"]
    assert errors["notes.jpg"] == "not an image" and errors["truncated.jpg"].startswith("unreadable image")
    summary = attrs["summary"]
    assert summary["faces_not_found"] == 2
    assert summary["skipped"] == {"image too small": 1, "not an image": 1, "unreadable image": 1}
    assert "3 images skipped" in result.output and "2 faces not found" in result.output
    assert not arrays["vision/tokens"][names.index("notes.jpg")].any()  # a skipped row holds no features
