"""Helpers shared by the tests."""

import os

import pytest
import torch

from mf2.ops import _native

# CUDA cases run where a GPU is present and skip cleanly elsewhere.
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]


def require_native():
    """Native-vs-reference tests need the extension; MF2_REQUIRE_NATIVE=1 (CI) turns a missing
    build into a failure instead of a skip."""
    if not _native.available():
        if os.environ.get("MF2_REQUIRE_NATIVE") == "1":
            pytest.fail(f"native extension required but not available: {_native.load_error()}")
        pytest.skip(f"native extension not available: {_native.load_error()}")


def skip_without_cuda_kernels(device):
    if device == "cuda" and not _native.cuda_compiled():
        pytest.skip("this build has no CUDA kernels")
