"""The package's import graph keeps the layers of docs/architecture.md: data flows one way
(ops → per_sample → curvature → methods → studies → apps), with no cycles, no module importing
the package facade, and no function-local imports of anything but the documented lazy loads.

The graph is read from the source (ast), not from what happens to be imported at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hessext

PACKAGE = Path(hessext.__file__).resolve().parent

# layer of every top-level part of the package (docs/architecture.md)
LAYERS = {
    "hessext._version": 0,
    "hessext._extension": 0,
    "hessext.ops": 0,
    "hessext.regularizers": 0,
    "hessext._internal": 0,
    "hessext._C": 0,
    "hessext.per_sample": 1,
    "hessext.curvature": 2,
    "hessext._buildinfo": 2,
    "hessext.attribution": 3,
    "hessext.uncertainty": 3,
    "hessext.smoothhess": 3,
    "hessext.boundary": 3,
    "hessext.interpret": 3,
    "hessext.models": 4,
    "hessext.datasets": 4,
    "hessext.training": 4,
    "hessext.reporting": 4,
    "hessext.testing": 5,
    "hessext.apps": 5,
    "hessext.cli": 5,
    "hessext.__main__": 5,
}
FACADE = "hessext"

# imports allowed inside functions, each for a stated reason
LAZY = {
    "matplotlib": "the figures' backend: `import hessext` stays fast and display-free",
    "matplotlib.pyplot": "as above",
    "torch._export.converter": "a private torch module, only for TorchScript models in analyze",
    "scipy.sparse.linalg": "0.2 s of `import hessext` otherwise, needed only by to_scipy()",
    "pytest": "hessext.testing skips tests without making pytest a dependency",
    "kronfluence": "an optional peer, run in-process by hessext.testing for tests and bench/",
    "kronfluence.analyzer": "as above",
    "kronfluence.arguments": "as above",
    "kronfluence.task": "as above",
    "torch.distributed": "only when a test joins a process group",
    "sklearn.linear_model": "1-3 s of `import hessext` otherwise, needed only by sparse_polynomial_fit",
    "hessext._C": "the compiled core: optional, loaded once by hessext._extension",
    "umap": "umap-learn imports numba (seconds) and compiles on first use; only the SSH study's UMAP panels",
    "sklearn": "scikit-learn (~1 s of import): the paper's circles/moons, bundled digits, t-SNE",
    "sklearn.datasets": "as above",
    "sklearn.manifold": "as above",
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path):
    """(target module, line, inside a function?) for every hessext import in the file."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    known = {m for m, _ in _modules()} | {"hessext._C"}
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            local = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    out.append((alias.name, child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, child, is_package)
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    out.append((sub if sub in known else target, child.lineno, in_function))
            visit(child, local)

    visit(tree, False)
    return out


def _part(module: str) -> str:
    """The top-level part of the package a module belongs to (a key of LAYERS)."""
    for key in sorted(LAYERS, key=len, reverse=True):
        if module == key or module.startswith(key + "."):
            return key
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md")


GRAPH = {m: _imports(m, p) for m, p in _modules()}


def test_every_module_has_a_layer():
    for module in GRAPH:
        if module != FACADE:
            _part(module)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m != FACADE))
def test_imports_only_point_down(module):
    layer = LAYERS[_part(module)]
    for target, line, _ in GRAPH[module]:
        if not target.startswith("hessext"):
            continue
        assert target != FACADE, f"{module}:{line} imports the package facade"
        assert LAYERS[_part(target)] <= layer, (
            f"{module}:{line} (layer {layer}) imports {target} (layer {LAYERS[_part(target)]})"
        )


def test_no_import_cycles():
    edges = {m: {t for t, _, _ in GRAPH[m] if t in GRAPH and t != FACADE} for m in GRAPH}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for t in edges[m]:
            if state.get(t) == 1:
                cycle = stack[stack.index(t) :] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in edges:
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_function_local_imports_are_the_documented_lazy_loads(module):
    for target, line, local in GRAPH[module]:
        if local:
            assert target in LAZY, f"{module}:{line} imports {target} inside a function"
