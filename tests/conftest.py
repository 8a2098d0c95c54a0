import os

import pytest

import mf2
from helpers import require_native
from mf2.ops import _native


def pytest_report_header(config):
    return [f"mf2 {mf2.__version__} from {os.path.dirname(mf2.__file__)}",
            f"native extension: {_native.build_info()}"]


@pytest.fixture
def native_required():
    require_native()
