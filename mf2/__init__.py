"""mf2: multimodal facial state analysis (facial Action Units and emotions) with the MF² model.

The Python API: ``mf2.Detector`` (a trained run or exported model folder applied to photos,
folders and videos), ``mf2.Faces`` (its results, a pandas DataFrame of one row per face) and
``mf2.read_faces`` (such a table back from CSV). Sub-packages: ``mf2.ops`` (native ops with
PyTorch references), ``mf2.cli`` (the ``mf2`` command). Importing ``mf2`` itself stays cheap:
the API is imported on first use, and nothing loads a model or touches a GPU before that.
"""

from mf2._version import __version__

__all__ = ["Detector", "Faces", "__version__", "read_faces"]


def __getattr__(name: str):
    """The API's names, imported when first asked for (``from mf2 import Detector``)."""
    if name == "Detector":
        from mf2.detector import Detector

        return Detector
    if name == "Faces":
        from mf2.faces import Faces

        return Faces
    if name == "read_faces":
        from mf2.faces import read_faces

        return read_faces
    raise AttributeError(f"module 'mf2' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
