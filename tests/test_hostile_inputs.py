"""Hostile inputs and faults against the CLI (issue 16): no command writes into, replaces or
deletes its inputs; damaged or mismatched data is a one-line error naming what is wrong, never
a quietly wrong result; skips are counted; interruptions (SIGTERM, a full disk) never leave a
partial output looking complete; a stuck server never hangs a run; two writers of one output
never interleave.

Every case asserts the exit status, the one-line message (no traceback) and, where a command
was pointed at its own inputs, that those inputs are byte-identical afterwards."""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from PIL import Image

from mf2.cli.main import main
from mf2.data.manifest import read_manifest, write_manifest

from .conftest import store_arrays, text_encoder_args
from .fake_openai import FakeOpenAI


def tree(path: Path) -> dict:
    """Every file under ``path`` (or ``path`` itself) -> its SHA-256: byte-identical inputs."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def cli(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def one_line_error(result, *fragments):
    """Exit status 1, a single ``Error:`` line holding every fragment, and no traceback."""
    text = result.output.strip()
    assert result.exit_code == 1, text
    assert "Traceback" not in text and result.exception is None or isinstance(result.exception, SystemExit), text
    errors = [line for line in text.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, text
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A PNG of a few bytes whose header claims ``side`` x ``side`` pixels."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", side, side)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def world(pretrained, tmp_path):
    """A private copy of the shared tiny world: data (d/), cache (f.zarr), MF² run (run/)."""
    for name in ("d", "f.zarr", "run"):
        shutil.copytree(pretrained / name, tmp_path / name)
    return tmp_path


def cmd(*args):
    return [sys.executable, "-m", "mf2.cli.main", *map(str, args)]


# -- commands that would destroy their inputs -----------------------------------------------------

def test_extract_features_into_its_dataset_folder_is_refused(world):
    before = tree(world / "d")
    result = cli("extract-features", "--manifest", world / "d/manifest.captioned.jsonl", "--out", world / "d",
                 "--overwrite")
    one_line_error(result, "--out", "contains the --manifest", "never writes over its inputs")
    assert tree(world / "d") == before


def test_build_dataset_never_replaces_its_source_manifest(world):
    before = tree(world / "d")
    result = cli("build-dataset", "--manifest", world / "d/manifest.jsonl", "--out", world / "d")
    one_line_error(result, "--out", "contains the --manifest")
    assert tree(world / "d") == before
    # a folder holding someone else's manifest.jsonl is not written into either
    other = world / "other"
    other.mkdir()
    (other / "manifest.jsonl").write_text("precious\n")
    result = cli("build-dataset", "--manifest", world / "d/manifest.jsonl", "--out", other)
    one_line_error(result, "holds a manifest.jsonl that mf2 build-dataset did not write")
    assert (other / "manifest.jsonl").read_text() == "precious\n"


def test_finetune_never_deletes_or_writes_into_its_base_run(world):
    before = tree(world / "run")
    result = cli("finetune", "--dfn", "--from", world / "run", "--cache", world / "f.zarr", "--out", world / "run",
                 "--overwrite")
    one_line_error(result, "--out", "is the --from")
    result = cli("finetune", "--dfn", "--from", world / "run", "--cache", world / "f.zarr", "--out",
                 world / "run/dfn")
    one_line_error(result, "inside the --from folder")
    assert tree(world / "run") == before


def test_runs_and_evaluations_are_not_written_inside_a_cache(world):
    before = tree(world / "f.zarr")
    one_line_error(cli("pretrain", "--cache", world / "f.zarr", "--out", world / "f.zarr/run"),
                   "inside the --cache folder")
    one_line_error(cli("evaluate", "--checkpoint", world / "run", "--cache", world / "f.zarr", "--out",
                       world / "f.zarr/eval"), "inside the --cache folder")
    assert tree(world / "f.zarr") == before


def test_overwrite_only_removes_what_mf2_wrote(world):
    (world / "notes").mkdir()
    (world / "notes/thesis.tex").write_text("years of work")
    one_line_error(cli("pretrain", "--cache", world / "f.zarr", "--out", world / "notes", "--overwrite"),
                   "not an mf2 run")
    one_line_error(cli("extract-features", "--manifest", world / "d/manifest.captioned.jsonl", "--out",
                       world / "notes", "--overwrite"), "not a feature store")
    assert (world / "notes/thesis.tex").read_text() == "years of work"


# -- captions --------------------------------------------------------------------------------------

def test_caption_writes_beside_its_input_and_counts_skips(world):
    source = world / "d/manifest.jsonl"
    lines = source.read_text().splitlines()
    lines[3] = lines[3].replace('"AU1": 0', '"AU1": 7').replace('"AU1": 1', '"AU1": 7')
    lines.append("{not json")
    source.write_text("\n".join(lines) + "\n")
    before = tree(source)
    result = cli("caption", "--manifest", source, "--out", world / "d/capped.jsonl", "--skip-bad")
    assert result.exit_code == 0, result.output
    assert tree(source) == before
    assert "2 bad manifest rows skipped" in result.output
    report = json.loads((world / "d/capped.caption_report.json").read_text())
    assert [s["line"] for s in report["skipped_rows"]] == [4, len(lines)]
    assert len(read_manifest(world / "d/capped.jsonl").rows) == len(lines) - 2
    # the output may not be the input, nor a file mf2 caption did not write
    one_line_error(cli("caption", "--manifest", source, "--out", source), "--out", "is the --manifest")
    (world / "d/mine.jsonl").write_text("mine\n")
    result = cli("caption", "--manifest", source, "--out", world / "d/mine.jsonl", "--skip-bad")
    one_line_error(result, "was not written by mf2 caption")
    assert (world / "d/mine.jsonl").read_text() == "mine\n"


def test_a_stuck_caption_server_ends_as_a_recorded_failure(world):
    """A server that starts an answer and never finishes it: every request is cut off at
    --timeout in all (not per read), retried, then recorded as a failure; nothing hangs."""
    manifest = world / "d/small.jsonl"
    write_manifest(read_manifest(world / "d/manifest.jsonl").rows[:2], manifest)
    with FakeOpenAI(script=("trickle",)) as server:
        t0 = time.time()
        result = cli("caption", "--manifest", manifest, "--backend", "openai", "--base-url", server.base_url,
                     "--types", "emotion", "--timeout", "1", "--max-attempts", "2", "--backoff", "0",
                     "--concurrency", "2", env={"OPENAI_API_KEY": "test"})
        elapsed = time.time() - t0
    assert result.exit_code == 1, result.output  # nothing was captioned: a script's && must stop
    assert "0 generated" in result.output and "2 failed" in result.output and "no caption was made" in result.output
    assert elapsed < 20, elapsed
    report = json.loads((world / "d/small.captioned.caption_report.json").read_text())
    assert report["failed"] == 2
    assert all("no complete answer within 1 s" in f["reason"] for f in report["failures"])


# -- silent wrong results ----------------------------------------------------------------------------

def test_a_deleted_chunk_is_an_error_naming_array_and_rows(world):
    chunk = world / "f.zarr/vision/tokens/c/1/0/0"
    rows = zarr.open_group(str(world / "f.zarr"), mode="r")["vision/tokens"].chunks[0]
    chunk.unlink()
    for result in (cli("evaluate", "--checkpoint", world / "run", "--cache", world / "f.zarr", "--bootstrap", "0"),
                   cli("pretrain", "--cache", world / "f.zarr", "--out", world / "new", "--epochs", "1"),
                   cli("evaluate", "--checkpoint", world / "run", "--cache", world / "f.zarr", "--probe", "--out",
                       world / "e")):
        one_line_error(result, "array vision/tokens has lost rows", f"{rows}-{2 * rows - 1}", "--overwrite")
    assert not (world / "run/eval_val").exists() and not (world / "new/checkpoints").exists()


def test_a_corrupted_chunk_is_an_error_naming_array_and_rows(world):
    group = zarr.open_group(str(world / "f.zarr"), mode="r")
    rows = group["vision/tokens"].chunks[0]
    first_val = int(np.flatnonzero(group["meta/split"][:] == "val")[0])  # a chunk evaluate reads
    (world / f"f.zarr/vision/tokens/c/{first_val // rows}/0/0").write_bytes(b"\x02\x01" + os.urandom(200))
    result = cli("evaluate", "--checkpoint", world / "run", "--cache", world / "f.zarr", "--bootstrap", "0")
    one_line_error(result, "array vision/tokens, rows", "damaged")
    assert not (world / "run/eval_val").exists()


def _edit_signature(store: Path, **changes):
    group = zarr.open_group(str(store), mode="r+")
    signature = dict(group.attrs["signature"])
    for dotted, value in changes.items():
        node = signature
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    group.attrs["signature"] = signature


def test_a_cache_from_another_backbone_is_refused_everywhere(world):
    """Same widths, other backbone: evaluate, finetune and --resume compare the whole signature."""
    shutil.copytree(world / "f.zarr", world / "b0.zarr")
    original = zarr.open_group(str(world / "f.zarr"), mode="r").attrs["signature"]["vision"]
    _edit_signature(world / "b0.zarr", **{"vision.name": "efficientnet_b0", "vision.weights": "random"})
    for result in (cli("evaluate", "--checkpoint", world / "run", "--cache", world / "b0.zarr", "--bootstrap", "0"),
                   cli("finetune", "--dfn", "--from", world / "run", "--cache", world / "b0.zarr", "--out",
                       world / "dfn"),
                   cli("pretrain", "--cache", world / "b0.zarr", "--out", world / "run", "--resume", "--epochs", "2")):
        one_line_error(result, "differ from the run's in vision.name", "efficientnet_b0", "efficientnet_lite0")
    _edit_signature(world / "b0.zarr", **{"vision.name": original["name"], "vision.weights": original["weights"],
                                          "pooling.au_map": "last"})
    one_line_error(cli("evaluate", "--checkpoint", world / "run", "--cache", world / "b0.zarr"),
                   "differ from the run's in pooling.au_map")


def test_weights_that_do_not_fit_the_backbone_are_refused(world):
    from safetensors.torch import save_file
    import torch

    save_file({"fc.weight": torch.zeros(2, 2), "conv1.weight": torch.zeros(64, 3, 7, 7)}, world / "resnet.safetensors")
    result = cli("extract-features", "--manifest", world / "d/manifest.captioned.jsonl", "--out", world / "g.zarr",
                 "--vision-weights", world / "resnet.safetensors", *text_encoder_args())
    one_line_error(result, "these weights do not fit", "missing tensor")
    assert not (world / "g.zarr").exists()


def test_a_dfn_run_refuses_a_base_run_replaced_after_it_was_trained(world):
    args = ["--cache", world / "f.zarr", "--epochs", "1", "--batch-size", "8"]
    assert cli("finetune", "--dfn", "--from", world / "run", "--out", world / "dfn", *args).exit_code == 0
    assert cli("evaluate", "--checkpoint", world / "dfn", "--cache", world / "f.zarr", "--bootstrap", "0"
               ).exit_code == 0
    result = cli("pretrain", "--out", world / "run", "--overwrite", "--seed", "1", *args)
    assert result.exit_code == 0, result.output
    one_line_error(cli("evaluate", "--checkpoint", world / "dfn", "--cache", world / "f.zarr"), "base run", "changed")
    one_line_error(cli("finetune", "--dfn", "--from", world / "run", "--out", world / "dfn", "--resume",
                       "--epochs", "2", *args[:2]), "changed since the DFN run started")


def test_resume_never_exits_0_having_done_nothing(world):
    one_line_error(cli("pretrain", "--cache", world / "f.zarr", "--out", world / "run", "--resume"),
                   "has trained all its 1 epochs", "--epochs N")
    result = cli("pretrain", "--cache", world / "f.zarr", "--out", world / "run", "--resume", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "extending" in result.output
    epochs = [json.loads(line)["epoch"] for line in (world / "run/log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_a_batch_larger_than_the_data_is_clamped_and_trains(world):
    result = cli("pretrain", "--cache", world / "f.zarr", "--out", world / "big", "--epochs", "1",
                 "--batch-size", "5000")
    assert result.exit_code == 0, result.output
    assert "--batch-size 5000 is larger than the" in result.output
    assert json.loads((world / "big/log.jsonl").read_text().splitlines()[-1])["step"] >= 1


# -- tracebacks that become one line ---------------------------------------------------------------

def test_an_image_bomb_is_a_counted_skip(world):
    rows = read_manifest(world / "d/manifest.captioned.jsonl").rows
    bomb_png(world / "d/images/bomb.png")
    rows[0] = {**rows[0], "image": "images/bomb.png"}
    write_manifest(rows, world / "d/bomb.jsonl")
    result = cli("extract-features", "--manifest", world / "d/bomb.jsonl", "--out", world / "g.zarr",
                 *text_encoder_args())
    assert result.exit_code == 0, result.output
    assert "1 images skipped (image too large: 1)" in result.output
    store = zarr.open_group(str(world / "g.zarr"), mode="r")
    assert not store["meta/valid"][0] and store["meta/valid"][1:].all()
    assert not store["vision/tokens"][0].any()


@pytest.mark.parametrize("damage, fragments", [
    (lambda c: "{ not json", ("config.json", "not valid JSON")),
    (lambda c: json.dumps({k: v for k, v in c.items() if k != "model"}), ("config.json", "model")),
    (lambda c: json.dumps({**c, "model": {**c["model"], "hidden": "big"}}), ("config.json", "hidden")),
    (lambda c: json.dumps({**c, "model": {**c["model"], "hidden": -8}}), ("config.json", "hidden")),
    (lambda c: json.dumps({**c, "model": {**c["model"], "warp": 9}}), ("config.json", "warp")),
    (lambda c: json.dumps([1, 2]), ("config.json",)),
])
def test_a_damaged_run_config_is_one_line_naming_the_file(world, damage, fragments):
    config = json.loads((world / "run/config.json").read_text())
    (world / "run/config.json").write_text(damage(config))
    for result in (cli("evaluate", "--checkpoint", world / "run", "--cache", world / "f.zarr"),
                   cli("finetune", "--dfn", "--from", world / "run", "--cache", world / "f.zarr", "--out",
                       world / "dfn")):
        one_line_error(result, *fragments)


def test_os_errors_are_one_line_with_the_path(world):
    (world / "run/eval_val").write_text("a file where a folder goes")
    one_line_error(cli("evaluate", "--checkpoint", world / "run", "--cache", world / "f.zarr", "--bootstrap", "0"),
                   "eval_val")
    if os.geteuid() != 0:  # root writes anywhere: the permission case needs another user
        (world / "run/eval_val").unlink()
        os.chmod(world / "run", 0o500)
        try:
            one_line_error(cli("evaluate", "--checkpoint", world / "run", "--cache", world / "f.zarr"),
                           "permission denied", "run")
        finally:
            os.chmod(world / "run", 0o700)


@pytest.mark.parametrize("column, value, fragment", [
    ("landmarks", [[float("nan"), 1.0]] * 68, "finite pixel coordinates"),
    ("landmarks", [[1e12, 1.0]] * 68, "finite pixel coordinates"),
    ("landmarks", [[True, 1.0]] * 68, "finite pixel coordinates"),
    ("AU4", True, "AU4: AU value True"),
    ("emotion", float("inf"), "emotion: emotion index"),
    ("caption_emotion", "x" * 30_000, "caption_emotion: 30,000 characters"),
    ("caption_emotion", {"a": 1}, "caption_emotion: expected text"),
    ("id", "x" * 5000, "id: 5,000 characters"),
    ("split", ["train"], "split: unknown split"),
])
def test_manifest_values_are_bounded(world, column, value, fragment):
    lines = (world / "d/manifest.captioned.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    row[column] = value
    lines[2] = json.dumps(row)  # NaN and Infinity as Python's json writes them
    (world / "d/bad.jsonl").write_text("\n".join(lines) + "\n")
    result = cli("extract-features", "--manifest", world / "d/bad.jsonl", "--out", world / "g.zarr")
    one_line_error(result, "bad.jsonl:line 3", fragment)
    result = cli("build-dataset", "--manifest", world / "d/bad.jsonl", "--out", world / "mfa", "--skip-bad")
    assert result.exit_code == 0 and "bad_rows 1" in result.output, result.output


def test_a_csv_manifest_and_a_truncated_jpeg(world):
    rows = read_manifest(world / "d/manifest.captioned.jsonl").rows
    png = world / "d" / rows[5]["image"]
    Image.open(png).convert("RGB").save(world / "d/images/cut.jpg", quality=90)
    data = (world / "d/images/cut.jpg").read_bytes()
    (world / "d/images/cut.jpg").write_bytes(data[:len(data) // 3])
    rows[5] = {**rows[5], "image": "images/cut.jpg"}
    write_manifest(rows, world / "d/m.csv")
    result = cli("extract-features", "--manifest", world / "d/m.csv", "--out", world / "g.zarr", *text_encoder_args())
    assert result.exit_code == 0, result.output
    assert "1 images skipped" in result.output
    assert not zarr.open_group(str(world / "g.zarr"), mode="r")["meta/valid"][5]


# -- interruptions: SIGTERM, a full disk, two writers ----------------------------------------------

def _wait_for(predicate, job, timeout=120):
    deadline = time.time() + timeout
    while not predicate():
        assert job.poll() is None, job.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _arrays(path):
    return store_arrays(path)[0]


def _extracted_straight(world) -> dict:
    """The arrays of an uninterrupted extraction in the same blocks (batch 8): the backbone's last
    bits depend on the batch, so a resumed store is compared with this one."""
    done = subprocess.run(cmd("extract-features", "--manifest", world / "d/manifest.captioned.jsonl", "--out",
                              world / "g_straight.zarr", "--batch-size", "8", *text_encoder_args()),
                          capture_output=True, text=True, cwd=world)
    assert done.returncode == 0, done.stderr
    return _arrays(world / "g_straight.zarr")


def test_sigterm_in_extract_features_then_rerun_completes(world):
    out = world / "g.zarr"
    job = subprocess.Popen(cmd("extract-features", "--manifest", world / "d/manifest.captioned.jsonl", "--out", out,
                               "--batch-size", "8", *text_encoder_args()),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=world)
    _wait_for(lambda: (out / "zarr.json").exists() and
              json.loads((out / "zarr.json").read_text())["attributes"].get("count", 0) >= 8, job)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 143, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert not zarr.open_group(str(out), mode="r").attrs["complete"]
    done = subprocess.run(cmd("extract-features", "--manifest", world / "d/manifest.captioned.jsonl", "--out", out,
                              "--batch-size", "8", *text_encoder_args()), capture_output=True, text=True, cwd=world)
    assert done.returncode == 0, done.stderr
    assert "resuming at row" in done.stdout
    ours, reference = _arrays(out), _extracted_straight(world)
    for name in ("vision/tokens", "vision/au_tokens", "text/emotion/hidden", "meta/valid"):
        np.testing.assert_array_equal(ours[name], reference[name])


def test_sigterm_in_pretrain_then_resume_completes(world):
    args = ("pretrain", "--cache", world / "f.zarr", "--out", world / "r", "--epochs", "40", "--batch-size", "8")
    job = subprocess.Popen(cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=world)
    _wait_for(lambda: (world / "r/checkpoints/latest.json").exists(), job)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 143 and "stopped by SIGTERM" in err and "Traceback" not in err, err
    latest = json.loads((world / "r/checkpoints/latest.json").read_text())["epoch"]
    result = cli("pretrain", "--cache", world / "f.zarr", "--out", world / "r", "--resume", "--epochs", latest + 2)
    assert result.exit_code == 0, result.output
    epochs = [json.loads(line)["epoch"] for line in (world / "r/log.jsonl").read_text().splitlines()]
    assert epochs[-1] == latest + 2 and epochs == sorted(set(epochs))


def test_two_trainers_into_one_run_folder(world):
    """The second stops at once with one line, and --overwrite deletes nothing of the first's."""
    args = ("pretrain", "--cache", world / "f.zarr", "--out", world / "r", "--epochs", "40", "--batch-size", "8")
    job = subprocess.Popen(cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=world)
    try:
        _wait_for(lambda: (world / "r/config.json").exists(), job)
        one_line_error(cli(*args, "--overwrite"), "is writing this run", f"mf2 process {job.pid}")
        one_line_error(cli(*args, "--resume"), "is writing this run")
        assert (world / "r/config.json").exists() and job.poll() is None
    finally:
        job.kill()
        job.wait()


