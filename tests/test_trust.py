"""Nothing silent, round two (issue 21): what mf2 writes and reads back is verified when read,
arguments are checked once for every command, resumed runs say what they do, one writer per
output, network waits bounded in total. Each case asserts the exit status, the one-line message
and, where a command was pointed at its own inputs, that they are byte-identical afterwards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from .conftest import text_encoder_args
from .test_hostile_inputs import cli, one_line_error, tree


@pytest.fixture
def world(pretrained, tmp_path):
    """A private copy of the shared tiny world: data (d/), cache (f.zarr), MF² run (run/)."""
    for name in ("d", "f.zarr", "run"):
        shutil.copytree(pretrained / name, tmp_path / name)
    return tmp_path


# -- integrity of what mf2 writes and reads back -------------------------------------------------

def test_a_flipped_byte_in_a_store_chunk_is_an_error_not_other_numbers(world):
    """A chunk that still decodes after a flipped byte (lz4 literals) used to give other features."""
    group = zarr.open_group(str(world / "f.zarr"), mode="r")
    rows = group["vision/tokens"].chunks[0]
    first_val = int(np.flatnonzero(group["meta/split"][:] == "val")[0])
    chunk = world / f"f.zarr/vision/tokens/c/{first_val // rows}/0/0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    before = tree(world / "f.zarr")
    result = cli("evaluate", "--checkpoint", world / "run", "--cache", world / "f.zarr", "--bootstrap", "0")
    one_line_error(result, "array vision/tokens, rows", "checksum")
    assert tree(world / "f.zarr") == before and not (world / "run/eval_val").exists()


def _flip_bytes(path: Path, where: float = 0.5, n: int = 4) -> None:
    data = bytearray(path.read_bytes())
    at = int(len(data) * where)
    for k in range(n):
        data[at + k] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def trained(pretrained, tmp_path_factory):
    """The shared tiny world with a DFN run (1 epoch) and an export of the MF² run beside it."""
    root = tmp_path_factory.mktemp("trained")
    for name in ("d", "f.zarr", "run"):
        shutil.copytree(pretrained / name, root / name)
    result = cli("finetune", "--dfn", "--from", root / "run", "--cache", root / "f.zarr", "--out", root / "dfn",
                 "--epochs", "1", "--batch-size", "8")
    assert result.exit_code == 0, result.output
    assert cli("export", root / "run", "--out", root / "model").exit_code == 0
    return root


@pytest.fixture
def copy_of(trained, tmp_path):
    def copy(*names):
        for name in names:
            shutil.copytree(trained / name, tmp_path / name)
        return tmp_path
    copy.trained = trained
    return copy


def _checkpoint(run: Path) -> Path:
    return run / "checkpoints" / json.loads((run / "checkpoints/best.json").read_text())["path"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "header"])
def test_damaged_weights_are_one_line_everywhere_they_are_read(copy_of, damage):
    """Bit-flipped weights used to load and predict (neutral 1.000); truncated or header-corrupted
    ones were a SafetensorError traceback in predict, evaluate, --resume, finetune and export."""
    w = copy_of("d", "f.zarr", "run", "model")
    weights = _checkpoint(w / "run") / "model.safetensors"
    if damage == "flip":
        _flip_bytes(weights)
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-1000])
    else:
        data = bytearray(weights.read_bytes())
        data[8:40] = b"{not json" + b" " * 23
        weights.write_bytes(bytes(data))
    image = next((w / "d/images").iterdir())
    before = tree(w / "run")
    what = "differs from the one recorded" if damage == "flip" else "model.safetensors"
    for result in (cli("predict", "--checkpoint", w / "run", image, "--face", "aligned", "--out", w / "p.csv"),
                   cli("evaluate", "--checkpoint", w / "run", "--cache", w / "f.zarr", "--bootstrap", "0"),
                   cli("finetune", "--dfn", "--from", w / "run", "--cache", w / "f.zarr", "--out", w / "dfn2"),
                   cli("export", w / "run", "--out", w / "exp2")):
        one_line_error(result, what)
    assert not (w / "p.csv").exists() and not (w / "exp2").exists() and not (w / "run/eval_val").exists()
    assert tree(w / "run") == before
    # the same for an exported folder's weights, and for the optimizer state a --resume reads
    _flip_bytes(w / "model/model.safetensors")
    one_line_error(cli("predict", "--checkpoint", w / "model", image, "--face", "aligned"), "differs from the one recorded")
    shutil.rmtree(w / "run")
    shutil.copytree(copy_of.trained / "run", w / "run")
    optim = _checkpoint(w / "run") / "optim.safetensors"
    optim.write_bytes(optim.read_bytes()[:100])
    one_line_error(cli("pretrain", "--cache", w / "f.zarr", "--out", w / "run", "--resume", "--epochs", "2"),
                   "optim.safetensors")


def test_an_exported_config_that_does_not_fit_its_weights_is_one_line(copy_of):
    """Another width gave a 173-line state_dict traceback; a missing section a KeyError."""
    w = copy_of("d", "model")
    config_path = w / "model/config.json"
    config = json.loads(config_path.read_text())
    image = next((w / "d/images").iterdir())
    (w / "model/SHA256SUMS").unlink()  # an edit by hand, with the record gone too
    config_path.write_text(json.dumps({**config, "model": {**config["model"], "ffn": 2 * config["model"]["ffn"]}}))
    one_line_error(cli("predict", "--checkpoint", w / "model", image, "--face", "aligned"),
                   "do not fit the model its config.json describes", "ffn")
    for missing in ("features", "model"):
        config_path.write_text(json.dumps({k: v for k, v in config.items() if k != missing}))
        one_line_error(cli("predict", "--checkpoint", w / "model", image, "--face", "aligned"), f"missing '{missing}'")
    broken = {**config, "features": {**config["features"], "pooling": {"R": "three"}}}
    config_path.write_text(json.dumps(broken))
    one_line_error(cli("predict", "--checkpoint", w / "model", image, "--face", "aligned"), "features.pooling.R")


def test_an_edited_exported_config_fails_its_record(copy_of):
    w = copy_of("d", "model")
    config_path = w / "model/config.json"
    config_path.write_text(config_path.read_text().replace('"hidden": 128', '"hidden": 64'))
    one_line_error(cli("predict", "--checkpoint", w / "model", next((w / "d/images").iterdir()), "--face", "aligned"),
                   "config.json", "differs from the one recorded")


def test_a_dfn_run_is_no_base_for_finetuning(copy_of):
    """`finetune --dfn --from <a DFN run>` was AttributeError: 'DFNModel' object has no attribute 'emo_vl'."""
    w = copy_of("f.zarr", "run", "dfn")
    for mode in ("--dfn", "--full"):
        result = cli("finetune", mode, "--from", w / "dfn", "--cache", w / "f.zarr", "--out", w / "again")
        one_line_error(result, "is a DFN run", "its base MF² run is", "pretrained MF² run")
        assert not (w / "again").exists()


def test_mf2_debug_shows_the_traceback_behind_a_one_line_error(copy_of):
    w = copy_of("f.zarr", "run", "dfn")
    args = ("finetune", "--dfn", "--from", w / "dfn", "--cache", w / "f.zarr", "--out", w / "again")
    one_line_error(cli(*args), "is a DFN run")
    result = cli(*args, env={"MF2_DEBUG": "1"})
    assert isinstance(result.exception, ValueError) and "is a DFN run" in str(result.exception)


# -- MF² needs its text ----------------------------------------------------------------------------

def test_a_cache_without_captions_says_so_and_pretraining_refuses_it(world):
    """extract-features from the uncaptioned manifest cached no text and pretrain trained "MF²"
    with the classifier losses only, without a word."""
    result = cli("extract-features", "--manifest", world / "d/manifest.jsonl", "--out", world / "bare.zarr",
                 *text_encoder_args())
    assert result.exit_code == 0, result.output
    assert "warning: no captions cached" in result.output and "mf2 caption" in result.output
    summary = zarr.open_group(str(world / "bare.zarr"), mode="r").attrs["summary"]
    assert summary["captions"] == {"types": [], "au_sentences": False, "rows": {}}
    captioned = zarr.open_group(str(world / "f.zarr"), mode="r").attrs["summary"]["captions"]
    assert captioned["types"] == ["au", "emotion", "key_au"] and captioned["au_sentences"]
    one_line_error(cli("pretrain", "--cache", world / "bare.zarr", "--out", world / "mf2"),
                   "holds no emotion captions", "no per-AU sentences", "mf2 caption", "--no-align")
    assert not (world / "mf2").exists()
    one_line_error(cli("finetune", "--dfn", "--from", world / "run", "--cache", world / "bare.zarr", "--out",
                       world / "dfn"), "holds no captions", "--align-weight 0")
    ok = cli("pretrain", "--cache", world / "bare.zarr", "--out", world / "cls", "--no-align", "--epochs", "1",
             "--batch-size", "8")
    assert ok.exit_code == 0, ok.output
    logged = json.loads((world / "cls/log.jsonl").read_text().splitlines()[0])
    assert not any(k.endswith(("itc", "itm", "itg")) for k in logged)


# -- arguments checked once, for every command ------------------------------------------------------

def test_an_empty_input_is_refused_not_the_current_folder(world, monkeypatch):
    """`mf2 predict --checkpoint RUN "" --out p.csv` predicted on everything under the current folder."""
    monkeypatch.chdir(world / "d/images")
    for args in (["predict", "--checkpoint", world / "run", "", "--out", world / "p.csv"],
                 ["predict", "--checkpoint", world / "run", "  ", "--out", world / "p.csv"],
                 ["predict", "--checkpoint", "", "x.png"],
                 ["evaluate", "--checkpoint", world / "run", "--cache", ""],
                 ["pretrain", "--cache", " ", "--out", world / "x"],
                 ["extract-features", "--manifest", "", "--out", world / "x.zarr"]):
        result = cli(*args)
        assert result.exit_code == 2 and "empty" in result.output, result.output
    assert not (world / "p.csv").exists() and not (world / "x").exists()
    from mf2 import Detector
    from mf2.prediction.sources import InputError

    with pytest.raises(InputError, match="an empty path"):
        Detector.from_run(world / "run", face="aligned").detect("")


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "gpu", "cpu:x"])
def test_a_device_this_machine_lacks_is_one_line_before_any_output(world, device):
    """`--device cuda` without CUDA was an AssertionError and left an empty output folder."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    commands = [("pretrain", "--cache", world / "f.zarr", "--out", world / "o1"),
                ("finetune", "--dfn", "--from", world / "run", "--cache", world / "f.zarr", "--out", world / "o2"),
                ("evaluate", "--checkpoint", world / "run", "--cache", world / "f.zarr", "--out", world / "o3"),
                ("extract-features", "--manifest", world / "d/manifest.captioned.jsonl", "--out", world / "o4.zarr"),
                ("predict", "--checkpoint", world / "run", world / "d/images", "--out", world / "o5.csv")]
    for args in commands:
        result = cli(*args, "--device", device)
        if device in ("gpu", "cpu:x"):  # not a device name at all: the parser says so
            assert result.exit_code == 2 and "expected auto, cpu, cuda or cuda:N" in result.output, result.output
        else:
            one_line_error(result, f"device {device}", "CUDA is not available")
    assert not any((world / f"o{k}").exists() for k in (1, 2, 3)) and not (world / "o4.zarr").exists()
    assert not (world / "o5.csv").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--lr", "nan"], "finite"), (["--lr", "inf"], "finite"), (["--lr", "-1"], "> 0"),
    (["--weight-decay", "nan"], "finite"), (["--gate-scale", "inf"], "finite"), (["--batch-size", "1"], ">= 2"),
    (["--epochs", "0"], ">= 1"), (["--warmup-steps", "0"], ">= 1"), (["--train-rows", "-5"], ">= 1"),
    (["--adapter-blocks", "zero"], "'all' or a positive integer"), (["--bottleneck", "2.5"], "an integer"),
])
def test_numeric_options_are_finite_and_in_range(world, args, fragment):
    result = cli("finetune", "--dfn", "--from", world / "run", "--cache", world / "f.zarr", "--out", world / "o",
                 *args)
    assert result.exit_code == 2 and fragment in result.output, result.output
    assert not (world / "o").exists()


