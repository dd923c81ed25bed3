"""The package's shape, as the design notes state it: no import cycles, lower floors never import upper ones,
and every exception class lives in the one tree in errors.py.

The imports are read from the source with `ast`, every one of them: at the top of a module, inside a function
(a late import hides a cycle, it does not remove it) and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import pkgutil
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lifeline

PACKAGE = Path(lifeline.__file__).resolve().parent

#: Each part of the package (a subpackage or a top-level module) on its floor: a part may import parts on its
#: own floor or below, never above. From the design notes: a request flows down server/ → routing/ →
#: providers/; config/ must not import routing/, accounting/ must not import server/; the offline jobs and
#: the CLI sit on top. A new part needs a floor here.
FLOORS: dict[str, int] = {
    "data": 0,
    "errors": 0,
    "attempts": 0,  # the attempt log: errors carry one
    "logs": 0,
    "metrics": 0,
    "config": 1,
    "procstats": 1,
    "protocol": 2,
    "tracing": 2,
    "reports": 2,  # the report builder the offline jobs share: sections → Markdown, HTML, results.json
    "accounting": 3,
    "providers": 3,
    "routing": 4,
    "server": 5,
    "console": 5,  # the web page at /ui: beside server/, reading the same services as /admin/*
    "testing": 6,
    "inprocess": 6,  # the gateway as a library: the app in this process, clients through httpx transports
    "drill": 7,
    "audit": 7,
    "eval": 7,
    "jobs": 7,  # what drill/ and eval/ share: the gateway they start, their progress
    "cli": 8,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imported(name: str, is_package: bool, source: str, known: Iterable[str]) -> Iterator[str]:
    """The package's modules that module `name` imports, read from its source."""
    known = set(known)
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            if origin not in known:
                continue
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                yield submodule if submodule in known else origin


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {
        name: set(_imported(name, path.name == "__init__.py", path.read_text(encoding="utf-8"), known)) - {name}
        for name, path in known.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _part(module: str) -> str | None:
    """The part of the package a module belongs to (None for the package's own __init__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_graph_reads_late_and_relative_imports() -> None:
    # the checks below are only as good as the graph: it must see what the old cycles were made of
    source = "import lifeline.a\ndef f():\n    from lifeline.config import ConfigError, load\n    from .c import x\n"
    known = ["lifeline.a", "lifeline.b", "lifeline.b.c", "lifeline.config", "lifeline.config.load"]
    found = set(_imported("lifeline.b", True, source, known))
    assert found == {"lifeline.a", "lifeline.config", "lifeline.config.load", "lifeline.b.c"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "modules that import each other in a loop: " + "; ".join(" ↔ ".join(c) for c in cycles)


def test_every_part_has_a_floor() -> None:
    parts = {_part(name) for name in _modules()} - {None}
    assert not parts - set(FLOORS), f"give these a floor in FLOORS: {sorted(parts - set(FLOORS))}"


def test_lower_floors_never_import_upper_ones() -> None:
    upward = []
    for module, targets in _graph().items():
        part = _part(module)
        for target in targets:
            other = _part(target)
            if part not in FLOORS or other not in FLOORS or other == part:
                continue  # the package's __init__, or a part without a floor (the test above names it)
            if FLOORS[other] > FLOORS[part]:
                upward.append(f"{module} → {target} ({part} is on floor {FLOORS[part]}, {other} on {FLOORS[other]})")
    assert not upward, "imports that run back up:\n" + "\n".join(sorted(upward))


def _named(expression: ast.expr, namespace: dict[str, Any]) -> Any:
    """What a base written as a name (`ValueError`) or a dotted name (`httpx.HTTPError`) stands for."""
    if isinstance(expression, ast.Name):
        return namespace.get(expression.id)
    if isinstance(expression, ast.Attribute):
        return getattr(_named(expression.value, namespace), expression.attr, None)
    return None


def _exception_classes_outside_errors_py() -> Iterator[str]:
    """Every class statement, at any depth, with an exception class for a base, in every module but errors.py."""
    for info in pkgutil.walk_packages(lifeline.__path__, "lifeline."):
        if info.name == "lifeline.errors":
            continue
        module = importlib.import_module(info.name)
        namespace = {**vars(builtins), **vars(module)}
        for node in ast.walk(ast.parse(Path(module.__file__ or "").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    value = _named(base, namespace)
                    if isinstance(value, type) and issubclass(value, BaseException):
                        yield f"{info.name}: class {node.name}({ast.unparse(base)})"


def test_every_exception_class_lives_in_errors_py() -> None:
    elsewhere = sorted(_exception_classes_outside_errors_py())
    assert not elsewhere, "exception classes outside lifeline/errors.py (move them into its tree):\n" + "\n".join(
        elsewhere
    )


def test_the_tree_in_the_docstring_draws_every_exception_class_of_errors_py() -> None:
    from lifeline import errors

    drawn = errors.__doc__ or ""
    classes = [
        name
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__module__ == errors.__name__
    ]
    missing = [name for name in classes if not re.search(rf"(── |^    ){name}\b", drawn, re.MULTILINE)]
    assert {"LifelineError", "UpstreamError"} <= set(classes) and not missing, (
        f"not drawn in errors.py's tree: {missing}"
    )