def test_two_extractions_into_one_store(world):
    args = ("extract-features", "--manifest", world / "d/manifest.captioned.jsonl", "--out", world / "g.zarr",
            "--batch-size", "4", *text_encoder_args())
    job = subprocess.Popen(cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=world)
    try:
        _wait_for(lambda: (world / "g.zarr/zarr.json").exists(), job)
        one_line_error(cli(*args, "--overwrite"), "is writing this feature store")
        assert (world / "g.zarr/zarr.json").exists()
    finally:
        job.kill()
        job.wait()


def _file_size_limit(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_disk_that_fills_up_mid_extraction(world):
    """Writes beyond 300 kB fail (RLIMIT_FSIZE, as a full disk would): one line naming the file,
    the store stays incomplete, and a rerun with room finishes it equal to a clean extraction."""
    args = cmd("extract-features", "--manifest", world / "d/manifest.captioned.jsonl", "--out", world / "g.zarr",
               "--batch-size", "8", *text_encoder_args())
    full = subprocess.run(args, capture_output=True, text=True, cwd=world, preexec_fn=_file_size_limit(300_000))
    assert full.returncode == 1, full.stderr
    lines = full.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: file too large") and "g.zarr" in lines[-1], full.stderr
    assert "Traceback" not in full.stderr
    assert not zarr.open_group(str(world / "g.zarr"), mode="r").attrs["complete"]
    done = subprocess.run(args, capture_output=True, text=True, cwd=world)
    assert done.returncode == 0, done.stderr
    ours, reference = _arrays(world / "g.zarr"), _extracted_straight(world)
    for name in ("vision/tokens", "vision/au_tokens", "text/au/hidden"):
        np.testing.assert_array_equal(ours[name], reference[name])


def test_a_disk_that_fills_up_mid_training(world):
    """A checkpoint that cannot be written: one line, the earlier checkpoint intact, resumable."""
    args = ("pretrain", "--cache", world / "f.zarr", "--out", world / "r", "--batch-size", "8")
    assert cli(*args, "--epochs", "1").exit_code == 0
    before = tree(world / "r/checkpoints")
    full = subprocess.run(cmd(*args, "--resume", "--epochs", "2"), capture_output=True, text=True, cwd=world,
                          preexec_fn=_file_size_limit(200_000))
    assert full.returncode == 1 and full.stderr.strip().splitlines()[-1].startswith("Error: file too large"), \
        full.stderr
    assert "Traceback" not in full.stderr
    assert {k: v for k, v in tree(world / "r/checkpoints").items() if "epoch_0001" not in k} == before
    assert json.loads((world / "r/checkpoints/latest.json").read_text())["epoch"] == 0
    result = cli(*args, "--resume", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert json.loads((world / "r/checkpoints/latest.json").read_text())["epoch"] == 1


# -- predict ----------------------------------------------------------------------------------------

def _photos(world, n=3):
    folder = world / "photos"
    folder.mkdir()
    for p in sorted((world / "d/images").glob("*.png"))[:n]:
        shutil.copy(p, folder / p.name)
    return folder


def test_predict_never_writes_into_its_photos_or_its_run(world):
    photos = _photos(world)
    before = tree(photos)
    one_line_error(cli("predict", "--checkpoint", world / "run", photos, "--face", "aligned", "--annotate",
                       photos / "annotated"), "--annotate", "inside the input folder")
    one_line_error(cli("predict", "--checkpoint", world / "run", photos, "--face", "aligned", "--out",
                       photos / "faces.csv"), "--out", "inside the input folder")
    one_line_error(cli("predict", "--checkpoint", world / "run", photos, "--face", "aligned", "--plots",
                       world / "run/plots"), "--plots", "inside the --checkpoint folder")
    assert tree(photos) == before
    # a glob's inputs are its matches: an output it cannot match may sit beside them (issue 21)
    ok = cli("predict", "--checkpoint", world / "run", f"{photos}/*.png", "--face", "aligned", "--out",
             photos / "faces.csv")
    assert ok.exit_code == 0, ok.output
    assert {k: v for k, v in tree(photos).items() if not k.endswith(("faces.csv", "faces.csv.json"))} == before


def test_predict_with_a_bomb_among_photos_skips_it(world):
    photos = _photos(world)
    bomb_png(photos / "bomb.png")
    result = cli("predict", "--checkpoint", world / "run", photos, "--face", "aligned", "--out", world / "faces.csv")
    assert result.exit_code == 0, result.output
    assert "bomb.png" in result.output and "1 skipped" in result.output
    from mf2 import read_faces
    assert len(read_faces(world / "faces.csv")) == 3


def test_an_interrupted_predict_keeps_what_it_predicted(world, monkeypatch):
    from mf2.prediction.predictor import Predictor

    photos = _photos(world)
    out = world / "faces.csv"
    out.write_text("an earlier result\n")
    original, calls = Predictor.predict, []

    def stopped_on_the_second_batch(self, faces, *args, **kwargs):
        calls.append(len(faces))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, faces, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict", stopped_on_the_second_batch)
    result = cli("predict", "--checkpoint", world / "run", photos, "--face", "aligned", "--batch-size", "1",
                 "--workers", "0", "--out", out)
    assert result.exit_code != 0
    assert "rows predicted so far are in" in result.output
    assert out.read_text() == "an earlier result\n"  # the earlier result is untouched
    from mf2 import read_faces
    partial = read_faces(world / "faces.csv.partial")
    assert len(partial) == 1 and partial["status"].tolist() == ["ok"]


# -- a stranger's probe of mf2.Detector, Faces and mf2 predict (arguments, outputs, plots) ---------

@pytest.fixture(scope="module")
def probe(pretrained, tmp_path_factory):
    """A detector on the tiny run (CPU, no threads), a photo of a face, and a 1 s clip of it
    (5 frames at 5 fps), with their faces detected once."""
    import av
    from skimage.data import astronaut

    import mf2

    root = tmp_path_factory.mktemp("probe")
    Image.fromarray(astronaut()).save(root / "photo.png")
    face = np.ascontiguousarray(astronaut()[:256, 64:320])
    with av.open(str(root / "clip.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.height, stream.width, stream.pix_fmt = 256, 256, "yuv420p"
        for _ in range(5):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(face, format="rgb24")))
        container.mux(stream.encode())
    with mf2.Detector.from_run(pretrained / "run", device="cpu", num_workers=0) as det:
        det.root, det.photo, det.clip = root, root / "photo.png", root / "clip.mp4"
        det.photo_faces = det.detect(det.photo, progress=False)
        det.clip_faces = det.detect(det.clip, fps=0, progress=False)
        yield det


def test_the_number_check_takes_numpy_numbers_and_names_what_it_refuses():
    from mf2._checks import number

    assert number("skip_frames", np.int64(2), integer=True, low=1) == 2
    assert type(number("skip_frames", np.int64(2), integer=True, low=1)) is int
    assert number("smooth", np.float32(0.3), low=0, low_open=True) == 0.3  # float32's 0.3, not 0.30000001
    assert number("w", "auto", integer=True, words=("auto",)) == "auto" and number("m", None, none=True) is None
    for value, given in [(True, "True (a bool)"), ("2", "'2' (a str)"), (None, "None"), (float("nan"), "nan"),
                         (np.float64("inf"), "np.float64(inf)"), (0, "0"), (2.5, "2.5")]:
        with pytest.raises(ValueError) as e:
            number("skip_frames", value, integer=True, low=1)
        finite = "finite " if given in ("nan", "np.float64(inf)") else ""
        assert str(e.value) == f"skip_frames: expected a{'n' if not finite else ''} {finite}integer >= 1, got {given}"
    with pytest.raises(ValueError, match=r"^threshold: expected None or a number in \[0, 1\], got 2$"):
        number("threshold", 2, low=0, high=1, none=True)


def test_tracking_settings_take_numpy_numbers_and_refuse_bool_str_none():
    from mf2.prediction.tracking import TrackSettings

    s = TrackSettings(max_gap=np.float32(1.5), gallery=np.int64(2), min_iou=np.float64(0.3))
    assert (s.max_gap, s.gallery, s.min_iou) == (1.5, 2, 0.3) and type(s.gallery) is int
    for field, value, fragment in [("max_gap", "1", "tracking max_gap: expected a number >= 0, got '1' (a str)"),
                                   ("min_iou", None, "tracking min_iou: expected a number in [0, 1], got None"),
                                   ("min_iou", True, "got True (a bool)"), ("gallery", 2.5, "an integer >= 1"),
                                   ("memory", float("inf"), "None or a finite number >= 0"),
                                   ("search", 1, "tracking search: expected True or False, got 1")]:
        with pytest.raises(ValueError) as e:
            TrackSettings(**{field: value})
        assert fragment in str(e.value)


@pytest.mark.parametrize("call, value, fragment", [
    ("skip_frames", np.int64(2), None), ("fps", np.float32(0.5), None), ("batch_size", np.int64(2), None),
    ("skip_frames", True, "skip_frames: expected None or an integer >= 1, got True (a bool)"),
    ("skip_frames", "2", "got '2' (a str)"), ("fps", "1", "fps: expected None or a number >= 0"),
    ("batch_size", None, "batch_size: expected an integer >= 1, got None"), ("batch_size", True, "(a bool)"),
    ("beams", "3", "beams: expected an integer >= 1"), ("smooth", -1, "smooth: expected None or a number > 0"),
    ("smooth", float("nan"), "got nan"), ("progress", "yes", "progress: expected True or False or None"),
])
def test_detect_arguments_numpy_passes_the_rest_refused_before_any_work(probe, monkeypatch, tmp_path, call, value,
                                                                        fragment):
    import mf2.detector

    if fragment is None:  # numpy numbers are numbers
        faces = probe.detect(probe.clip, **{"progress": False, call: value})
        assert faces.attrs["counts"]["frames"] >= 1
        return
    monkeypatch.setattr(mf2.detector, "detections", lambda *a, **k: pytest.fail("detection ran"))
    with pytest.raises(ValueError) as e:
        probe.detect(probe.clip, annotate=tmp_path / "ann", **{"progress": False, call: value})
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "ann").exists()  # nothing was made either


@pytest.mark.parametrize("option, value, fragment", [
    ("min_face_score", "0.3", "min_face_score: expected None or a number, got '0.3' (a str)"),
    ("threshold", "0.5", "threshold: expected None or a number in [0, 1], got '0.5' (a str)"),
    ("threshold", True, "got True (a bool)"), ("threshold", [0.5] * 11, "12 of them"),
    ("tracking", {"max_gap": "1"}, "tracking max_gap: expected a number >= 0"),
    ("num_workers", 1.5, "num_workers: expected 'auto' or an integer in [0, 1024], got 1.5"),
    ("torch_threads", "2", "torch_threads: expected 'auto', None or an integer in [1, 1024]"),
    ("torch_threads", 10 ** 12, "torch_threads: expected 'auto', None or an integer in [1, 1024]"),
    ("min_face_score", 5.0, "min_face_score: MTCNN's score is a probability"),
    ("min_face_score", -3, "min_face_score: MTCNN's score is a probability"),
])
def test_detector_arguments_are_one_line_naming_the_argument(pretrained, option, value, fragment):
    import mf2

    with pytest.raises(ValueError) as e:
        mf2.Detector.from_run(pretrained / "run", device="cpu", **{option: value})
    assert fragment in str(e.value)


def test_numpy_bools_are_bools():
    """numpy 2 names its bool type 'bool' (not 'bool_'): np.True_ was refused as 'not True or False'."""
    from mf2._checks import flag
    from mf2.detector import _decoding, _tracking
    from mf2.prediction.tracking import TrackSettings

    assert flag("search", np.True_) is True and flag("search", np.False_) is False
    assert TrackSettings(search=np.False_).search is False
    assert _tracking(np.True_) == TrackSettings() and _tracking(np.False_) is None
    assert _decoding(np.True_) == "greedy" and _decoding(np.False_) is None
    with pytest.raises(ValueError, match="expected True or False"):
        flag("search", np.int64(1))


def test_detector_takes_numpy_numbers(pretrained):
    import mf2

    with mf2.Detector.from_run(pretrained / "run", device="cpu", num_workers=np.int64(0), threshold=np.float32(0.3),
                               min_face_score=np.float32(0.6), tracking={"max_gap": np.float32(2)}) as det:
        assert det.workers == 0 and det.tracking.max_gap == 2.0 and det.predictor.min_face_score == pytest.approx(0.6)
        assert det.predictor.thresholds.tolist() == [0.3] * 12


def test_smoothing_needs_tracks_and_is_done_once(pretrained, probe):
    import mf2

    with mf2.Detector.from_run(pretrained / "run", device="cpu", num_workers=0, tracking=False) as untracked:
        with pytest.raises(ValueError, match="smooth: .*tracking=False"):
            untracked.detect(probe.clip, smooth=1, progress=False)
    with pytest.raises(ValueError, match="smooth: no video among the inputs"):
        probe.detect(probe.photo, smooth=1, progress=False)
    with pytest.raises(ValueError, match="smooth: no video frames in these results"):
        probe.photo_faces.smooth(1)
    untracked_rows = probe.clip_faces.copy()
    untracked_rows["track"] = pd_na_like(untracked_rows["track"])
    with pytest.raises(ValueError, match=r"smooth: 5 faces of videos have no track"):
        untracked_rows.smooth(1)
    once = probe.clip_faces.smooth(np.float32(0.5))
    assert once.attrs["smooth"] == 0.5 and once.info["smooth"] == 0.5
    with pytest.raises(ValueError, match=r"already smoothed \(0.5 s\)"):
        once.smooth(1)
    # the CLI: the same refusals, one line, before the model is loaded
    result = cli("predict", "--checkpoint", pretrained / "run", probe.clip, "--no-tracking", "--smooth", "1")
    assert result.exit_code == 2 and "Error: --smooth averages each person's track" in result.output, result.output
    one_line_error(cli("predict", "--checkpoint", pretrained / "run", probe.photo, "--smooth", "1"),
                   "smooth: no video among the inputs")


def pd_na_like(column):
    import pandas as pd

    return pd.Series(pd.NA, index=column.index, dtype=column.dtype)


def test_the_cli_numbers_say_what_the_library_says(pretrained, probe):
    run = pretrained / "run"
    for args, fragment in [(["--threshold", "2"], "'--threshold': expected a number in [0, 1], got '2'"),
                           (["--batch-size", "2.5"], "'--batch-size': expected an integer >= 1, got '2.5'"),
                           (["--fps", "nan"], "'--fps': expected a finite number >= 0, got 'nan'"),
                           (["--smooth", "0"], "'--smooth': expected a number > 0, got '0'"),
                           # checked by the library, named as the option typed (not its keyword)
                           (["--workers", "-1"], "Invalid value for --workers: expected 'auto' or an integer in [0, 1024], got -1"),
                           (["--min-face-score", "5"], "Invalid value for --min-face-score: MTCNN's score is a probability")]:
        result = cli("predict", "--checkpoint", run, probe.photo, *args)
        assert result.exit_code == 2 and fragment in result.output, result.output


def test_detect_frames_needs_a_rate_to_track_and_checks_at_the_call(pretrained, probe):
    import mf2
    from skimage.data import astronaut

    frames = [astronaut()] * 2
    with pytest.raises(ValueError, match="frame_rate: needed to track"):
        probe.detect_frames(frames)  # at the call: no next() needed
    with pytest.raises(ValueError, match=r"frame_rate: expected None or a number > 0 \(frames per second\), got '10'"):
        probe.detect_frames(frames, frame_rate="10")
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got True"):
        probe.detect_frames(frames, frame_rate=10, batch_size=True)
    timed = mf2.Faces.concat(probe.detect_frames(frames, frame_rate=np.float32(10)))
    assert timed["time"].tolist() == [0.0, 0.1] and timed["track"].tolist() == [0, 0]
    with mf2.Detector.from_run(pretrained / "run", device="cpu", num_workers=0, tracking=False) as untracked:
        parts = list(untracked.detect_frames(frames))
    plain = mf2.Faces.concat(parts)
    assert plain["time"].isna().all() and plain["track"].isna().all() and parts[0].attrs["tracking"] is None


def test_annotate_plots_and_openface_never_write_over_a_file_already_there(pretrained, probe, tmp_path):
    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "photo.png").write_text("my own photo")
    faces = probe.detect(probe.photo, progress=False, annotate=folder)
    assert (folder / "photo.png").read_text() == "my own photo"
    assert sorted(p.name for p in folder.iterdir()) == ["photo.png", "photo_2.png"] and faces.attrs["annotated"] == 1
    assert Image.open(folder / "photo_2.png").size == Image.open(probe.photo).size
    result = cli("predict", "--checkpoint", pretrained / "run", probe.photo, "--annotate", folder, "--out",
                 tmp_path / "r.csv")
    assert result.exit_code == 0, result.output
    assert (folder / "photo.png").read_text() == "my own photo" and (folder / "photo_3.png").is_file()
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "photo_aus.png").write_text("mine")
    written = probe.photo_faces.save_plots(plots)
    assert [p.name for p in written] == ["photo_2_detections.png", "photo_2_aus.png"]
    assert (plots / "photo_aus.png").read_text() == "mine"
    openface = tmp_path / "of"
    openface.mkdir()
    (openface / "photo.csv").write_text("mine")
    assert [p.name for p in probe.photo_faces.to_openface(openface)] == ["photo_2.csv"]
    assert (openface / "photo.csv").read_text() == "mine"


