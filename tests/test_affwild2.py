"""Aff-Wild2 / ABAW -> MFA: every annotation layout, the frame-index mapping, drops and their
reasons, the video-level split with _left/_right kept together, and the error messages."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from mf2.cli.main import main
from mf2.data.affwild2 import AffWild2Error, read_affwild2, recording
from mf2.data.labels import AUS, EMOTIONS
from mf2.data.manifest import read_manifest
from mf2.data.mfa import build_mfa, split_by_recording

AU_HEADER = ",".join(AUS)

# (AU folder, EXPR folder, train folder name, EXPR classes)
LAYOUTS = {
    "abaw2": ("annotations/AU_Set", "annotations/EXPR_Set", "Training_Set", 7),
    "abaw2_train_set": ("annotations/AU_Set", "annotations/EXPR_Set", "Train_Set", 7),
    "abaw3": ("3rd ABAW Annotations/AU_Detection_Challenge", "3rd ABAW Annotations/EXPR_Classification_Challenge", "Train_Set", 8),
    "third": ("Third ABAW Annotations/AU_Detection_Challenge", "Third ABAW Annotations/EXPR_Classification_Challenge", "Train_Set", 8),
    "abaw5": ("5th_ABAW_Annotations/AU_Detection_Challenge", "5th_ABAW_Annotations/EXPR_Recognition_Challenge", "Train_Set", 8),
    "abaw6": ("6th ABAW Annotations/AU_Detection_Challenge", "6th ABAW Annotations/EXPR_Recognition_Challenge", "Train_Set", 8),
}


def write_video(root, layout, video, aus, expr, frames, split="train"):
    """aus: list of 12-lists; expr: list of ints; frames: frame numbers (1-based) with an image."""
    au_dir, expr_dir, train_name, n_classes = LAYOUTS[layout]
    set_name = train_name if split == "train" else "Validation_Set"
    if aus is not None:
        p = root / au_dir / set_name / f"{video}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(AU_HEADER + "\n" + "".join(",".join(map(str, a)) + "\n" for a in aus))
    if expr is not None:
        p = root / expr_dir / set_name / f"{video}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(",".join(EMOTIONS[:n_classes]) + "\n" + "".join(f"{e}\n" for e in expr))
    folder = root / "cropped_aligned" / video
    folder.mkdir(parents=True, exist_ok=True)
    for k in frames:
        Image.new("RGB", (4, 4), (k % 255, 0, 0)).save(folder / f"{k:05d}.jpg")


def au_row(i):
    return [(i + j) % 2 for j in range(12)]


def small_tree(root, layout):
    n = 6  # emotions cycle over 0..5 so 7-class headers stay valid
    write_video(root, layout, "v1", [au_row(i) for i in range(10)], [i % n for i in range(10)],
                [k for k in range(1, 11) if k != 3])  # frame 3 has no face
    expr = [i % n for i in range(8)]
    expr[1] = expr[4] = -1
    aus = [au_row(i) for i in range(8)]
    aus[6] = [-1] * 12
    write_video(root, layout, "v2", aus, expr, range(1, 9), split="val")
    write_video(root, layout, "v3_left", [au_row(i) for i in range(5)], [1] * 5, range(1, 6))
    write_video(root, layout, "v3_right", [au_row(i) for i in range(5)], [2] * 5, range(1, 6), split="val")
    write_video(root, layout, "v4", [au_row(i) for i in range(12)], [3] * 10, range(1, 13))  # 12 AU lines, 10 EXPR
    write_video(root, layout, "v5", [au_row(i) for i in range(4)], None, range(1, 5))  # AU only


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_reads_with_exact_counts(tmp_path, layout):
    small_tree(tmp_path, layout)
    rows, report, source = read_affwild2(tmp_path)
    assert report.frames["annotated"] == 10 + 8 + 5 + 5 + 10
    assert report.frames["no_image"] == 1
    assert report.frames["expr_missing"] == 2
    assert report.frames["au_missing"] == 1
    assert report.frames["beyond_shorter_file"] == 2
    assert report.line_count_mismatch == {"v4": [12, 10]}
    assert report.videos_au_only == ["v5"] and report.videos_expr_only == []
    assert len(rows) == 9 + 5 + 5 + 5 + 10
    by_id = {r["id"]: r for r in rows}
    # frame k <-> data line k (line k + 1 of the file), 5-digit 1-based names
    r = by_id["v1/00004"]
    assert r["image"].endswith("cropped_aligned/v1/00004.jpg")
    assert [r[a] for a in AUS] == au_row(3) and r["emotion"] == 3
    assert "v1/00003" not in by_id and "v2/00002" not in by_id and "v2/00007" not in by_id
    assert by_id["v2/00008"]["emotion"] == 7 % 6
    assert {r["video"] for r in rows} == {"v1", "v2", "v3_left", "v3_right", "v4"}


def test_build_mfa_splits_by_recording_and_balances(tmp_path):
    root = tmp_path / "aw"
    for i in range(40):
        people = ("_left", "_right") if i % 5 == 0 else ("",)
        for suffix in people:
            n = 10 + (i * 7) % 13
            write_video(root, "abaw6", f"video{i}{suffix}", [au_row(k) for k in range(n)],
                        [(k + i) % 8 for k in range(n)], range(1, n + 1))
    rows, report, source = read_affwild2(root)
    stats = build_mfa(rows, tmp_path / "mfa", val_fraction=0.2, seed=3, source=source)
    m = read_manifest(tmp_path / "mfa" / "manifest.jsonl")
    split_of = {}
    for r in m.rows:
        assert split_of.setdefault(r["video"], r["split"]) == r["split"]  # a video in one split only
    for rec in {recording(v) for v in split_of}:
        assert len({s for v, s in split_of.items() if recording(v) == rec}) == 1  # left/right together
    tr, va = stats["splits"]["train"], stats["splits"]["val"]
    assert va["images"] / (tr["images"] + va["images"]) == pytest.approx(0.2, abs=0.05)
    assert va["videos"] / (tr["videos"] + va["videos"]) == pytest.approx(0.2, abs=0.06)
    for split in (tr, va):  # balanced: every class has the same count in a split
        assert len(set(split["per_class"].values())) == 1
    assert (tmp_path / "mfa" / "stats.json").is_file()
    assert stats["summary"].startswith(f"{stats['images']:,} images from {stats['videos']} videos; train ")
    # images resolve relative to the manifest
    assert all(m.image_path(r).is_file() for r in m.rows)


def _split_tree(root):
    for i in range(40):
        people = ("_left", "_right") if i % 5 == 0 else ("",)
        for suffix in people:
            n = 10 + (i * 7) % 13
            write_video(root, "abaw6", f"video{i}{suffix}", [au_row(k) for k in range(n)],
                        [(k + i) % 8 for k in range(n)], range(1, n + 1))
    return read_affwild2(root)


def test_a_test_split_of_other_recordings_is_held_out(tmp_path):
    rows, _, source = _split_tree(tmp_path / "aw")
    plain = split_by_recording(rows, 0.2, 3)
    assert set(plain.values()) == {"train", "val"}
    # without a test fraction the split is the one every earlier version chose (the search's own seed)
    val = {rec for rec, s in plain.items() if s == "val"}
    assert split_by_recording(rows, 0.2, 3, test_fraction=0.0) == plain and len(val) >= 2
    stats = build_mfa(rows, tmp_path / "mfa", val_fraction=0.2, test_fraction=0.2, seed=3, source=source)
    m = read_manifest(tmp_path / "mfa" / "manifest.jsonl")
    split_of = {}
    for r in m.rows:
        assert split_of.setdefault(recording(r["video"]), r["split"]) == r["split"]  # a recording in one split
    sp = stats["splits"]
    total = sum(sp[k]["images"] for k in ("train", "val", "test"))
    for name in ("val", "test"):
        assert sp[name]["images"] / total == pytest.approx(0.2, abs=0.06), name
        assert len(set(sp[name]["per_class"].values())) == 1  # balanced in every split
    assert "; test " in stats["summary"] and stats["settings"]["test_fraction"] == 0.2
    result = CliRunner().invoke(main, ["build-dataset", "--affwild2", str(tmp_path / "aw"), "--out", str(tmp_path / "o"),
                                       "--test-fraction", "0.95"])
    assert result.exit_code == 1 and "test_fraction" in result.output


def test_cli_prints_the_summary_in_the_papers_words(tmp_path):
    small_tree(tmp_path / "aw", "abaw5")
    result = CliRunner().invoke(main, ["build-dataset", "--affwild2", str(tmp_path / "aw"), "--out", str(tmp_path / "o"),
                                       "--per-class", "3", "--val-fraction", "0.3"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert " images from " in lines[0] and "; train " in lines[0] and "; val " in lines[0]
    assert lines[1] == "paper (MFA): 34,696 images from 151 videos; train 31,320 images / 134 videos; val 3,376 / 17"
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["dropped"]["no_image"] == 1 and stats["source"]["line_count_mismatch"] == {"v4": [12, 10]}


@pytest.mark.parametrize("mutate,message", [
    (lambda root: (root / "annotations/AU_Set/Training_Set/v1.txt").write_text("AU1,AU2\n0,1\n"),
     r"v1.txt: bad AU header: expected AU1,AU2,AU4"),
    (lambda root: (root / "annotations/EXPR_Set/Training_Set/v1.txt").write_text("Happy,Sad\n0\n"),
     r"v1.txt: bad EXPR header: expected Neutral,Anger"),
    (lambda root: (root / "annotations/AU_Set/Training_Set/v1.txt").write_text(AU_HEADER + "\n" + "0," * 11 + "2\n"),
     r"v1.txt:line 2: expected 12 values in \{0, 1, -1\}, got '0,0,0,0,0,0,0,0,0,0,0,2'"),
    (lambda root: (root / "annotations/EXPR_Set/Training_Set/v1.txt").write_text(",".join(EMOTIONS[:7]) + "\n7\n"),
     r"v1.txt:line 2: expected an integer in -1..6, got '7'"),
    (lambda root: (root / "3rd ABAW Annotations/AU_Detection_Challenge/Train_Set").mkdir(parents=True) or
     (root / "3rd ABAW Annotations/EXPR_Classification_Challenge/Train_Set").mkdir(parents=True),
     r"several annotation editions found \(3rd ABAW Annotations, annotations\); pass --annotations"),
])
def test_bad_trees_give_one_line_errors(tmp_path, mutate, message):
    small_tree(tmp_path, "abaw2")
    mutate(tmp_path)
    with pytest.raises(AffWild2Error, match=message):
        read_affwild2(tmp_path)
    result = CliRunner().invoke(main, ["build-dataset", "--affwild2", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_no_annotations_and_no_frames(tmp_path):
    with pytest.raises(AffWild2Error, match="no ABAW annotations found"):
        read_affwild2(tmp_path)
    small_tree(tmp_path, "abaw3")
    import shutil

    shutil.rmtree(tmp_path / "cropped_aligned")
    with pytest.raises(AffWild2Error, match="no cropped_aligned/ frames folder found; pass --frames"):
        read_affwild2(tmp_path)


def test_build_from_any_manifest(tmp_path):
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(64):
        Image.new("RGB", (4, 4)).save(tmp_path / "img" / f"{i}.png")
        rows.append({"id": f"f{i}", "image": f"img/{i}.png", "video": f"vid{i // 4}", "emotion": EMOTIONS[i % 8],
                     **{au: (i >> (j % 5)) & 1 for j, au in enumerate(AUS)}})
    rows[5]["AU4"] = -1
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(main, ["build-dataset", "--manifest", str(tmp_path / "m.jsonl"), "--out",
                                       str(tmp_path / "out"), "--val-fraction", "0.25"])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "out/stats.json").read_text())
    assert stats["dropped"]["filtered_au_missing"] == 1
    m = read_manifest(tmp_path / "out/manifest.jsonl")
    assert Path(m.image_path(m.rows[0])).is_file()
