"""Round three of the hostile cases (issue 21's unnamed siblings, found by a stranger's probe):
each class fixed where it let the case through, with the case as its test."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mf2.data.manifest import ManifestError, read_manifest

from .test_hostile_inputs import cli, one_line_error, tree
from .test_trust import Faces_rows, copy_of, trained, world  # noqa: F401 (fixtures)


# -- images of several frames and links to nothing -------------------------------------------------

def test_an_animated_image_is_read_frame_by_frame(world, tmp_path):
    """An animated GIF used to give its first frame only, without a word."""
    images = sorted((world / "d/images").iterdir())[:3]
    frames = [Image.open(p).convert("RGB") for p in images]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=200, loop=0)
    out = tmp_path / "anim.csv"
    result = cli("predict", "--checkpoint", world / "run", gif, "--face", "aligned", "--fps", "0", "--out", out)
    assert result.exit_code == 0, result.output
    faces = Faces_rows(out)
    assert faces["frame"].astype(int).tolist() == [0, 1, 2] and (faces["status"] == "ok").all()
    assert faces["time"].astype(float).tolist() == pytest.approx([0.0, 0.2, 0.4])


def test_a_broken_link_in_a_folder_is_reported_not_passed_over(world, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(sorted((world / "d/images").iterdir())[0], photos / "a.png")
    (photos / "broken.png").symlink_to(tmp_path / "nowhere.png")
    result = cli("predict", "--checkpoint", world / "run", photos, "--face", "aligned", "--out", tmp_path / "o.json")
    assert result.exit_code == 0, result.output
    assert "broken.png" in result.output and "a broken link" in result.output
    assert json.loads((tmp_path / "o.json").read_text())["skipped"][0]["error"] == "a broken link"


# -- checkpoints and exports whose records were edited ---------------------------------------------

def test_a_pointer_to_a_missing_checkpoint_is_an_error_not_another_checkpoint(copy_of):
    """best.json naming a deleted epoch used to fall back to the latest checkpoint without a word."""
    w = copy_of("run")
    best = w / "run/checkpoints/best.json"
    pointer = json.loads(best.read_text())
    best.write_text(json.dumps({**pointer, "epoch": 5, "path": "epoch_0005"}))
    image = sorted((copy_of.trained / "d/images").iterdir())[0]
    for args in (("predict", "--checkpoint", w / "run", image, "--face", "aligned"),
                 ("export", w / "run", "--out", w / "model")):
        one_line_error(cli(*args), "best.json: names checkpoint epoch_0005", "which is not in")
    assert not (w / "model").exists()


def test_a_file_left_out_of_a_record_is_an_error(copy_of):
    """Removing model.safetensors' line from SHA256SUMS and changing the weights used to pass."""
    w = copy_of("model")
    sums = w / "model/SHA256SUMS"
    sums.write_text("".join(line + "\n" for line in sums.read_text().splitlines()
                            if not line.endswith("  model.safetensors")))
    image = sorted((copy_of.trained / "d/images").iterdir())[0]
    one_line_error(cli("predict", "--checkpoint", w / "model", image, "--face", "aligned"),
                   "model.safetensors: not listed in", "SHA256SUMS")


def test_an_exported_tokenizer_is_checked_before_it_explains(copy_of):
    """A deleted tokenizer.json used to load a 5-token tokenizer and explain other words."""
    w = copy_of("model")
    if not (w / "model/tokenizer").is_dir():
        pytest.skip("this export carries no tokenizer")
    victim = sorted(p for p in (w / "model/tokenizer").iterdir() if p.is_file())[-1]
    victim.unlink()
    image = sorted((copy_of.trained / "d/images").iterdir())[0]
    result = cli("predict", "--checkpoint", w / "model", image, "--face", "aligned", "--explain")
    one_line_error(result, victim.name, "missing")


# -- options the run cannot honour ------------------------------------------------------------------

