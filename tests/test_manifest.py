"""Manifests: JSONL/CSV round trips and one-line errors naming file, line and column."""

import json

import pytest
from click.testing import CliRunner

from mf2.cli.main import main
from mf2.data.labels import AUS
from mf2.data.manifest import ManifestError, read_manifest, write_manifest


def make(tmp_path, rows, name="m.jsonl", images=True):
    for r in rows:
        if images and "image" in r:
            (tmp_path / r["image"]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / r["image"]).write_bytes(b"x")
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def row(i, **kw):
    return {"id": f"r{i}", "image": f"img/{i}.jpg", "emotion": "Happiness", **{au: 0 for au in AUS}, **kw}


def test_round_trip_jsonl_and_csv(tmp_path):
    rows = [row(0, AU12=1, landmarks=[[1.0, 2.0]] * 68), row(1, emotion=3, AU4=-1), row(2, emotion=-1)]
    m = read_manifest(make(tmp_path, rows))
    assert [r["emotion"] for r in m.rows] == [4, 3, -1]
    assert m.rows[1]["AU4"] == -1 and m.rows[0]["AU12"] == 1 and m.rows[0]["video"] == "r0"
    for name in ("out.jsonl", "out.csv"):
        write_manifest(m.rows, tmp_path / name)
        again = read_manifest(tmp_path / name)
        assert again.rows == m.rows


@pytest.mark.parametrize("bad,message", [
    ({"emotion": "Joy"}, r"m.jsonl:line 2: emotion: unknown emotion 'Joy' \(expected one of Neutral, Anger"),
    ({"emotion": 9}, r"m.jsonl:line 2: emotion: emotion index 9 outside -1..7"),
    ({"AU6": 2}, r"m.jsonl:line 2: AU6: AU value 2 outside \{0, 1, -1\}"),
    ({"AU9": 1}, r"m.jsonl:line 2: AU9: AU outside the set \(AU1, AU2"),
    ({"landmarks": [[1, 2]] * 67}, r"m.jsonl:line 2: landmarks: expected 68 x 2 numbers, got 67 entries"),
    ({"split": "dev"}, r"m.jsonl:line 2: split: unknown split 'dev'"),
    ({"image": "img/missing.jpg"}, r"m.jsonl:line 2: image: missing image file 'img/missing.jpg'"),
    ({"id": "r0"}, r"m.jsonl:line 2: id: duplicate id 'r0' \(first on line 1\)"),
])
def test_bad_rows_give_one_line_errors_and_counted_skips(tmp_path, bad, message):
    rows = [row(0), row(1), row(2)]
    path = make(tmp_path, rows)
    rows[1].update(bad)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ManifestError, match=message) as info:
        read_manifest(path)
    assert "\n" not in str(info.value)
    m = read_manifest(path, skip_bad=True)
    assert len(m) == 2 and m.skipped == [{"line": 2, "reason": str(info.value).split("line 2: ", 1)[1]}]


def test_csv_errors_name_the_data_line(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    path = tmp_path / "m.csv"
    path.write_text("id,image,emotion,AU1\nx,a.jpg,Happiness,1\ny,a.jpg,Happy,0\n")
    with pytest.raises(ManifestError, match=r"m.csv:line 3: emotion: unknown emotion 'Happy'"):
        read_manifest(path)


def test_empty_and_missing_manifests(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ManifestError, match="manifest has no usable rows"):
        read_manifest(tmp_path / "empty.jsonl")
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ManifestError, match=r"bad.jsonl:line 1: not valid JSON"):
        read_manifest(tmp_path / "bad.jsonl")


def test_cli_reports_a_bad_manifest_in_one_line(tmp_path):
    rows = [row(0), row(1, emotion="Joy")]
    path = make(tmp_path, rows)
    result = CliRunner().invoke(main, ["build-dataset", "--manifest", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {path}:line 2: emotion: unknown emotion 'Joy' "
                                                  "(expected one of Neutral, Anger, Disgust, Fear, Happiness, Sadness, "
                                                  "Surprise, Other, an index 0..7, or -1)"]
