"""Nothing silent, round two (issue 21): what mf2 writes and reads back is verified when read,
arguments are checked once for every command, resumed runs say what they do, one writer per
output, network waits bounded in total. Each case asserts the exit status, the one-line message
and, where a command was pointed at its own inputs, that they are byte-identical afterwards."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr

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
