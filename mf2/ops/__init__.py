"""Native ops of mf2, each with a pure-PyTorch reference.

``au_region_pool`` (AU-region features) and ``dfn_pathway`` (the DFN side pathway) run on the
compiled extension when it supports the tensors, otherwise on the reference; ``backend()``
says which.
"""

from mf2.ops import _native
from mf2.ops.au_region_pool import au_region_pool, au_region_pool_reference
from mf2.ops.dfn_pathway import dfn_pathway, dfn_pathway_reference


def backend() -> dict:
    """The active implementation of the ops and what the extension was built with."""
    info = _native.build_info()
    info["active"] = "native" if _native.available() else "reference"
    return info


__all__ = ["au_region_pool", "au_region_pool_reference", "dfn_pathway", "dfn_pathway_reference", "backend"]