def test_more_train_rows_than_there_are_is_said_and_recorded_as_all(world):
    result = cli("pretrain", "--cache", world / "f.zarr", "--out", world / "r", "--epochs", "1", "--batch-size", "8",
                 "--train-rows", "1000000")
    assert result.exit_code == 0, result.output
    assert "--train-rows 1000000 is more than the" in result.output and "using all of them" in result.output
    assert json.loads((world / "r/config.json").read_text())["train"]["train_rows"] is None


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_the_start(world):
    """It used to be refused both ways: 'holds an earlier run' and, with --resume, 'no checkpoint'."""
    args = ("pretrain", "--cache", world / "f.zarr", "--out", world / "r", "--epochs", "1", "--batch-size", "8")
    assert cli(*args).exit_code == 0
    shutil.rmtree(world / "r/checkpoints")  # as a kill in the first epoch leaves it
    (world / "r/checkpoints").mkdir()
    result = cli(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert "no checkpoint yet" in result.output and "starting it again at epoch 1" in result.output
    assert [r["epoch"] for r in map(json.loads, (world / "r/log.jsonl").read_text().splitlines())] == [1]


# -- manifests that say one thing twice -------------------------------------------------------------

def _manifest(tmp_path: Path, lines: list[str], suffix: str = ".jsonl") -> Path:
    image = tmp_path / "a.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / "b.png")
    path = tmp_path / f"m{suffix}"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_key_given_twice_in_a_row_is_a_bad_row(tmp_path):
    path = _manifest(tmp_path, ['{"image": "a.png", "emotion": "Happiness", "split": "train", "split": "val"}'])
    with pytest.raises(ManifestError, match="line 1: key 'split' appears more than once"):
        read_manifest(path)
    csv = _manifest(tmp_path, ["image,emotion,split,split", "a.png,Happiness,train,val"], ".csv")
    with pytest.raises(ManifestError, match="column 'split' appears more than once"):
        read_manifest(csv)


def test_one_video_in_two_splits_is_a_bad_row(tmp_path):
    """Validation would score the people it trained on; build-dataset never writes this."""
    path = _manifest(tmp_path, ['{"image": "a.png", "video": "v1", "emotion": "Happiness", "split": "train"}',
                                '{"image": "b.png", "video": "v1", "emotion": "Sadness", "split": "val"}'])
    with pytest.raises(ManifestError, match="line 2: split: video 'v1' is in split 'train' \\(line 1\\)"):
        read_manifest(path)
    m = read_manifest(path, skip_bad=True)
    assert len(m.rows) == 1 and m.skipped[0]["line"] == 2


# -- a caption server that answers something else -----------------------------------------------------

class _Html(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = b"<html>not json</html>"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_answer_that_is_not_json_is_a_failed_caption_and_all_failed_is_an_error(world, tmp_path):
    """It used to end the run at the first answer with 'Expecting value: line 1 column 1'."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rows = (world / "d/manifest.jsonl").read_text().splitlines()[:2]
        shutil.copytree(world / "d/images", tmp_path / "images")
        manifest = tmp_path / "m.jsonl"
        manifest.write_text("\n".join(rows) + "\n")
        before = tree(tmp_path / "images")
        result = cli("caption", "--manifest", manifest, "--backend", "openai", "--base-url",
                     f"http://127.0.0.1:{server.server_address[1]}/v1", "--max-attempts", "2", "--backoff", "0",
                     "--types", "emotion", env={"OPENAI_API_KEY": "local"})
        one_line_error(result, "no caption was made: all 2 failed")
        report = json.loads((tmp_path / "m.captioned.caption_report.json").read_text())
        assert report["failed"] == 2 and all("unreadable response" in f["reason"] for f in report["failures"])
        assert tree(tmp_path / "images") == before
    finally:
        server.shutdown()


def test_a_base_url_that_is_not_a_url_is_refused_when_parsed(world):
    result = cli("caption", "--manifest", world / "d/manifest.jsonl", "--backend", "openai", "--base-url", "foo")
    assert result.exit_code == 2 and "expected an http:// or https:// URL" in result.output


def test_extracting_a_complete_store_again_reports_the_store_not_the_old_run(world):
    """It used to print the first run's count as 'extracted this run' and, for a store written by an
    earlier version, warn that no captions were cached."""
    from .conftest import text_encoder_args

    before = tree(world / "f.zarr")
    result = cli("extract-features", "--manifest", world / "d/manifest.captioned.jsonl", "--out", world / "f.zarr",
                 *text_encoder_args())
    assert result.exit_code == 0, result.output
    assert "already complete" in result.output and "0 extracted this run (nothing to do)" in result.output
    assert "captions cached: au" in result.output and "no captions cached" not in result.output
    assert tree(world / "f.zarr") == before


def test_a_checkpoint_without_its_state_is_an_error_not_untuned_thresholds(world):
    """A deleted state.json (listed in SHA256SUMS) used to mean 0.5 for every AU, and a KeyError on --resume."""
    run = world / "run"
    (run / "checkpoints" / json.loads((run / "checkpoints/latest.json").read_text())["path"] / "state.json").unlink()
    image = sorted((world / "d/images").iterdir())[0]
    one_line_error(cli("predict", "--checkpoint", run, image, "--face", "aligned"), "state.json: missing (listed in")
    one_line_error(cli("pretrain", "--cache", world / "f.zarr", "--out", run, "--resume", "--epochs", "2"),
                   "state.json: missing")


def test_a_loop_of_links_is_a_skipped_input_not_a_traceback(world, tmp_path):
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "a.png").symlink_to(loop / "b.png")
    (loop / "b.png").symlink_to(loop / "a.png")
    shutil.copy(sorted((world / "d/images").iterdir())[0], loop / "c.png")
    for inputs in ([loop / "a.png", loop / "c.png"], [f"{loop}/*.png"]):
        result = cli("predict", "--checkpoint", world / "run", *inputs, "--face", "aligned", "--out", tmp_path / "o.csv")
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        assert "a.png: a broken link" in result.output and len(Faces_rows(tmp_path / "o.csv")) == 1


def test_a_cache_whose_videos_straddle_splits_is_refused_by_the_trainer(world):
    """A cache made from such a manifest before manifests refused it (or edited) must not train quietly."""
    import zarr

    group = zarr.open_group(str(world / "f.zarr"), mode="r+")
    splits = group["meta/split"][:]
    video = group["meta/video"][:][splits == "train"][0]
    first_val = int(np.flatnonzero(splits == "val")[0])
    videos = group["meta/video"][:]
    videos[first_val] = video
    group["meta/video"][:] = videos
    result = cli("pretrain", "--cache", world / "f.zarr", "--out", world / "r", "--epochs", "1", "--batch-size", "8")
    one_line_error(result, "have faces in more than one split", f"{video!r} in train and val")
    assert not (world / "r").exists()


@pytest.mark.parametrize("remove", [("SHA256SUMS",), ("SHA256SUMS", "state.json")])
def test_a_checkpoint_whose_record_is_gone_is_an_error(world, remove):
    """With its SHA256SUMS deleted a checkpoint used to load unchecked (changed weights predicted,
    a missing state.json meant untuned thresholds or a KeyError on --resume)."""
    run = world / "run"
    checkpoint = run / "checkpoints" / json.loads((run / "checkpoints/latest.json").read_text())["path"]
    for name in remove:
        (checkpoint / name).unlink()
    image = sorted((world / "d/images").iterdir())[0]
    one_line_error(cli("predict", "--checkpoint", run, image, "--face", "aligned"), "SHA256SUMS is gone")
    one_line_error(cli("export", run, "--out", world / "model"), "SHA256SUMS is gone")
    resumed = cli("pretrain", "--cache", world / "f.zarr", "--out", run, "--resume", "--epochs", "2")
    one_line_error(resumed, checkpoint.name)
    assert "SHA256SUMS is gone" in resumed.output or "state.json: missing (every checkpoint" in resumed.output


def test_a_checkpoint_written_with_a_record_needs_it_in_a_run_begun_by_an_older_version(world):
    """An older run (config without a schema) resumed by this version: its new checkpoints carry a
    record, and deleting it is caught per checkpoint, not waved through by the run's age."""
    run = world / "run"
    config = json.loads((run / "config.json").read_text())
    config.pop("schema", None)
    (run / "config.json").write_text(json.dumps(config))
    checkpoint = run / "checkpoints" / json.loads((run / "checkpoints/latest.json").read_text())["path"]
    assert json.loads((checkpoint / "state.json").read_text())["sha256sums"] is True
    (checkpoint / "SHA256SUMS").unlink()
    image = sorted((world / "d/images").iterdir())[0]
    one_line_error(cli("predict", "--checkpoint", run, image, "--face", "aligned"), "SHA256SUMS is gone")
