"""Feature extraction split across processes (issue 26): ``torchrun --nproc_per_node 2
--no-python mf2 extract-features`` with gloo on the CPU writes the same store, bit for bit, as one
process; a torchrun SIGKILLed mid-way resumes, with two processes or with one, to that store; a
run stopped inside a unit (texts encoded together) resumes to it; how the rows are dealt out and
chunked. Each process uses one thread (torchrun's default), and so does the one-process run: on
a CPU the vision backbone's last bits depend on the thread count (README)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mf2.data import synthfacs as sf
from mf2.data.manifest import read_manifest
from mf2.features.extract import ExtractSettings, extract_features, plan, unit_rows
from mf2.features.store import chunk_rows, merge_intervals

from .conftest import store_arrays, text_encoder_args

TORCHRUN = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
MF2 = shutil.which("mf2") or os.path.join(os.path.dirname(sys.executable), "mf2")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MF2_DIST_BACKEND": "gloo"}
needs_torchrun = pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun not installed")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranks")
    sf.write_synthfacs(root / "d", 24, 112, seed=5, workers=1, images_per_video=4)
    subprocess.run([MF2, "caption", "--manifest", str(root / "d/manifest.jsonl")], check=True, capture_output=True)
    return root / "d/manifest.captioned.jsonl"


def _extract(manifest, out, *extra, processes: int = 1, wait: bool = True):
    cmd = [MF2, "extract-features", "--manifest", str(manifest), "--out", str(out), "--batch-size", "2",
           *text_encoder_args(), *extra]
    if processes > 1:
        cmd = [TORCHRUN, "--standalone", "--nproc_per_node", str(processes), "--no-python", *cmd]
    if not wait:
        return subprocess.Popen(cmd, env=ENV, cwd=out.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    proc = subprocess.run(cmd, env=ENV, cwd=out.parent, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def reference(manifest):
    """One process, one thread."""
    out = manifest.parent.parent / "one.zarr"
    _extract(manifest, out)
    return store_arrays(out)


def _assert_same(store, reference):
    arrays, attrs = store_arrays(store)
    ref, ref_attrs = reference
    assert arrays.keys() == ref.keys()
    for name in ref:
        np.testing.assert_array_equal(arrays[name], ref[name], err_msg=name)
    assert attrs["complete"] and attrs["count"] == ref_attrs["count"] and attrs["signature"] == ref_attrs["signature"]
    assert attrs["partial_counts"] == ref_attrs["partial_counts"]
    assert not (store / "progress").exists()  # the processes' records are folded in and gone
    return attrs


@needs_torchrun
def test_two_processes_write_the_one_process_store(manifest, reference, tmp_path):
    proc = _extract(manifest, tmp_path / "two.zarr", processes=2)
    attrs = _assert_same(tmp_path / "two.zarr", reference)
    assert attrs["summary"]["processes"] == 2 and attrs["summary"]["extracted_this_run"] == 24
    assert "2 processes" in proc.stdout and proc.stdout.count("24 rows -> ") == 1  # one report, by the first


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every process under it (torchrun starts its workers in sessions of
    their own: killing its group would leave them running)."""
    children = {}
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                ppid = int(open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(stat))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _written(store) -> int:
    """Rows written so far: the root count and every process's record (read while it runs)."""
    total = 0
    try:
        total = json.loads((store / "zarr.json").read_text())["attributes"].get("count", 0)
        for record in (store / "progress").glob("*/zarr.json"):
            total += sum(iv[2] for iv in json.loads(record.read_text())["attributes"].get("intervals", []))
    except (OSError, ValueError, KeyError):
        pass
    return total


@needs_torchrun
@pytest.mark.parametrize("resume_with", [2, 1])
def test_a_killed_torchrun_resumes_to_the_same_store(manifest, reference, tmp_path, resume_with):
    store = tmp_path / "killed.zarr"
    job = _extract(manifest, store, processes=2, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and _written(store) < 6 and job.poll() is None:
        time.sleep(0.05)
    _kill_tree(job.pid)
    job.wait()
    time.sleep(0.5)  # the workers' exits
    _, attrs = store_arrays(store)
    assert not attrs["complete"] and 6 <= _written(store) < 24
    done = _extract(manifest, store, processes=resume_with)
    assert "resuming" in done.stdout
    _assert_same(store, reference)


def test_a_run_stopped_inside_a_unit_resumes_to_the_same_store(manifest, tmp_path):
    """Texts are encoded per unit (here 8 rows, 4 blocks of 2): a run stopped after 3 blocks
    re-encodes that unit's texts when it resumes, and writes the bits an uninterrupted run does."""
    m = read_manifest(manifest)
    settings = ExtractSettings(batch_size=2, unit=8, text=os.environ.get("MF2_TEST_TEXT", "auto"))
    extract_features(m, tmp_path / "full.zarr", settings, log=lambda *_: None)

    class Stop(Exception):
        pass

    blocks = []

    def stop_after_three(b):
        blocks.append(b)
        if len(blocks) == 3:
            raise Stop

    with pytest.raises(Stop):
        extract_features(m, tmp_path / "stopped.zarr", settings, progress=stop_after_three, log=lambda *_: None)
    _, attrs = store_arrays(tmp_path / "stopped.zarr")
    assert attrs["unit"] == 8 and attrs["count"] % 8 and not attrs["complete"]  # inside the first unit
    summary = extract_features(m, tmp_path / "stopped.zarr", settings, log=lambda *_: None)
    assert summary["resumed_from"] == attrs["count"]
    full, _ = store_arrays(tmp_path / "full.zarr")
    resumed, _ = store_arrays(tmp_path / "stopped.zarr")
    for name in full:
        np.testing.assert_array_equal(resumed[name], full[name], err_msg=name)
    assert summary["text_cache"]["reused"] > 0 and set(summary["stage_shares"]) >= {"vision", "text", "write"}
    assert summary["bound_by"] in ("decode", "face", "vision", "pooling", "text", "write")


def test_rows_are_dealt_out_at_the_alignment_and_cover_what_is_left():
    done = [[0, 10], [40, 44]]
    parts = plan(100, done, 8, 3)
    rows = [r for part in parts for a, b in part for r in range(a, b)]
    assert sorted(rows) == [r for r in range(100) if not (r < 10 or 40 <= r < 44)]  # each left row once
    for part in parts:
        for a, b in part:
            assert (a % 8 == 0 or a in (10, 44)) and (b % 8 == 0 or b in (40, 100))  # cut at 8s only
    sizes = [sum(b - a for a, b in part) for part in parts]
    assert max(sizes) - min(sizes) <= 8  # about even
    assert plan(20, [[0, 20]], 4, 2) == [[], []] and plan(6, [], 8, 2) == [[[0, 6]], []]
    assert merge_intervals([[5, 9], [0, 3], [3, 4], [8, 12], [20, 20]]) == [[0, 4], [5, 12]]


def test_chunks_hold_divisors_of_the_unit():
    assert unit_rows(40, 8) == 8 and unit_rows(31320, 32) == 512 and unit_rows(3_000_000, 32) == 512
    assert unit_rows(31320, 48) == 384 and unit_rows(800, 32) == 32  # (at least 16 units)
    for per_sample, unit in [(1, 256), (302_592, 256), (589_824, 384), (3_000_000, 96)]:
        rows = chunk_rows(per_sample, 10**6, unit)
        assert unit % rows == 0 and (rows == 1 or rows * per_sample <= 2 << 20)
    assert chunk_rows(1, 40) == 40  # without a unit: as before (about 2 MB, at most the store)