@pytest.mark.parametrize("args", [["--threshold", "nan"], ["--fps", "inf"], ["--min-face-score", "nan"],
                                  ["--batch-size", "0"], ["--beams", "0"]])
def test_predict_numbers_are_checked_when_parsed(world, args):
    result = cli("predict", "--checkpoint", world / "run", world / "d/images", *args)
    assert result.exit_code == 2 and "expected" in result.output, result.output


# -- resume says what it does -----------------------------------------------------------------------

@pytest.mark.parametrize("args,field", [(["--batch-size", "4"], "train.batch_size"), (["--lr", "1e-2"], "train.lr"),
                                        (["--preset", "paper"], "model.preset"), (["--seed", "3"], "train.seed"),
                                        (["--no-au-vl"], "model.au_vl"), (["--tasks", "au"], "train.tasks"),
                                        (["--no-align"], "run.align")])
def test_resume_refuses_options_that_contradict_the_run(world, args, field):
    """`pretrain --resume --preset paper --batch-size 8 --lr 1e-2` ignored all three flags."""
    before = tree(world / "run")
    result = cli("pretrain", "--cache", world / "f.zarr", "--out", world / "run", "--resume", "--epochs", "2", *args)
    one_line_error(result, "--resume", "contradicts the run's recorded " + field)
    assert tree(world / "run") == before