def test_plot_timeline_of_an_image_and_aus_as_one_name(probe):
    with pytest.raises(ValueError, match="photo.png is an image .*plot_detections"):
        probe.photo_faces.plot_timeline(str(probe.photo))
    with pytest.raises(ValueError, match="plot_timeline: no video in these results"):
        probe.photo_faces.plot_timeline()
    fig = probe.clip_faces.plot_timeline(aus="AU12")  # one AU, not the lines 'A', 'U', '1', '2'
    assert [line.get_label() for line in fig.axes[2].get_lines() if not line.get_label().startswith("_")] == \
        ["AU12 Lip Corner Puller"]
    fig = probe.clip_faces.plot_timeline(aus=["AU1", "au04"])  # the labels' spelling, any case
    assert [line.get_label().split()[0] for line in fig.axes[2].get_lines()][:2] == ["AU01", "AU04"]
    for aus, fragment in [("AU99", "'AU99'"), (["AU12", 12], "12"), (12, "got 12"), ([], "none")]:
        with pytest.raises(ValueError, match="aus: expected") as e:
            probe.clip_faces.plot_timeline(aus=aus)
        assert fragment in str(e.value) and "AU01, AU02" in str(e.value)
    with pytest.raises(ValueError, match="track: expected None or an integer >= 0, got '0'"):
        probe.clip_faces.plot_timeline(track="0")
    with pytest.raises(ValueError, match="i: expected an integer"):
        probe.photo_faces.plot_detections("0")
    with pytest.raises(ValueError, match="threshold: expected None or a number in"):
        probe.photo_faces.active_aus("0.5")
    with pytest.raises(ValueError, match="concat: expected a list"):
        type(probe.photo_faces).concat(probe.photo_faces)


