"""mf2 predict: the astronaut photo (one face, valid probabilities, an explanation in the
vocabulary), a folder with a broken file and a faceless image, a video written here, the
extraction's own feature path, batch-size invariance, and ITG decoding."""

import csv
import io
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mf2.captions.consistency import au_sentence_correct, sentences
from mf2.cli.main import main
from mf2.data.labels import AUS
from mf2.evaluation.cache_predictions import predict_split
from mf2.features.backbones import load_tokenizer
from mf2.features.reader import CacheReader
from mf2.models.config import MF2Config
from mf2.models.mf2 import MF2
from mf2.models.qformer import BOS, PAD, UNK
from mf2.models.explain import tidy
from mf2.prediction.table import AU_COLUMNS, EMOTION_COLUMNS, LANDMARK_COLUMNS
from mf2.runs import load_model


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    from skimage.data import astronaut as photo

    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(photo()).save(path)
    return path


def _predict(*args):
    result = CliRunner().invoke(main, ["predict", *map(str, args)])
    return result


def _valid_row(row):
    assert row["status"] == "ok"
    assert all(0.0 <= row["aus"][a] <= 1.0 for a in AUS)
    assert sum(row["emotions"].values()) == pytest.approx(1.0, abs=1e-5)
    assert row["emotion"] == max(row["emotions"], key=row["emotions"].get)
    assert np.array(row["landmarks"]).shape == (68, 2)
    x0, y0, x1, y1 = row["box"]
    assert x1 > x0 and y1 > y0


def _made_of(word: str, pieces: set) -> bool:
    """Whether ``word`` is a concatenation of vocabulary pieces (a decoded word is its tokens
    joined, '##' pieces without a space, punctuation with the space cleaned up)."""
    ok = [True] + [False] * len(word)
    for end in range(1, len(word) + 1):
        ok[end] = any(ok[start] and word[start:end] in pieces for start in range(max(0, end - 30), end))
    return ok[-1]


@pytest.mark.parametrize("kind", ["mf2", "dfn"])
def test_astronaut_one_face_valid_probabilities_and_explanation(pretrained, astronaut, tmp_path, kind):
    run = pretrained / "run"
    if kind == "dfn":
        run = tmp_path / "dfn"
        result = CliRunner().invoke(main, ["finetune", "--dfn", "--from", str(pretrained / "run"), "--cache",
                                           str(pretrained / "f.zarr"), "--out", str(run), "--epochs", "1",
                                           "--batch-size", "8", "--warmup-steps", "2"])
        assert result.exit_code == 0, result.output
    out, ann = tmp_path / "r.json", tmp_path / "ann"
    result = _predict("--checkpoint", run, astronaut, "--out", out, "--explain", "--annotate", ann)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 1 and data["skipped"] == []
    row = data["rows"][0]
    _valid_row(row)
    x0, y0, x1, y1 = row["box"]
    assert 150 < (x0 + x1) / 2 < 300 and 60 < (y0 + y1) / 2 < 200  # her face, not the flag or the shuttle
    text = row["explanation"]
    # grounded (the default): the heads' emotion and active AUs, each AU in its own words
    assert row["explanation_consistent"] is True, text
    said = sentences(text)
    assert said[0].startswith(("The person", "This face", "The expression")) and not said[1].startswith("AU"), text
    for sentence in said[2:]:
        assert au_sentence_correct(sentence.split(" ", 1)[0], sentence, True), sentence
    if kind == "mf2":  # the decoder alone writes words of the ITG vocabulary
        result = _predict("--checkpoint", run, astronaut, "--out", out, "--explain", "--grounding", "none")
        assert result.exit_code == 0, result.output
        text = json.loads(out.read_text())["rows"][0]["explanation"]
        assert text.strip()
        model, _, _ = load_model(pretrained / "run")
        tokenizer = load_tokenizer(json.loads((pretrained / "run/config.json").read_text())["features"]["text"]["name"])
        pieces = {t.removeprefix("##") for t in tokenizer.convert_ids_to_tokens([i for i in model.cfg.vocab if i > 0])}
        assert all(_made_of(word.lower(), pieces) for word in text.split()), text  # made of the ITG vocabulary
    with Image.open(ann / "astronaut.png") as im:
        assert im.format == "PNG" and im.size == Image.open(astronaut).size