def test_resume_accepts_what_the_run_recorded_and_applies_speed_options(world):
    config = json.loads((world / "run/config.json").read_text())
    same = ["--batch-size", str(config["train"]["batch_size"]), "--lr", "auto", "--preset", "small",
            "--activation-checkpointing", "all"]
    result = cli("pretrain", "--cache", world / "f.zarr", "--out", world / "run", "--resume", "--epochs", "2", *same)
    assert result.exit_code == 0, result.output
    assert "--activation-checkpointing all (the run recorded none): applied" in result.output


def test_dfn_resume_refuses_another_base_or_other_adapters(copy_of):
    from mf2.runs import RunFolder

    w = copy_of("f.zarr", "run", "dfn")
    recorded = RunFolder(w / "dfn").base_run().path
    base = ["finetune", "--dfn", "--cache", w / "f.zarr", "--out", w / "dfn", "--resume", "--epochs", "2"]
    one_line_error(cli(*base, "--from", w / "run"), "is not its base run")  # a copy is another run
    one_line_error(cli(*base, "--from", recorded, "--bottleneck", "16"), "contradicts the run's recorded dfn.bottleneck")
    mixed = cli("finetune", "--full", "--from", w / "run", "--cache", w / "f.zarr", "--out", w / "x", "--gate-scale", "0.5")
    assert mixed.exit_code == 2 and "--gate-scale: a DFN option, but --full" in mixed.output, mixed.output


