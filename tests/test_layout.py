"""The package's layout: layers import only downward, no import cycles, crt_bench imports at module level
(except in ``crt_bench/cli``), no module over 400 lines; the command line starts without torch, pandas or
submitit, and every catalogue entry's loss or builder imports.

The layers are those of ``[tool.importlinter]`` in ``pyproject.toml`` (``lint-imports`` checks the same
contract where import-linter is installed); this test reads the source with :mod:`ast` only.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "crt_bench"
MAX_LINES = 400


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported module, dotted
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _edges_of(name: str, path: Path, known: set[str]) -> list[Edge]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Edge] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Edge(name, a.name, child.lineno, in_function) for a in child.names
                             if a.name.split(".")[0] == "crt_bench")
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if base.split(".")[0] != "crt_bench":
                    continue
                for alias in child.names:  # `from pkg import sub` imports the module pkg.sub
                    sub = f"{base}.{alias.name}"
                    found.append(Edge(name, sub if sub in known else base, child.lineno, in_function))
            elif (isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id == "lazy_module"
                  and child.args and isinstance(child.args[0], ast.Constant)
                  and str(child.args[0].value).split(".")[0] == "crt_bench"):
                # ``x = lazy_module("crt_bench.a.b")`` (crt_bench.core.lazy) imports crt_bench.a.b on first use
                found.append(Edge(name, child.args[0].value, child.lineno, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def edges() -> list[Edge]:
    mods = modules()
    known = set(mods)
    return [e for name, path in mods.items() for e in _edges_of(name, path, known)]


def layers() -> list[list[str]]:
    """The layers of the contract, highest first; each a list of sibling subpackages."""
    text = (ROOT / "pyproject.toml").read_text()
    if tomllib is not None:
        contracts = tomllib.loads(text)["tool"]["importlinter"]["contracts"]
        listed = next(c for c in contracts if c["type"] == "layers")["layers"]
    else:  # the `layers = [...]` list, one quoted entry a line
        block = text.split("layers = [", 1)[1].split("]", 1)[0]
        listed = [line.strip().strip(",").strip('"') for line in block.splitlines() if line.strip()]
    return [[part.strip() for part in entry.split("|")] for entry in listed]


def subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_subpackage_is_in_exactly_one_layer() -> None:
    named = [p for layer in layers() for p in layer]
    assert len(named) == len(set(named)), named
    present = {subpackage(m) for m in modules()} - {None}
    assert present == set(named), f"not in a layer: {present - set(named)}; no such package: {set(named) - present}"
    assert all((PACKAGE / p / "__init__.py").is_file() for p in present)


def test_layers_import_only_downward_and_siblings_do_not_import_each_other() -> None:
    rank = {p: i for i, layer in enumerate(layers()) for p in layer}  # 0 = highest
    bad = []
    for e in edges():
        src, dst = subpackage(e.source), subpackage(e.target)
        if src is None or dst is None or src == dst:
            continue
        if rank[dst] <= rank[src]:
            kind = "sibling" if rank[dst] == rank[src] else "upward"
            bad.append(f"{e.source}:{e.line} imports {e.target} ({kind})")
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for e in edges():
        # a package's own __init__ importing its submodules (registration) is not a cycle of the code
        if e.target != e.source and e.target in graph and not e.target.startswith(e.source + "."):
            graph[e.source].add(e.target)
    assert _cycles(graph) == []


def test_crt_bench_imports_are_at_module_level_outside_the_cli() -> None:
    inside = [f"{e.source}:{e.line} imports {e.target}" for e in edges()
              if e.in_function and not e.source.startswith("crt_bench.cli")]
    assert not inside, "\n".join(inside)


def test_no_module_over_400_lines() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


@pytest.mark.skipif(importlib.util.find_spec("importlinter") is None, reason="import-linter is not installed")
def test_lint_imports_accepts_the_contract() -> None:
    done = subprocess.run([sys.executable, "-m", "importlinter.cli", "--config", "pyproject.toml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


HEAVY = ("torch", "timm", "torchvision", "pandas", "pyarrow", "scipy", "matplotlib", "submitit")
START_UP = """
import contextlib, io, json, sys
from crt_bench.cli.app import main
for argv in (["--help"], ["list", "methods"], ["list", "archs", "--json"], ["list", "profiles"], ["run", "--help"],
             ["run", "--method", "smoothmix", "--help"], ["run", "--profile", "quick"],
             ["certify", "x", "--shards", "0"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
print(json.dumps(sorted(m for m in HEAVY if m in sys.modules)))
"""


def test_the_cli_starts_without_torch_pandas_or_submitit() -> None:
    """``import crt_bench.cli``, ``--help``, ``list``, a method's help and bad input read only the torch-free
    catalogues: none of the heavy modules is imported (they cost seconds of start-up)."""
    done = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}" + START_UP], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_lazy_module_imports_are_edges(tmp_path: Path) -> None:
    """A ``lazy_module("crt_bench....")`` binding counts as an import of that module (layers, cycles)."""
    source = tmp_path / "toy.py"
    source.write_text('torch = lazy_module("torch")\nnoise = lazy_module("crt_bench.parallel.noise")\n')
    found = _edges_of("crt_bench.methods.toy", source, set(modules()))
    assert [(e.target, e.line, e.in_function) for e in found] == [("crt_bench.parallel.noise", 2, False)]


def test_every_catalogue_reference_imports() -> None:
    """Each method's loss and each architecture's builder is a function (registered by its decorator)."""
    from crt_bench.methods.registry import list_methods
    from crt_bench.models.registry import list_archs

    assert all(callable(m.loss) for m in list_methods())
    assert all(callable(a.builder) for a in list_archs())