def test_folder_with_a_broken_file_and_a_faceless_image(pretrained, astronaut, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(astronaut).convert("RGB").save(folder / "a_astronaut.jpg", quality=95)
    (folder / "b_broken.png").write_bytes(astronaut.read_bytes()[:2000])  # truncated
    Image.new("RGB", (160, 120), (128, 128, 128)).save(folder / "c_blank.png")
    (folder / "notes.txt").write_text("not an image")
    out, ann = tmp_path / "r.csv", tmp_path / "ann"
    result = _predict("--checkpoint", pretrained / "run", folder, "--out", out, "--annotate", ann)
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "b_broken.png" in result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["source"].split("/")[-1], r["status"]) for r in rows] == [("a_astronaut.jpg", "ok"), ("c_blank.png", "no face")]
    assert sum(float(rows[0][e]) for e in EMOTION_COLUMNS) == pytest.approx(1.0, abs=1e-4)
    assert all(0 <= float(rows[0][a]) <= 1 for a in AU_COLUMNS)
    assert rows[0]["emotion"] in EMOTION_COLUMNS and all(rows[0][c] != "" for c in LANDMARK_COLUMNS)  # 68 x, 68 y
    assert rows[1]["emotion"] == "" and rows[1]["AU12"] == ""
    with Image.open(ann / "a_astronaut.jpg") as im:
        assert im.format == "JPEG" and im.size == (512, 512)
    with Image.open(ann / "c_blank.png") as im:
        assert im.format == "PNG" and im.size == (160, 120)
    assert not (ann / "b_broken.png").exists()