# -- one writer per output ---------------------------------------------------------------------------

def test_a_second_writer_of_an_output_stops_at_once(world):
    """Two `mf2 predict` runs writing one --out both printed success; the file held one run's rows."""
    from mf2.io import exclusive

    image = next((world / "d/images").iterdir())
    out = world / "faces.csv"
    with exclusive(out, "faces.csv"):  # another process holds it (same lock, same kind of holder)
        one_line_error(cli("predict", "--checkpoint", world / "run", image, "--face", "aligned", "--out", out),
                       "is writing")
        with exclusive(world / "report", "r"):
            one_line_error(cli("evaluate", "--checkpoint", world / "run", "--cache", world / "f.zarr", "--out",
                               world / "report"), "is writing")
    assert not out.exists()
    ok = cli("predict", "--checkpoint", world / "run", image, "--face", "aligned", "--out", out)
    assert ok.exit_code == 0, ok.output


def test_a_glob_that_cannot_match_the_output_is_not_refused(world, monkeypatch):
    """`mf2 predict "*.jpg" --out faces.csv` in the photos' folder was refused as inside the input."""
    from PIL import Image

    photos = world / "photos"
    photos.mkdir()
    for src in list((world / "d/images").iterdir())[:2]:
        Image.open(src).convert("RGB").save(photos / (src.stem + ".jpg"))
    monkeypatch.chdir(photos)
    before = tree(photos)
    ok = cli("predict", "--checkpoint", world / "run", "*.jpg", "--face", "aligned", "--out", "faces.csv")
    assert ok.exit_code == 0, ok.output
    assert {p.name for p in photos.iterdir()} >= {"faces.csv"} and len(Faces_rows(photos / "faces.csv")) == 2
    one_line_error(cli("predict", "--checkpoint", world / "run", "*", "--face", "aligned", "--out", "more.csv"),
                   "reached by the input glob")
    one_line_error(cli("predict", "--checkpoint", world / "run", "**/*.jpg", "--face", "aligned", "--annotate", "ann"),
                   "reached by the input glob")
    assert {k: v for k, v in tree(photos).items() if not k.endswith(("faces.csv", "faces.csv.json", ".lock"))} == before


