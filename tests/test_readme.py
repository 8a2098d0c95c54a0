"""Every shell and Python block of the README says how it is checked, and is:

* ``setup-install`` / ``setup-test``: run by ``.ci/run`` itself (install + quickstart; pytest);
* ``readme-test: run``: run here, as written (bash, or this Python), in one folder holding what
  they read (a small ``mf2-quickstart/`` run, a ``photos/`` folder, a ``clips/`` video), in the
  README's order, so a block may read what a block above it wrote;
* ``readme-test: parse (why)``: not runnable here (Aff-Wild2, GPUs, hours of CPU), so each
  command's arguments are parsed by the real command-line parser: every option exists and
  every value has the right type and choice (a Python block is compiled).
"""

import argparse
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mf2.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!-- (?P<marker>[^>]*?) -->\n)?```(?P<lang>bash|python)\n(?P<body>.*?)```", re.S)


def blocks(lang: str = "bash"):
    """(marker, body) of the README's ``lang`` blocks (None: all, as (marker, lang, body))."""
    text = (ROOT / "README.md").read_text()
    found = [(m.group("marker") or "", m.group("lang"), m.group("body")) for m in BLOCK.finditer(text)]
    return found if lang is None else [(m, b) for m, lg, b in found if lg == lang]


def commands(body: str) -> list[list[str]]:
    """Shell commands of a block: continuations joined, comments dropped, split at &&,
    leading VAR=value assignments removed."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            cmd, words = words[:cut], words[cut + 1:]
            while cmd and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", cmd[0]):
                cmd = cmd[1:]
            if cmd:
                out.append(cmd)
    return out


class _Parsed(Exception):
    pass


def parse(cmd: list[str]) -> None:
    """Parse one command's arguments with its own parser, without running it."""
    if cmd[0] == "torchrun":
        cmd = cmd[cmd.index("--no-python") + 1:]
    if cmd[0] == "mf2":
        sub = main.get_command(None, cmd[1])
        assert sub is not None, f"unknown command: {shlex.join(cmd)}"
        sub.make_context(cmd[1], cmd[2:])  # raises click.UsageError on a bad option or value
    elif cmd[0] == "python" and cmd[1].startswith("benchmarks/"):
        original = argparse.ArgumentParser.parse_args

        def parse_then_stop(self, args=None, namespace=None):
            original(self, args, namespace)  # exits 2 on a bad argument
            raise _Parsed

        argparse.ArgumentParser.parse_args = parse_then_stop
        argv = sys.argv
        try:
            sys.argv = cmd[1:]
            with pytest.raises(_Parsed):
                runpy.run_path(str(ROOT / cmd[1]), run_name="__main__")
        finally:
            argparse.ArgumentParser.parse_args, sys.argv = original, argv
    else:
        raise AssertionError(f"no parser known for: {shlex.join(cmd)}")


def test_every_shell_block_says_how_it_is_checked():
    found = blocks()
    assert len(found) >= 10
    for _, body in blocks("python"):
        compile(body, "README.md", "exec")  # every Python block is at least valid Python
    for marker, _, body in blocks(None):
        assert marker in ("setup-install", "setup-test", "readme-test: run") or marker.startswith("readme-test: parse ("), \
            f"README block without a check marker:\n{body}"


@pytest.mark.parametrize("body", [b for m, b in blocks() if m.startswith("readme-test: parse")])
def test_commands_parse(body):
    for cmd in commands(body):
        parse(cmd)


def test_setup_commands_are_what_ci_runs():
    marked = dict((m, b) for m, b in blocks() if m.startswith("setup-"))
    assert commands(marked["setup-test"]) == [["pytest"]]
    install = commands(marked["setup-install"])
    assert install[0] == ["pip", "install", "torch==2.13.0"] and install[-1] == ["mf2", "quickstart"]
    ci = (ROOT / ".ci/run").read_text()
    assert "setup-install" in ci and "setup-test" in ci


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """What the runnable blocks read: a small quickstart, photos and a video clip."""
    import av
    from skimage.data import astronaut

    root = tmp_path_factory.mktemp("readme")
    result = CliRunner().invoke(main, ["quickstart", "--out", str(root / "mf2-quickstart"), "--n", "96", "--epochs",
                                       "1", "--dfn-epochs", "1"])
    assert result.exit_code == 0, result.output
    (root / "photos").mkdir()
    Image.fromarray(astronaut()).save(root / "photos/astronaut.jpg")
    (root / "clips").mkdir()
    face = np.ascontiguousarray(astronaut()[:256, 64:320])
    with av.open(str(root / "clips/a.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.height, stream.width, stream.pix_fmt = 256, 256, "yuv420p"
        for _ in range(5):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(face, format="rgb24")))
        container.mux(stream.encode())
    return root


@pytest.mark.parametrize("lang,body", [(lg, b) for m, lg, b in blocks(None) if m == "readme-test: run"])
def test_runnable_blocks_run_as_written(lang, body, workdir):
    command = ["bash", "-e", "-o", "pipefail", "-c", body] if lang == "bash" else [sys.executable, "-c", body]
    proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
