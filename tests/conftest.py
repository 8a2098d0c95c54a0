import os

import pytest
from click.testing import CliRunner

import mf2
from helpers import require_native
from mf2.cli.main import main
from mf2.ops import _native


def pytest_report_header(config):
    return [f"mf2 {mf2.__version__} from {os.path.dirname(mf2.__file__)}",
            f"native extension: {_native.build_info()}"]


@pytest.fixture
def native_required():
    require_native()


def text_encoder_args() -> list[str]:
    """``--text`` for the tests' caches: the packaged MiniLM unless MF2_TEST_TEXT names another
    encoder folder (a machine without the MiniLM package, e.g. a GPU machine)."""
    return ["--text", os.environ["MF2_TEST_TEXT"]] if os.environ.get("MF2_TEST_TEXT") else []


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory):
    """A tiny trained MF² run: 64 SynthFACS images -> template captions -> features -> 1 epoch.
    Read-only for the tests that share it (root/d: data, root/f.zarr: cache, root/run: run)."""
    root = tmp_path_factory.mktemp("pretrained")
    runner = CliRunner()
    for args in (["synth", "--n", "64", "--out", str(root / "d"), "--images-per-video", "4", "--no-baseline"],
                 ["caption", "--manifest", str(root / "d/manifest.jsonl")],
                 ["extract-features", "--manifest", str(root / "d/manifest.captioned.jsonl"), "--out", str(root / "f.zarr"),
                  *text_encoder_args()],
                 ["pretrain", "--cache", str(root / "f.zarr"), "--out", str(root / "run"), "--epochs", "1",
                  "--batch-size", "8", "--warmup-steps", "5"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
    return root


def store_arrays(path) -> tuple[dict, dict]:
    """Every array of a Zarr store (``group/name`` -> values) and its attributes."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    out = {}

    def visit(g, prefix=""):
        for name, arr in g.arrays():
            out[prefix + name] = arr[:]
        for name, sub in g.groups():
            visit(sub, f"{prefix}{name}/")

    visit(group)
    return out, dict(group.attrs)
