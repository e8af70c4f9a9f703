"""Layers only point down, and no two modules of the package import each other, however indirectly.

The layer order of the whole package is declared here and nowhere else (:data:`LAYERS`, top to
bottom). A module belongs to the layer of the longest entry it falls under (``iaa_eval.tasks``
covers ``iaa_eval.tasks.text``; the bare package ``iaa_eval`` covers only its ``__init__``). Every
import counts: module level, function level, under ``TYPE_CHECKING``, and the lazy
``"iaa_eval.x:Name"`` targets of a registry. A module may import its own layer or any layer below.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = "iaa_eval"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cli", ("iaa_eval.cli", "iaa_eval.__main__", "iaa_eval.exits")),
    (
        "orchestration",
        (
            "iaa_eval.evaluate",
            "iaa_eval.suites",
            "iaa_eval.pairing",
            "iaa_eval.runplan",
            "iaa_eval.report",
            "iaa_eval.gate",
            "iaa_eval.train.job",
            "iaa_eval.miniworld.build",
            "iaa_eval.miniworld.assemble",
            "iaa_eval.miniworld.measure",
            "iaa_eval.miniworld.reference",
        ),
    ),
    ("analysis", ("iaa_eval.forgetting",)),
    ("benchmarks", ("iaa_eval.tasks",)),
    (
        "execution and services",
        (
            "iaa_eval.models",
            "iaa_eval.runner",
            "iaa_eval.rundir",
            "iaa_eval.train",
            "iaa_eval.miniworld.score",
        ),
    ),
    (
        "foundations",
        (
            "iaa_eval.metrics",
            "iaa_eval.errors",
            "iaa_eval.names",
            "iaa_eval.registry",
            "iaa_eval.machine",
            "iaa_eval.config",
            "iaa_eval.resources",
            "iaa_eval.miniworld",
            "iaa_eval",
        ),
    ),
)

#: Cycles other work items remove, as the import edge that closes each; the lead empties this list
#: when those items are merged (a listed edge that no longer exists fails the test).
KNOWN_CYCLES: tuple[tuple[str, str], ...] = (
)

_LAZY_TARGET = re.compile(r"(iaa_eval(?:\.\w+)+):\w+")


def module_name(path: Path, root: Path = ROOT) -> str:
    """``iaa_eval/tasks/text.py`` -> ``iaa_eval.tasks.text``; an ``__init__`` is its package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str, layers: Iterable[tuple[str, tuple[str, ...]]] = LAYERS) -> int:
    """Index (0 = top) of the layer whose longest entry covers ``module``."""
    best, depth = -1, -1
    for index, (_, entries) in enumerate(layers):
        for entry in entries:
            covers = module == entry or (entry != PACKAGE and module.startswith(entry + "."))
            if covers and len(entry) > depth:
                best, depth = index, len(entry)
    if best < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return best


def _resolve(name: str, modules: set[str]) -> str | None:
    """The package module ``name`` names, or its nearest enclosing package module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(source: str, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """Every package module ``source`` imports, wherever the import statement stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _LAZY_TARGET.fullmatch(node.value)
            names = [match.group(1)] if match else []
        found |= {m for n in names if n.split(".")[0] == PACKAGE and (m := _resolve(n, modules))}
    found.discard(module)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    paths = {module_name(p, root): p for p in root.rglob("*.py") if "assets" not in p.parts}
    modules = set(paths)
    return {
        m: imports_of(p.read_text(encoding="utf-8"), m, p.name == "__init__.py", modules)
        for m, p in sorted(paths.items())
    }


def upward_imports(graph: Mapping[str, set[str]], layers: tuple = LAYERS) -> list[str]:
    """``a -> b`` for every import of a module in a higher layer."""
    names = [name for name, _ in layers]
    return [
        f"{a} ({names[layer_of(a, layers)]}) imports {b} ({names[layer_of(b, layers)]})"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        if layer_of(b, layers) < layer_of(a, layers)
    ]


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state and nxt in graph:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def without(graph: Mapping[str, set[str]], edges: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """``graph`` less ``edges``."""
    drop = set(edges)
    return {a: {b for b in targets if (a, b) not in drop} for a, targets in graph.items()}


GRAPH = import_graph()


def test_every_module_has_a_layer() -> None:
    for module in GRAPH:
        layer_of(module)


def test_no_upward_imports() -> None:
    assert upward_imports(GRAPH) == []


def test_no_import_cycles() -> None:
    cycle = find_cycle(without(GRAPH, KNOWN_CYCLES))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("edge", KNOWN_CYCLES, ids=" -> ".join)
def test_known_cycles_still_exist(edge: tuple[str, str]) -> None:
    a, b = edge
    assert b in GRAPH.get(a, set()), (
        f"{a} no longer imports {b}: remove the entry from KNOWN_CYCLES"
    )


def test_the_checker_sees_what_it_must(tmp_path: Path) -> None:
    """A synthetic package: a function-level import, a TYPE_CHECKING import, a relative import of a
    submodule and a registry string, making one upward import and one cycle."""
    pkg = tmp_path / PACKAGE
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "high.py").write_text("from . import low\n")
    (pkg / "low" / "__init__.py").write_text("REG = {'x': 'iaa_eval.low.b:Thing'}\n")
    (pkg / "low" / "a.py").write_text("def f():\n    from iaa_eval.high import g\n")
    (pkg / "low" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from iaa_eval.low import a\n"
    )
    (pkg / "low" / "c.py").write_text("import iaa_eval.low.b\n")
    graph = import_graph(pkg)
    assert graph == {
        "iaa_eval": set(),
        "iaa_eval.high": {"iaa_eval.low"},
        "iaa_eval.low": {"iaa_eval.low.b"},
        "iaa_eval.low.a": {"iaa_eval.high"},
        "iaa_eval.low.b": {"iaa_eval.low.a"},
        "iaa_eval.low.c": {"iaa_eval.low.b"},
    }
    layers = (("top", ("iaa_eval.high",)), ("bottom", ("iaa_eval.low", "iaa_eval")))
    assert upward_imports(graph, layers) == ["iaa_eval.low.a (bottom) imports iaa_eval.high (top)"]
    assert find_cycle(graph) == [
        "iaa_eval.high",
        "iaa_eval.low",
        "iaa_eval.low.b",
        "iaa_eval.low.a",
        "iaa_eval.high",
    ]
    assert find_cycle(without(graph, [("iaa_eval.low.a", "iaa_eval.high")])) is None
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("elsewhere.module", layers)
