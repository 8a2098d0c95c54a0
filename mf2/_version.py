"""The installed package's version (a leaf: every module may read it without importing the package)."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("mf2")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