def Faces_rows(path):
    from mf2 import read_faces

    return read_faces(path)


# -- the same file through several paths ------------------------------------------------------------

def test_one_image_named_twice_is_read_once_and_never_in_two_splits(world):
    """Two manifest rows pointing at one image (different labels) could put it in train and val."""
    from mf2.data.manifest import read_manifest, write_manifest

    rows = [json.loads(line) for line in (world / "d/manifest.jsonl").read_text().splitlines()]
    twin = dict(rows[0], id="twin", image="./" + rows[0]["image"], video="elsewhere")
    write_manifest(rows + [twin], world / "d/twice.jsonl")
    m = read_manifest(world / "d/twice.jsonl")
    assert len(m.rows) == len(rows) and m.merged == [{"line": len(rows) + 1, "same_as": 1, "image": twin["image"]}]
    other = dict(twin, emotion="Anger" if rows[0]["emotion"] != "Anger" else "Fear")
    write_manifest(rows + [other], world / "d/conflict.jsonl")
    before = tree(world / "d")
    one_line_error(cli("build-dataset", "--manifest", world / "d/conflict.jsonl", "--out", world / "mfa"),
                   f"line {len(rows) + 1}", "is the same file as line 1", "other labels")
    (world / "d/images/link.png").symlink_to(world / "d" / rows[1]["image"])
    linked = dict(rows[1], id="linked", image="images/link.png", split="val" if rows[1]["split"] != "val" else "train")
    write_manifest(rows + [linked], world / "d/linked.jsonl")
    one_line_error(cli("extract-features", "--manifest", world / "d/linked.jsonl", "--out", world / "l.zarr"),
                   "is the same file as line 2")
    built = cli("build-dataset", "--manifest", world / "d/twice.jsonl", "--out", world / "mfa")
    assert built.exit_code == 0, built.output
    out = [json.loads(line) for line in (world / "mfa/manifest.jsonl").read_text().splitlines()]
    assert len({r["image"] for r in out}) == len(out) and "twin" not in {r["id"] for r in out}
    assert {k: v for k, v in tree(world / "d").items() if "twice" not in k and "linked" not in k and "link.png"
            not in k} == {k: v for k, v in before.items() if "twice" not in k}


# -- network waits bounded in total ------------------------------------------------------------------

def test_retry_after_is_parsed_whatever_it_says():
    from mf2.captions.openai_backend import parse_retry_after

    assert parse_retry_after("5") == 5.0 and parse_retry_after("-5") == 0.0 and parse_retry_after("inf") == float("inf")
    assert parse_retry_after("nan") is None and parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    assert 3000 < parse_retry_after("Thu, 01 Jan 1970 01:00:00 GMT", now=0.0) <= 3600


