"""The package's import structure: layers that point one way, and no import circle.

Every import of every module of ``mf2/`` and ``cli/`` (installed as ``mf2.cli``) is read from the
source with ``ast``, function-local imports included, and checked against the layer table below:
a module may import its own layer and the layers under it, never one above. Then the module
graph must hold no cycle. Run from a checkout (the source files are read, nothing is imported).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A module belongs to the longest prefix that names it ("mf2" names the root only).
LAYERS = [
    ("mf2", "mf2._version", "mf2._C", "mf2._compat", "mf2._checks", "mf2.io", "mf2.devices", "mf2.distributed",
     "mf2.ops", "mf2.data.labels"),  # foundations
    ("mf2.data", "mf2.info"),  # data sets and manifests
    ("mf2.captions", "mf2.features"),  # captions; frozen features and their cache
    ("mf2.models",),  # MF², DFN and their configs
    ("mf2.runs",),  # run folders and loading a trained model
    ("mf2.evaluation",),  # predictions over a cache, metrics, reports
    ("mf2.training",),  # trainers (validate with evaluation's metrics)
    ("mf2.prediction",),  # new images and videos
    ("mf2.faces", "mf2.export"),  # the results table (a DataFrame) and its plots; exported model folders
    ("mf2.detector",),  # the Python API: mf2.Detector
    ("mf2.cli",),  # the commands
]
# What ``import mf2`` hands out lazily (imported inside its ``__getattr__`` on first use only).
LAZY_EXPORTS = {"mf2.detector", "mf2.faces"}


def _modules() -> dict[str, Path]:
    out = {}
    for base, prefix in ((ROOT / "mf2", "mf2"), (ROOT / "cli", "mf2.cli")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = path
    return out


MODULES = _modules()


def _lazy_nodes(tree: ast.Module) -> set[ast.AST]:
    """The nodes inside a module-level ``__getattr__`` (PEP 562 lazy attributes)."""
    return {n for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "__getattr__" for n in ast.walk(f)}


def _imports(name: str, path: Path, lazy: bool = False) -> set[str]:
    """The mf2 modules ``name`` imports (a name imported from a package counts as its submodule
    when there is one). The package root's lazy exports (its ``__getattr__``) are apart: with
    ``lazy``, only those; else all its other imports."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    in_getattr = _lazy_nodes(tree) if name == "mf2" else set()
    for node in ast.walk(tree):
        if (node in in_getattr) != lazy:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m == "mf2" or m.startswith("mf2.")}


def _layer(name: str) -> int:
    best, layer = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or (p != "mf2" and name.startswith(p + "."))) and len(p) > best:
                best, layer = len(p), i
    assert layer is not None, f"{name} is in no layer: add it to LAYERS"
    return layer


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_every_module_is_read():
    assert {"mf2.runs", "mf2.io", "mf2.distributed", "mf2.training.loop", "mf2.cli.main"} <= set(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down(name):
    upward = sorted(t for t in GRAPH[name] if t in MODULES and _layer(t) > _layer(name))
    assert not upward, f"{name} (layer {_layer(name)}) imports a higher layer: " + ", ".join(
        f"{t} (layer {_layer(t)})" for t in upward)


def test_the_package_root_exports_no_internals():
    """The root imports nothing of the package but its version (a leaf), and the public API that its
    ``__getattr__`` imports on first use (so ``import mf2`` stays cheap); no module imports the
    root (the version is read from ``mf2._version``: no arrow points up to the package)."""
    assert {t for t in GRAPH["mf2"] if t != "mf2"} == {"mf2._version"}
    assert _imports("mf2", MODULES["mf2"], lazy=True) == LAZY_EXPORTS
    assert not [name for name, targets in GRAPH.items() if name != "mf2" and "mf2" in targets]


def test_no_import_circle():
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt == "mf2" or nxt not in GRAPH:
                continue
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


def test_the_checker_sees_a_violation(tmp_path):
    """The checker itself: a made-up upward import and a made-up circle are caught."""
    assert _layer("mf2.data.manifest") < _layer("mf2.evaluation.metrics")
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from mf2.evaluation.metrics import au_f1\n")
    assert "mf2.evaluation.metrics" in _imports("mf2.data.x", fake)
    fake.write_text("from . import manifest\nfrom .labels import AUS\n")
    assert _imports("mf2.data.x", fake) == {"mf2.data.manifest", "mf2.data.labels"}