def test_written_files_get_the_umask_mode_and_clear_errors_for_wrong_paths(probe, tmp_path):
    from mf2.io import OutputPathError, atomic_write_text

    old = os.umask(0o022)
    try:
        faces = probe.photo_faces
        faces.to_csv(tmp_path / "r.csv")
        faces.write_json(tmp_path / "r.json")
        faces.to_openface(tmp_path / "of.csv")
        faces.save_plots(tmp_path / "plots")
        probe.detect(probe.photo, progress=False, annotate=tmp_path / "ann")
        files = [tmp_path / n for n in ("r.csv", "r.csv.json", "r.json", "of.csv", "plots/photo_aus.png",
                                        "ann/photo.png")]
        assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: "0o644" for f in files}
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.txt", "x")
        assert oct((tmp_path / "private.txt").stat().st_mode & 0o777) == "0o600"  # the user's umask, whatever it is
        (tmp_path / "kept.txt").write_text("old")
        os.chmod(tmp_path / "kept.txt", 0o640)
        atomic_write_text(tmp_path / "kept.txt", "new")
        assert oct((tmp_path / "kept.txt").stat().st_mode & 0o777) == "0o640"  # a file replaced keeps its mode
    finally:
        os.umask(old)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "folder.csv").mkdir()
    for write, fragment in [(lambda: faces.to_openface(tmp_path / "notes.txt"), "notes.txt is a file"),
                            (lambda: faces.to_openface(tmp_path / "folder.csv"), "folder.csv is a folder"),
                            (lambda: faces.to_csv(tmp_path / "folder.csv"), "folder.csv is a folder"),
                            (lambda: faces.write_json(tmp_path / "notes.txt/r.json"), "notes.txt is a file"),
                            (lambda: faces.save_plots(tmp_path / "notes.txt"), "notes.txt: it is a file"),
                            (lambda: probe.detect(probe.photo, progress=False, annotate=tmp_path / "notes.txt"),
                             "notes.txt: it is a file")]:
        with pytest.raises(OutputPathError, match=fragment):
            write()
    assert (tmp_path / "notes.txt").read_text() == "mine"