def test_nothing_readable_is_a_one_line_error(pretrained, tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    result = _predict("--checkpoint", pretrained / "run", tmp_path / "x.png", tmp_path / "missing.jpg")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == "Error: nothing could be read (2 inputs skipped)"
    result = _predict("--checkpoint", tmp_path, tmp_path / "x.png")
    assert result.exit_code == 1 and "not a run folder" in result.output and "Traceback" not in result.output
    # output paths of the wrong kind are refused before any work (not a traceback after it)
    result = _predict("--checkpoint", pretrained / "run", tmp_path / "x.png", "--out", tmp_path)
    assert result.exit_code == 2 and f"--out {tmp_path} is a folder: give a file" in result.output
    result = _predict("--checkpoint", pretrained / "run", tmp_path / "x.png", "--annotate", tmp_path / "x.png")
    assert result.exit_code == 2 and "is a file" in result.output


def _write_video(path, frames, fps=10):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        container.mux(stream.encode())


def test_video_sampled_at_fps_in_any_batch_size(pretrained, astronaut, tmp_path):
    face = np.asarray(Image.open(astronaut))[:256, 64:320]
    frames = [face] * 20 + [np.full_like(face, 128)] * 10  # 2 s of the face, 1 s of grey, at 10 fps
    video = tmp_path / "clip.mp4"
    _write_video(video, frames)
    outs = {}
    for batch in (1, 32):
        out = tmp_path / f"v{batch}.json"
        result = _predict("--checkpoint", pretrained / "run", video, "--fps", "2", "--batch-size", batch, "--out", out,
                          "--annotate", tmp_path / f"ann{batch}")
        assert result.exit_code == 0, result.output
        outs[batch] = json.loads(out.read_text())["rows"]
    rows = outs[32]
    assert [(r["frame"], r["time"], r["status"]) for r in rows] == [
        (0, 0.0, "ok"), (5, 0.5, "ok"), (10, 1.0, "ok"), (15, 1.5, "ok"), (20, 2.0, "no face"), (25, 2.5, "no face")]
    for r in rows[:4]:
        _valid_row(r)
    for a, b in zip(outs[1], outs[32]):  # a batch of one face or of all: the same probabilities
        if a["status"] == "ok":
            np.testing.assert_allclose(list(a["aus"].values()), list(b["aus"].values()), atol=1e-4)
            np.testing.assert_allclose(list(a["emotions"].values()), list(b["emotions"].values()), atol=1e-4)
    names = sorted(p.name for p in (tmp_path / "ann32").iterdir())
    assert names == [f"clip_f{i:06d}.jpg" for i in (0, 5, 10, 15, 20, 25)]
    with Image.open(tmp_path / "ann32" / names[0]) as im:
        assert im.format == "JPEG" and im.size == (256, 256)


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_predict_uses_the_extraction_feature_path(pretrained, tmp_path, tta):
    """--face aligned on a cache's own images gives what the model says on that cache's rows; with
    --tta flip, what evaluate's test-time flip says (the mirrored crop, its AU centres swapped, is
    the cache's mirrored view)."""
    lines = (pretrained / "d/manifest.jsonl").read_text().splitlines()[:6]
    (pretrained / "d/sub.jsonl").write_text("\n".join(lines) + "\n")
    cache = tmp_path / "sub.zarr"
    result = CliRunner().invoke(main, ["extract-features", "--manifest", str(pretrained / "d/sub.jsonl"), "--out",
                                       str(cache), "--landmarks", "dlib", "--augment", "flip"])
    assert result.exit_code == 0, result.output
    images = [pretrained / "d" / json.loads(line)["image"] for line in lines]
    out = tmp_path / "r.json"
    result = _predict("--checkpoint", pretrained / "run", *images, "--face", "aligned", "--out", out, "--tta", tta)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    model, _, _ = load_model(pretrained / "run")
    emo, au, _, _ = predict_split(model, CacheReader(cache, None), torch.device("cpu"),
                                  tta=None if tta == "none" else tta)
    np.testing.assert_allclose([list(r["emotions"].values()) for r in rows], emo, atol=1e-4)
    np.testing.assert_allclose([list(r["aus"].values()) for r in rows], au, atol=1e-4)
    if tta == "flip":  # and it is not the plain prediction
        plain = predict_split(model, CacheReader(cache, None), torch.device("cpu"))[1]
        assert np.abs(plain - au).max() > 1e-3


def _tiny_branch():
    torch.manual_seed(0)
    cfg = MF2Config.from_preset("small", vision_dim=24, text_dim=16, vocab=[0, -1, -2] + list(range(3, 40)),
                                dropout=0.0)
    return MF2(cfg).eval().emo_vl


def test_greedy_decoding_is_the_stepwise_argmax():
    branch = _tiny_branch()
    vision, _ = branch.image(torch.randn(2, 5, 24))
    end = 7
    out = branch.generate(vision, end, max_tokens=12)
    for i, seq in enumerate(out):
        ids = [BOS]
        for _ in range(12):
            logits = branch.lm_head(branch.qformer.decode(vision[i:i + 1], torch.tensor([ids]),
                                                          torch.ones(1, len(ids), dtype=torch.bool)))[0, -1]
            logits[[PAD, BOS, UNK]] = float("-inf")
            if len(ids) == 1:
                logits[end] = float("-inf")
            nxt = int(logits.argmax())
            if nxt == end:
                break
            ids.append(nxt)
        assert seq == ids[1:]
        assert seq and not {PAD, BOS, UNK} & set(seq)


def test_beam_search_of_width_one_is_greedy_and_prompts_are_kept():
    branch = _tiny_branch()
    vision, _ = branch.image(torch.randn(3, 5, 24))
    end = 7
    assert branch.generate(vision, end, max_tokens=8, beams=1) == branch.generate(vision, end, max_tokens=8)
    beam = branch.generate(vision, end, max_tokens=8, beams=4)
    assert all(seq and len(seq) <= 8 and not {PAD, BOS, UNK, end} & set(seq) for seq in beam)
    prompted = branch.generate(vision, end, max_tokens=5, beams=2, prefix=[11, 12])
    assert all(seq[:2] == [11, 12] and len(seq) <= 7 for seq in prompted)


def test_tidy_makes_wordpiece_output_readable():
    assert tidy("au12 ( lip corner puller ) : the lip corners are pulled up . the face looks happy .") == \
        "AU12 (Lip Corner Puller): the lip corners are pulled up. The face looks happy."
