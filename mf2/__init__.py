"""mf2: multimodal facial state analysis (facial Action Units and emotions) with the MF² model.

Sub-packages: ``mf2.ops`` (native ops with PyTorch references), ``mf2.cli`` (the ``mf2``
command). Importing ``mf2`` itself stays cheap: it loads no model and touches no GPU.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("mf2")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