# -- a stranger's second probe: writers, sampling, joins, odd sources ---------------------------------

def test_every_writer_refuses_the_photo_it_was_read_from(probe, tmp_path):
    """to_csv refused to write over a photo it read; write_json, the plots' ``path=`` and
    to_openface wrote over it (``src.replace('.jpg', '.json')`` on 'IMG_1.JPG' is the source's own
    name). All go through one rule now; the photo stays byte-identical."""
    from mf2.io import PathConflict

    photo = tmp_path / "IMG_1.JPG"
    Image.open(probe.photo).convert("RGB").save(photo, format="JPEG")
    before = tree(photo)
    faces = probe.detect(photo, progress=False)
    for write in (lambda: faces.to_csv(photo), lambda: faces.write_json(photo), lambda: faces.to_openface(photo),
                  lambda: faces.to_openface(tmp_path), lambda: faces.plot_detections(0, path=photo),
                  lambda: faces.plot_aus(path=photo)):
        with pytest.raises(PathConflict, match="never writes"):
            write()
    assert tree(photo) == before


@pytest.mark.parametrize("container", ["generator", "series", "set"])
def test_annotate_refuses_the_input_folder_whatever_holds_the_inputs(probe, tmp_path, container):
    import pandas as pd

    from mf2.io import PathConflict

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(probe.photo, folder / "a.png")
    paths = [str(folder / "a.png")]
    given = {"generator": (p for p in paths), "series": pd.Series(paths), "set": set(paths)}[container]
    with pytest.raises(PathConflict, match="never writes"):
        probe.detect(given, progress=False, annotate=folder)
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]