@pytest.mark.parametrize("value", ["inf", "1e12", "Fri, 31 Dec 9999 23:59:59 GMT", "-5", "nan"])
def test_back_off_stays_inside_the_total_deadline(tmp_path, value):
    """A server answering 429 with `Retry-After: inf` kept `mf2 caption --timeout 5` busy for 301 s
    on two rows: the deadline did not cover the back-off."""
    import time

    from mf2.captions.openai_backend import OpenAICaptioner
    from mf2.captions.run import caption_manifest
    from mf2.data import synthfacs as sf
    from mf2.data.manifest import read_manifest

    from .fake_openai import FakeOpenAI

    sf.write_synthfacs(tmp_path / "d", 2, 112, seed=0, workers=1)
    m = read_manifest(tmp_path / "d/manifest.jsonl")
    with FakeOpenAI(script=(f"429:{value}",)) as server:
        captioner = OpenAICaptioner(model="fake-4o", base_url=server.base_url, api_key="test", timeout=3)
        t0 = time.monotonic()
        rows, report = caption_manifest(m, captioner, types=["emotion"], cache_dir=tmp_path / "c", concurrency=2,
                                        backoff=0.01)
        elapsed = time.monotonic() - t0
    assert len(report.failed) == 2 and not any("caption_emotion" in r for r in rows)
    assert elapsed < 3 + 2, elapsed  # the deadline, plus a margin for a loaded machine
    for failure in report.failed:
        assert "past the 3 s deadline" in failure["reason"] or "gave up after 6 attempts" in failure["reason"] \
            or "within the 3 s deadline" in failure["reason"], failure


def test_a_server_that_keeps_failing_stops_the_run(tmp_path):
    from mf2.captions.openai_backend import CaptionError, OpenAICaptioner
    from mf2.captions.run import caption_manifest
    from mf2.data import synthfacs as sf
    from mf2.data.manifest import read_manifest

    from .fake_openai import FakeOpenAI

    sf.write_synthfacs(tmp_path / "d", 6, 112, seed=0, workers=1)
    m = read_manifest(tmp_path / "d/manifest.jsonl")
    with FakeOpenAI(script=("500",)) as server:
        captioner = OpenAICaptioner(model="fake-4o", base_url=server.base_url, api_key="test", timeout=5)
        with pytest.raises(CaptionError, match="4 captions failed in a row"):
            caption_manifest(m, captioner, cache_dir=tmp_path / "c", concurrency=1, backoff=0, max_attempts=2,
                             max_consecutive_failures=4)


# -- kill -9, then resume: bit-identical ---------------------------------------------------------------

@pytest.mark.parametrize("trainer", ["pretrain", "dfn"])
def test_sigkill_then_resume_equals_an_uninterrupted_run(world, trainer):
    import signal
    import subprocess
    import sys
    import time

    from mf2.runs import RunFolder

    def command(out):
        if trainer == "pretrain":
            return ["pretrain", "--cache", world / "f.zarr", "--out", out, "--epochs", "3", "--batch-size", "8"]
        return ["finetune", "--dfn", "--from", world / "run", "--cache", world / "f.zarr", "--out", out, "--epochs", "3",
                "--batch-size", "8"]

    straight = cli(*command(world / "straight"))
    assert straight.exit_code == 0, straight.output
    job = subprocess.Popen([sys.executable, "-m", "mf2.cli.main", *map(str, command(world / "killed"))],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=world)
    try:
        deadline = time.monotonic() + 600
        while not (world / "killed/checkpoints/latest.json").exists() and job.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        job.send_signal(signal.SIGKILL)
        job.wait(60)
    finally:
        job.kill()
    resumed = cli(*command(world / "killed"), "--resume")
    if "has trained all its 3 epochs" not in resumed.output:  # the kill may have come after the last epoch
        assert resumed.exit_code == 0, resumed.output
    a, b = (RunFolder(world / name) for name in ("straight", "killed"))
    wa, wb = (RunFolder.model_state(r.latest_checkpoint()) for r in (a, b))
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    timing = ("seconds", "samples_per_s")
    rows = [[{k: v for k, v in r.items() if k not in timing} for r in run.log_rows()] for run in (a, b)]
    assert rows[0] == rows[1]
