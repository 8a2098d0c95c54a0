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


# -- the README's figures are measured ones ------------------------------------------------------------
def _prose() -> str:
    """The README without its code blocks and inline code (commands, option values, file names)."""
    text = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(), flags=re.S)
    return re.sub(r"`[^`]*`", "", text)


# Numbers of the README that are not measurements: a version, and the paper's own MFA sizes (34,696
# images; 31,320 // 56 x 30 = 16,770 steps of Table VI), which mf2 quotes beside its own.
NOT_FIGURES = {"3.10", "34,696", "16,770", "2,112"}  # Python, the paper's counts, a 700-px frame's row bytes
NUMBER = re.compile(r"(?<![\w.])[+−-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w.])|(?<![\w.,])[+−-]?\d+\.\d+(?![\w.])")


def _measured() -> list[float]:
    """Every number in benchmarks/results/ (and the paper's own figures, shown beside ours)."""
    text = "\n".join(p.read_text(errors="replace") for p in sorted((ROOT / "benchmarks/results").iterdir())
                     if p.suffix in (".json", ".md", ".txt"))
    text += (ROOT / "mf2/evaluation/paper.py").read_text()
    return [float(x.replace(",", "")) for x in re.findall(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?", text)]


def _found(figure: str, pool: list[float]) -> bool:
    """``figure`` as shown (its decimals) is one of the measured numbers: as it is, as a percentage,
    in millions (parameters), thousandths (ms -> s), or its inverse (a ratio shown as 1/x)."""
    text = figure.replace("−", "-").replace(",", "")
    x, decimals = abs(float(text)), len(text.split(".")[1]) if "." in text else 0
    for v in pool:
        for t in (v, 100 * v, v / 1e6, v / 1e3, 1 / v if v else 0.0):
            if round(abs(t), decimals) == round(x, decimals):
                return True
    return False


def test_every_figure_the_readme_quotes_is_in_benchmarks_results():
    pool = _measured()
    figures = [n for n in NUMBER.findall(_prose()) if n.replace("−", "-").lstrip("+-") not in NOT_FIGURES]
    assert len(figures) > 50
    missing = sorted({f for f in figures if not _found(f, pool)})
    assert not missing, f"README figures that no file in benchmarks/results/ holds: {missing}"


PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9]+(?:_[A-Z0-9]+)+\b|\b[A-Z]{2,}\b(?= (?:s|ms|faces/s|images/s|GB|MiB|%)\b)|"
                         r"\b(?:TODO|TBD|FIXME|XXX)\b|\?\?")


def test_the_readme_has_no_unfilled_placeholders():
    """The speed paragraph once shipped 'PHOTOS_NO faces/s', 'after LOAD s of loading'."""
    found = sorted(set(PLACEHOLDER.findall(_prose())))
    assert not found, f"unfilled placeholders in the README: {found}"


def test_the_checks_see_a_placeholder_and_an_unmeasured_figure():
    assert PLACEHOLDER.findall("at PHOTOS_NO faces/s after LOAD s of loading") == ["PHOTOS_NO", "LOAD"]
    assert not _found("123456.789", _measured()) and _found("52.88", _measured())