def _clip(path, rate, frames, codec="libx264"):
    import av

    from skimage.data import astronaut

    face = np.ascontiguousarray(astronaut()[:256, 64:320])
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width, stream.pix_fmt = 256, 256, "yuv420p"
        for k in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.roll(face, k, 1), format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize("suffix", [".mkv", ".webm", ".mp4"])
def test_sampling_at_the_videos_own_rate_reads_every_frame(tmp_path, suffix):
    """Matroska and WebM round timestamps to milliseconds (a 30 fps clip's second frame at 0.033 s,
    before 1/30): fps=30 read 6 of 10 frames and fps=15 an irregular 0, 2, 5, 6, 8. A frame within
    half a frame of a sample time is that sample's."""
    from mf2.prediction.sources import video_frames

    path = _clip(tmp_path / f"c{suffix}", 30, 10, "libvpx-vp9" if suffix == ".webm" else "libx264")
    frames_at = lambda fps: [f.frame for f in video_frames(str(path), fps) if not f.error]  # noqa: E731
    assert frames_at(None) == frames_at(30) == frames_at(60) == frames_at(29.97) == list(range(10))
    assert frames_at(15) == [0, 2, 4, 6, 8]
    assert frames_at(10) == [0, 3, 6, 9]


def test_a_multipage_tiff_reads_every_page_and_is_an_image_not_a_video(probe, tmp_path):
    """A TIFF's pages have no duration: at the default rate only pages 0 and 10 of 12 were read,
    uncounted; detect_image took it and detect_video refused it as 'not a video'. Every page is
    read now; an animated GIF is a clip (detect_video), a multi-page TIFF images (detect_image)."""
    from mf2.prediction.sources import InputError

    page = Image.open(probe.photo).convert("RGB").resize((256, 256))
    pages = [page.rotate(0, translate=(3 * k, 0)) for k in range(12)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    pages[0].save(tmp_path / "clip.gif", save_all=True, append_images=pages[1:4], duration=500)
    faces = probe.detect(tmp_path / "pages.tif", progress=False)
    assert faces["frame"].tolist() == list(range(12)) and faces.attrs["counts"]["frames"] == 12
    assert len(probe.detect_image(tmp_path / "pages.tif", progress=False)) == 12
    with pytest.raises(InputError, match="not a video"):
        probe.detect_video(tmp_path / "pages.tif", progress=False)
    assert probe.detect_video(tmp_path / "clip.gif", progress=False)["frame"].tolist() == [0, 1, 2, 3]
    assert probe.detect(tmp_path / "clip.gif", progress=False)["frame"].tolist() == [0, 2]  # 1 fps of 0.5 s frames
    with pytest.raises(InputError, match="a video"):
        probe.detect_image(tmp_path / "clip.gif", progress=False)


def test_concat_keeps_the_tables_settings_and_adds_their_counts(probe):
    """pandas drops ``attrs`` that differ between the joined tables (the counts always do): the
    README's ``Faces.concat(parts)`` lost its thresholds (``active_aus`` fell back to 0.5) and its
    detector (OpenFace confidence by dlib's formula). Settings are kept, counts added, lists
    joined; tables of different settings are refused."""
    from mf2 import Faces

    a, b = probe.photo_faces, probe.clip_faces
    joined = Faces.concat([a, b])
    assert joined.attrs["threshold"] == a.attrs["threshold"] and joined.info == a.info
    assert joined.attrs["counts"]["frames"] == a.attrs["counts"]["frames"] + b.attrs["counts"]["frames"]
    assert joined.active_aus().equals(Faces.concat([a]).active_aus().iloc[:0].pipe(
        lambda _: __import__("pandas").concat([a.active_aus(), b.active_aus()], ignore_index=True)))
    other = b.copy()
    other.attrs = {**b.attrs, "threshold": [0.5] * 12}
    with pytest.raises(ValueError, match="different settings \\(threshold"):
        Faces.concat([a, other])


def test_folders_follow_linked_subfolders_and_globs_pass_folders_over(probe, tmp_path):
    from mf2.prediction.sources import expand

    (tmp_path / "archive/2023").mkdir(parents=True)
    (tmp_path / "photos").mkdir()
    shutil.copy(probe.photo, tmp_path / "archive/2023/a.png")
    shutil.copy(probe.photo, tmp_path / "photos/b.png")
    os.symlink("../archive/2023", tmp_path / "photos/2023")
    os.symlink("..", tmp_path / "photos/2023/loop")  # a loop of links ends
    items, problems = expand(str(tmp_path / "photos"))
    assert [Path(i).relative_to(tmp_path).as_posix() for i in items] == ["photos/2023/a.png", "photos/b.png"]
    assert problems == []
    items_glob, problems_glob = expand(str(tmp_path / "photos/**/*"))
    assert sorted(items_glob)[:2] == sorted(items) and not any(Path(p).is_dir() for p, _ in problems_glob)
    (tmp_path / "empty/sub").mkdir(parents=True)
    assert expand(str(tmp_path / "empt*/**"))[1] == [(str(tmp_path / "empt*/**"), "only folders match (a folder's "
                                                      "files: name the folder, or end the glob in /**/*)")]


def test_text_files_ffmpeg_would_render_are_not_videos(probe, tmp_path):
    """FFmpeg's tty demuxer opens a film's .nfo release notes as a "video" of rendered text."""
    from mf2.prediction.sources import kind, video_frames

    (tmp_path / "release.nfo").write_text("Movie.2024.1080p\nSource: Blu-ray\nEnjoy!\n")
    (tmp_path / "notes.mp4").write_text("Movie.2024.1080p\nSource: Blu-ray\nEnjoy!\n")
    assert kind(tmp_path / "release.nfo") == "unknown"
    assert all(f.error for f in video_frames(str(tmp_path / "notes.mp4"), None))


def test_compressed_tables_are_refused_in_one_line(probe, tmp_path):
    import gzip

    from mf2 import read_faces

    for write in (lambda: probe.photo_faces.to_csv(tmp_path / "f.csv.gz"),
                  lambda: probe.photo_faces.to_csv(tmp_path / "f.csv", compression="gzip")):
        with pytest.raises(ValueError, match="written uncompressed"):
            write()
    assert not list(tmp_path.iterdir())
    (tmp_path / "plain.csv.gz").write_text("source,frame\n")
    with pytest.raises(ValueError, match="not a CSV table"):
        read_faces(tmp_path / "plain.csv.gz")
    with gzip.open(tmp_path / "real.csv.gz", "wt") as f:
        f.write(probe.photo_faces.to_csv())
    assert len(read_faces(tmp_path / "real.csv.gz")) == len(probe.photo_faces)


def test_a_frame_rate_without_finite_times_is_refused(probe):
    with pytest.raises(ValueError, match="frame_rate"):
        next(probe.detect_frames([np.zeros((64, 64, 3), np.uint8)], frame_rate=1e-320))


def test_images_of_separate_calls_stay_separate_when_joined(probe):
    """In-memory images are named by their place in one call: three calls of one array each all
    said <image 0>, and joined they were one source of one frame (one person in tracks())."""
    from skimage.data import astronaut

    from mf2 import Faces

    shots = [astronaut(), np.ascontiguousarray(astronaut()[:, ::-1]), astronaut()[::2, ::2]]
    parts = [probe.detect(x, progress=False) for x in shots]
    joined = Faces.concat(parts)
    assert joined["source"].tolist() == ["<image 0>", "<image 0 of table 1>", "<image 0 of table 2>"]
    assert len(joined.summary()) == 3 and [p["source"].tolist() for p in parts] == [["<image 0>"]] * 3
    frames = list(probe.detect_frames([astronaut(), astronaut()], frame_rate=5))  # one stream: one source
    assert Faces.concat(frames)["source"].unique().tolist() == ["<frames>"]


# -- the same stranger, on the fixes above ---------------------------------------------------------

def test_writers_refuse_the_source_after_a_chdir_and_for_any_pathlike(probe, tmp_path, monkeypatch):
    from mf2.io import PathConflict

    (tmp_path / "photos").mkdir()
    shutil.copy(probe.photo, tmp_path / "photos/a.png")
    monkeypatch.chdir(tmp_path)
    faces = probe.detect("photos/a.png", progress=False)  # the table says "photos/a.png"
    before = tree(tmp_path / "photos")
    monkeypatch.chdir(tmp_path / "photos")

    class Where:  # an os.PathLike that is neither str nor Path (py.path.local, ...)
        def __fspath__(self):
            return str(tmp_path / "photos/a.png")

    for write in (lambda: faces.to_csv(tmp_path / "photos/a.png"), lambda: faces.write_json("a.png"),
                  lambda: faces.plot_aus(path=str(tmp_path / "photos/a.png")), lambda: faces.to_csv(Where())):
        with pytest.raises(PathConflict, match="never writes"):
            write()
    assert tree(tmp_path / "photos") == before


def test_concat_in_a_loop_and_of_a_tables_pieces(probe, tmp_path):
    from skimage.data import astronaut

    from mf2 import Faces

    acc = probe.detect(astronaut(), progress=False)
    for x in (np.ascontiguousarray(astronaut()[:, ::-1]), astronaut()[::2, ::2]):
        acc = Faces.concat([acc, probe.detect(x, progress=False)])
    assert acc["source"].nunique() == 3
    both = probe.detect([probe.photo, probe.clip, tmp_path / "missing.png"], progress=False, log=lambda m: None)
    pieces = [both[both["source"] == s] for s in both["source"].unique()]
    again = Faces.concat(pieces)
    assert again.attrs["counts"] == both.attrs["counts"] and again.attrs["skipped"] == both.attrs["skipped"]


def test_gifs_without_durations_are_sampled_and_globs_say_their_folders(probe, tmp_path):
    from mf2.prediction.sources import animated_frames, expand

    page = Image.open(probe.photo).convert("RGB").resize((64, 64))
    frames = [page.rotate(0, translate=(k, 0)) for k in range(20)]  # (Pillow merges identical frames)
    frames[0].save(tmp_path / "zero.gif", save_all=True, append_images=frames[1:], duration=0)
    assert [f.frame for f in animated_frames(str(tmp_path / "zero.gif"), 1)] == [0, 10]  # 0.1 s a frame, as shown
    (tmp_path / "photos/2023").mkdir(parents=True)
    shutil.copy(probe.photo, tmp_path / "photos/a.png")
    shutil.copy(probe.photo, tmp_path / "photos/2023/b.png")
    os.symlink("..", tmp_path / "photos/2023/up")  # a loop of links
    items, problems = expand(str(tmp_path / "photos/*"))  # a plain glob: its folder is said
    assert items == [str(tmp_path / "photos/a.png")] and [p for p, _ in problems] == [str(tmp_path / "photos/2023")]
    items, problems = expand(str(tmp_path / "photos/**/*"))  # each real folder once, the loop not followed
    assert sorted(items) == [str(tmp_path / "photos/2023/b.png"), str(tmp_path / "photos/a.png")] and problems == []
    paths = np.array([str(tmp_path / "photos/a.png"), str(tmp_path / "photos/2023/b.png")], dtype=object)
    assert expand(paths)[0] == list(paths) and expand(paths.astype(str))[0] == list(paths)  # df["path"].to_numpy()
