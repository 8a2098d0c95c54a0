"""The Python API: ``mf2.Detector`` gives what ``mf2 predict`` writes, bit for bit (images, a
folder, a video, arrays, frames from a loop); ``mf2.Faces`` has its columns and dtypes, round-trips
through CSV, and plots; ``mf2 export`` -> ``Detector.from_pretrained`` gives identical
probabilities, for a DFN run even with its base run deleted; bad inputs give the CLI's errors and
counted skips."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

import mf2
from mf2.cli.main import main
from mf2.data.labels import AUS, EMOTIONS
from mf2.prediction.sources import InputError
from mf2.prediction.table import AU_COLUMNS, COLUMNS, EMOTION_COLUMNS, LANDMARK_COLUMNS
from mf2.runs import RunError


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """photos/ (the astronaut, a faceless image), a 3 s clip (2 s of a face, 1 s of grey), a
    broken video, a folder without images."""
    import av
    from skimage.data import astronaut

    root = tmp_path_factory.mktemp("inputs")
    (root / "photos").mkdir()
    Image.fromarray(astronaut()).save(root / "photos/astronaut.png")
    Image.new("RGB", (160, 120), (128, 128, 128)).save(root / "photos/blank.png")
    face = np.ascontiguousarray(astronaut()[:256, 64:320])
    with av.open(str(root / "clip.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.height, stream.width, stream.pix_fmt = 256, 256, "yuv420p"
        for k in range(30):
            image = face if k < 20 else np.full_like(face, 128)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    (root / "empty").mkdir()
    (root / "empty/notes.txt").write_text("no images here")
    return root


@pytest.fixture(scope="module")
def detector(pretrained):
    with mf2.Detector.from_run(pretrained / "run", device="cpu") as det:
        yield det


def _cli(*args):
    result = CliRunner().invoke(main, ["predict", *map(str, args)])
    return result


def _plain(faces):
    return pd.DataFrame(faces)


def test_import_is_cheap_and_exports_the_api():
    code = "import sys, mf2; assert 'torch' not in sys.modules and 'pandas' not in sys.modules; " \
           "from mf2 import Detector, Faces, read_faces; print(Detector.__name__, Faces.__name__, read_faces.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["Detector", "Faces", "read_faces"]
    with pytest.raises(AttributeError):
        mf2.NoSuchThing  # noqa: B018


@pytest.mark.parametrize("what", ["images", "folder", "video"])
def test_detect_equals_mf2_predict(detector, pretrained, inputs, tmp_path, what):
    args = {"images": [inputs / "photos/astronaut.png", inputs / "photos/blank.png"], "folder": [inputs / "photos"],
            "video": [inputs / "clip.mp4"]}[what]
    faces = detector.detect(args, fps=2, progress=False)
    out = tmp_path / "p.csv"
    result = _cli("--checkpoint", pretrained / "run", *args, "--fps", "2", "--out", out)
    assert result.exit_code == 0, result.output
    written = mf2.read_faces(out)
    pd.testing.assert_frame_equal(_plain(written), _plain(faces))  # every value, bit for bit
    assert out.read_text() == faces.to_csv()  # and the CSV is that table, byte for byte
    result = _cli("--checkpoint", pretrained / "run", *args, "--fps", "2", "--out", tmp_path / "p.json")
    rows = json.loads((tmp_path / "p.json").read_text())["rows"]
    ok = faces[faces.status == "ok"]
    assert [r["status"] for r in rows] == faces.status.tolist()
    assert [[r["aus"][a] for a in AUS] for r in rows if r["status"] == "ok"] == ok[list(AU_COLUMNS)].to_numpy(
        np.float64).tolist()
    assert [[r["emotions"][e] for e in EMOTIONS] for r in rows if r["status"] == "ok"] == ok[
        list(EMOTION_COLUMNS)].to_numpy(np.float64).tolist()
    if what == "video":
        assert faces[["frame", "time", "status"]].astype(object).values.tolist() == [
            [0, 0.0, "ok"], [5, 0.5, "ok"], [10, 1.0, "ok"], [15, 1.5, "ok"], [20, 2.0, "no face"], [25, 2.5, "no face"]]
    else:
        assert [(s.split("/")[-1], st) for s, st in zip(faces.source, faces.status)] == [
            ("astronaut.png", "ok"), ("blank.png", "no face")]


def test_columns_dtypes_and_accessors(detector, inputs):
    faces = detector.detect([inputs / "photos", inputs / "clip.mp4"], fps=2, progress=False)
    assert isinstance(faces, mf2.Faces) and isinstance(faces, pd.DataFrame)
    assert list(faces.columns) == list(COLUMNS)
    assert AU_COLUMNS == ("AU01", "AU02", "AU04", "AU06", "AU07", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")
    assert EMOTION_COLUMNS == ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise", "other")
    assert LANDMARK_COLUMNS[0] == "x_0" and LANDMARK_COLUMNS[67] == "x_67" and LANDMARK_COLUMNS[-1] == "y_67"
    dtypes = {c: str(t) for c, t in faces.dtypes.items()}
    assert {dtypes[c] for c in ("source", "status", "emotion", "explanation")} == {"string"}
    assert dtypes["frame"] == dtypes["face"] == "Int64" and dtypes["time"] == dtypes["face_score"] == "float64"
    assert {dtypes[c] for c in ("x", "y", "w", "h", *AU_COLUMNS, *EMOTION_COLUMNS, *LANDMARK_COLUMNS)} == {"float32"}
    ok = faces[faces.status == "ok"]
    assert isinstance(ok, mf2.Faces) and len(ok) == 5 and (faces.status == "no face").sum() == 3
    np.testing.assert_allclose(ok.emotions.sum(axis=1), 1.0, atol=1e-5)
    assert (ok.emotions.idxmax(axis=1) == ok.emotion).all()
    assert ok.aus.shape == (5, 12) and ok.landmarks.shape == (5, 136) and type(ok.aus) is pd.DataFrame
    assert ((ok.aus >= 0) & (ok.aus <= 1)).all().all() and (ok.w > 0).all() and (ok.h > 0).all()
    lm_x, lm_y = ok[list(LANDMARK_COLUMNS[:68])].to_numpy(), ok[list(LANDMARK_COLUMNS[68:])].to_numpy()
    assert ((lm_x >= ok.x.to_numpy()[:, None] - 30) & (lm_x <= (ok.x + ok.w).to_numpy()[:, None] + 30)).all()
    assert ((lm_y >= ok.y.to_numpy()[:, None] - 30) & (lm_y <= (ok.y + ok.h).to_numpy()[:, None] + 30)).all()
    active = faces.active_aus(0.5)
    assert active.dtypes.eq(bool).all() and active.shape == (8, 12)
    assert (active[faces.status.to_numpy() == "ok"].to_numpy() == (ok.aus.to_numpy() >= 0.5)).all()
    assert not active[faces.status.to_numpy() != "ok"].to_numpy().any()
    summary = faces.summary()
    assert summary["faces"].tolist() == [1, 0, 4] and summary["frames"].tolist() == [1, 1, 6]
    video = str(inputs / "clip.mp4")
    np.testing.assert_allclose(summary.loc[video, list(AU_COLUMNS)].to_numpy(np.float64),
                               ok[ok.source == video].aus.mean().to_numpy(np.float64), rtol=1e-6)
    shares = summary[[f"share_{e}" for e in EMOTION_COLUMNS]]
    assert shares.loc[video].sum() == pytest.approx(1.0)
    counts = faces.attrs["counts"]
    assert {k: counts[k] for k in ("files", "frames", "faces", "frames_without_face", "near_misses")} == {
        "files": 3, "frames": 8, "faces": 5, "frames_without_face": 3, "near_misses": 0}


def test_csv_round_trip_with_explanations(detector, inputs, tmp_path):
    faces = detector.detect([inputs / "photos"], explain=True, progress=False)
    assert faces.explanation.iloc[0].strip() and pd.isna(faces.explanation.iloc[1])
    faces.to_csv(tmp_path / "f.csv")
    back = mf2.read_faces(tmp_path / "f.csv")
    assert isinstance(back, mf2.Faces)
    pd.testing.assert_frame_equal(_plain(back), _plain(faces))
    assert mf2.Faces.read_csv(tmp_path / "f.csv").equals(back)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an mf2 faces table"):
        mf2.read_faces(tmp_path / "other.csv")


def _png_size(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.format, im.size


def test_plots_write_pngs_of_their_size(detector, pretrained, inputs, tmp_path):
    faces = detector.detect([inputs / "photos", inputs / "clip.mp4"], fps=2, progress=False)
    faces.plot_detections(0, path=tmp_path / "det.png")
    faces.plot_timeline(path=tmp_path / "timeline.png")
    faces.plot_aus(path=tmp_path / "aus.png")
    faces.plot_detections(1, path=tmp_path / "noface.png")  # the blank image: "no face"
    faces.plot_detections(2, path=tmp_path / "frame.png")  # a video frame, decoded again
    assert _png_size(tmp_path / "det.png") == _png_size(tmp_path / "noface.png") == ("PNG", (1000, 500))
    assert _png_size(tmp_path / "frame.png") == ("PNG", (1000, 500))
    assert _png_size(tmp_path / "timeline.png") == ("PNG", (1000, 600))
    assert _png_size(tmp_path / "aus.png") == ("PNG", (800, 400))
    fig = faces.plot_timeline(str(inputs / "clip.mp4"), aus=["AU12", "AU25"])
    assert [t.get_text() for t in fig.axes[2].get_legend().get_texts()] == ["AU12 Lip Corner Puller", "AU25 Lips Part"]
    with pytest.raises(ValueError, match="no video"):
        faces[faces.frame.isna()].plot_timeline()
    # mf2 predict --plots: AU bars for every source, the detections of an image, the timeline of a video
    result = _cli("--checkpoint", pretrained / "run", inputs / "photos", inputs / "clip.mp4", "--fps", "2", "--out",
                  tmp_path / "p.csv", "--plots", tmp_path / "plots")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "astronaut_aus.png", "astronaut_detections.png", "blank_aus.png", "blank_detections.png", "clip_aus.png",
        "clip_track0_timeline.png"]  # the clip holds one person
    assert _png_size(tmp_path / "plots/clip_track0_timeline.png") == ("PNG", (1000, 600))


def test_arrays_pil_images_and_frames_from_a_loop(detector, inputs):
    path = inputs / "photos/astronaut.png"
    from_file = detector.detect(path, progress=False)
    pil = Image.open(path)
    from_memory = detector.detect([np.asarray(pil), pil], batch_size=1, progress=False)  # as from_file: one face a batch
    assert from_memory.source.tolist() == ["<image 0>", "<image 1>"]
    for k in range(2):
        np.testing.assert_array_equal(from_memory.iloc[[k]][list(AU_COLUMNS + EMOTION_COLUMNS)].to_numpy(),
                                      from_file[list(AU_COLUMNS + EMOTION_COLUMNS)].to_numpy())
    img = np.asarray(pil)
    fig = from_memory.plot_detections(0, image=img)
    assert fig.get_size_inches().tolist() == [10.0, 5.0]
    with pytest.raises(ValueError, match="in-memory image"):
        from_memory.plot_detections(0)
    per_frame = list(detector.detect_frames(iter([img, np.full((100, 120, 3), 90, np.uint8), img]), frame_rate=25))
    assert [len(f) for f in per_frame] == [1, 1, 1]
    loop = mf2.Faces.concat(per_frame)
    assert loop.frame.tolist() == [0, 1, 2] and loop.time.tolist() == [0.0, 0.04, 0.08]
    assert loop.status.tolist() == ["ok", "no face", "ok"] and (loop.source == "<frames>").all()
    np.testing.assert_array_equal(loop.iloc[[0, 2]][list(AU_COLUMNS)].to_numpy(),
                                  np.repeat(from_file[list(AU_COLUMNS)].to_numpy(), 2, 0))
    with pytest.raises(InputError, match="frame 0: not an image array"):  # 5 channels
        next(detector.detect_frames([np.zeros((50, 50, 5), np.uint8)], frame_rate=25))


def test_bad_inputs_give_the_cli_errors_and_counted_skips(detector, pretrained, inputs, tmp_path):
    missing, empty, broken = tmp_path / "missing.jpg", inputs / "empty", inputs / "broken.mp4"
    messages = []
    faces = detector.detect([missing, empty, broken, inputs / "photos/astronaut.png"], progress=False,
                            log=messages.append)
    out = tmp_path / "r.json"
    result = _cli("--checkpoint", pretrained / "run", missing, empty, broken, inputs / "photos/astronaut.png", "--out",
                  out)
    assert result.exit_code == 0, result.output
    skipped = json.loads(out.read_text())["skipped"]
    assert faces.attrs["skipped"] == skipped and len(skipped) == 3
    assert [s["error"] for s in skipped[:2]] == ["missing file", "no image or video files in this folder"]
    assert skipped[2]["source"] == str(broken) and skipped[2]["error"].startswith("unreadable video")
    assert messages == [line for line in result.output.splitlines() if line.startswith("skipped ")]
    assert "3 skipped" in result.output and len(faces) == 1
    for args, message in (([missing, broken], "nothing could be read (2 inputs skipped)"),
                          ([missing], f"no input files to predict on ({missing}: missing file)")):
        with pytest.raises(InputError) as caught:
            detector.detect(args, progress=False, log=lambda m: None)
        assert str(caught.value) == message
        result = _cli("--checkpoint", pretrained / "run", *args)
        assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == f"Error: {message}"


@pytest.fixture(scope="module")
def dfn_run(pretrained, tmp_path_factory):
    """A DFN run on a copy of the shared MF² run (its base can then be deleted)."""
    root = tmp_path_factory.mktemp("dfn")
    shutil.copytree(pretrained / "run", root / "base")
    result = CliRunner().invoke(main, ["finetune", "--dfn", "--from", str(root / "base"), "--cache",
                                       str(pretrained / "f.zarr"), "--out", str(root / "dfn"), "--epochs", "1",
                                       "--batch-size", "8", "--warmup-steps", "2"])
    assert result.exit_code == 0, result.output
    return root


def test_export_then_from_pretrained_gives_identical_probabilities(pretrained, inputs, tmp_path):
    out = tmp_path / "model"
    result = CliRunner().invoke(main, ["export", str(pretrained / "run"), "--out", str(out), "--cache",
                                       str(pretrained / "f.zarr"), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "SHA256SUMS", "config.json", "model.safetensors",
                                                    "state.json", "tokenizer"]
    config = json.loads((out / "config.json").read_text())
    run_config = json.loads((pretrained / "run/config.json").read_text())
    assert config["kind"] == "exported" and config["model_kind"] == "mf2"
    assert config["model"]["vocab"] == run_config["model"]["vocab"] and config["features"] == run_config["features"]
    assert config["backbones"]["vision"] == {"name": "efficientnet_lite0",
                                             "weights_sha256": run_config["features"]["vision"]["weights"],
                                             "image_size": 224, "licence": config["backbones"]["vision"]["licence"]}
    assert "non-commercial" in config["backbones"]["landmarks"]["licence"]
    scored = config["metrics"]["scored"]
    for name in ("au_mean_f1", "emotion_mean_accuracy"):
        assert scored[name]["low"] <= scored[name]["value"] <= scored[name]["high"]
    card = (out / "README.md").read_text()
    for needed in ("## Training data", "## Metrics", "95% interval", "Apache-2.0", "non-commercial",
                   "## Intended use", "SynthFACS", "64 images"):
        assert needed in card, needed
    assert not list(out.rglob("*.pkl")) and not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))
    args = [inputs / "photos/astronaut.png", inputs / "clip.mp4"]
    with mf2.Detector.from_run(pretrained / "run", device="cpu") as a, mf2.Detector.from_pretrained(out) as b:
        pd.testing.assert_frame_equal(_plain(a.detect(args, explain=True, progress=False)),
                                      _plain(b.detect(args, explain=True, progress=False)))
    result = _cli("--checkpoint", out, inputs / "photos/astronaut.png", "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    # never into its inputs; an existing folder only with --overwrite, and only an exported one
    result = CliRunner().invoke(main, ["export", str(pretrained / "run"), "--out", str(pretrained / "run/model")])
    assert result.exit_code == 1 and "never writes into its inputs" in result.output
    result = CliRunner().invoke(main, ["export", str(pretrained / "run"), "--out", str(out)])
    assert result.exit_code == 1 and "--overwrite" in result.output
    result = CliRunner().invoke(main, ["export", str(pretrained / "run"), "--out", str(inputs), "--overwrite"])
    assert result.exit_code == 1 and "other than an exported model" in result.output


def test_exported_dfn_loads_with_its_base_run_deleted(dfn_run, inputs, tmp_path):
    args = [inputs / "photos/astronaut.png", inputs / "clip.mp4"]
    with mf2.Detector.from_run(dfn_run / "dfn", device="cpu") as det:
        before = det.detect(args, explain=True, progress=False)
    result = CliRunner().invoke(main, ["export", str(dfn_run / "dfn"), "--out", str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    shutil.rmtree(dfn_run / "base")
    with pytest.raises(RunError, match="base MF² run"):
        mf2.Detector.from_run(dfn_run / "dfn")
    with mf2.Detector.from_pretrained(tmp_path / "model", device="cpu") as det:
        assert type(det.predictor.model).__name__ == "DFNModel"
        pd.testing.assert_frame_equal(_plain(det.detect(args, explain=True, progress=False)), _plain(before))
    assert json.loads((tmp_path / "model/config.json").read_text())["dfn"]["blocks"] == "all"


def test_a_hub_id_loads_from_the_local_cache_only_unless_downloads_are_allowed(pretrained, tmp_path):
    result = CliRunner().invoke(main, ["export", str(pretrained / "run"), "--out", str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--mf2-synthfacs" / "snapshots" / ("0" * 40)
    shutil.copytree(tmp_path / "model", snapshot)
    (cache / "models--someone--mf2-synthfacs/refs").mkdir()
    (cache / "models--someone--mf2-synthfacs/refs/main").write_text("0" * 40)
    det = mf2.Detector.from_pretrained("someone/mf2-synthfacs", device="cpu", cache_dir=cache)
    assert det.predictor.checkpoint == snapshot and det.predictor.config["model_kind"] == "mf2"
    with pytest.raises(RunError, match="pass allow_download=True"):
        mf2.Detector.from_pretrained("someone/not-cached", cache_dir=cache)
    with pytest.raises(RunError, match="no such model folder"):
        mf2.Detector.from_pretrained(tmp_path / "nothing" / "here")
