"""The layout: layer subpackages that import only downward, no import cycle, small modules and functions, and every
user-facing error in one module.

The checks read the source (every import, including those inside functions and under ``TYPE_CHECKING``), so an
import that would only run on some path counts as much as one at the top. Each check is also run on a small made-up
package that breaks it, so none of them can pass by seeing nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "wheelstore"
#: lowest first: a module may import its own layer and those before it
LAYERS = ("base", "store", "fetch", "service", "resolve", "venv", "cli")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
#: the comment that lets a longer function stand, with its reason after the colon
LONG_REASON = "# long:"


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module ``name`` imports anywhere in its text: ``from .x import y`` counts as
    ``x.y`` when that is a module, else ``x``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    root = name.split(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.split(".")[0] == root:
                target = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if target == root and alias.name == "__version__":
                    continue  # a constant the root defines itself, importing nothing
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == root)
    return found - {name}


def graph(root: Path) -> dict[str, set[str]]:
    mods = modules(root)
    return {m: imports(m, p, set(mods)) & set(mods) for m, p in mods.items()}


def layer_of(module: str) -> int | None:
    """The layer's rank, or None for the package's root modules (its public face and ``__main__``)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def upward(g: dict[str, set[str]]) -> list[str]:
    """Imports from a lower layer to a higher one or to the package root (its public face), and modules in no
    layer."""
    root = min(g, key=len)
    bad = []
    for module, targets in sorted(g.items()):
        rank = layer_of(module)
        if rank is None:
            if module not in (root, f"{root}.__main__"):
                bad.append(f"{module} is in no layer")
            continue
        for target in sorted(targets):
            other = layer_of(target)
            if other is None:
                bad.append(f"{module} imports {target}")
            elif other > rank:
                bad.append(f"{module} ({LAYERS[rank]}) imports {target} ({LAYERS[other]})")
    return bad


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(found)


def too_long(root: Path) -> list[str]:
    """Modules over the line limit, and functions over theirs without a ``# long:`` reason right above them."""
    bad = []
    for module, path in modules(root).items():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_MODULE_LINES:
            bad.append(f"{module}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]  # always set by ast.parse
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                reason = lines[first - 2].strip() if first > 1 else ""
                if length > MAX_FUNCTION_LINES and not (reason.startswith(LONG_REASON) and reason[len(LONG_REASON):]
                                                        .strip()):
                    bad.append(f"{module}.{node.name}: {length} lines")
    return bad


def errors_elsewhere(root: Path) -> list[str]:
    """User-facing error classes (subclasses of the package's ``WheelstoreError``) defined outside
    ``base/errors.py``."""
    mods = modules(root)
    errors_module = f"{root.name}.base.errors"
    trees = {m: ast.parse(p.read_text()) for m, p in mods.items()}
    known = {"WheelstoreError"}
    for node in trees[errors_module].body:  # the errors module's own hierarchy, in order
        if isinstance(node, ast.ClassDef) and any(_base_name(b) in known for b in node.bases):
            known.add(node.name)
    bad = []
    for module, tree in trees.items():
        if module == errors_module:
            continue
        for found in ast.walk(tree):
            if isinstance(found, ast.ClassDef) and any(_base_name(b) in known for b in found.bases):
                bad.append(f"{module}.{found.name}")
    return bad


def _base_name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


# -- the package -------------------------------------------------------------------------------------------------------


def test_every_module_is_in_a_layer_and_imports_only_downward() -> None:
    g = graph(SRC)
    assert {m.split(".")[1] for m in g if layer_of(m) is not None} == set(LAYERS)
    assert upward(g) == []


def test_no_import_cycle() -> None:
    assert cycles(graph(SRC)) == []


def test_no_module_or_function_too_long() -> None:
    assert too_long(SRC) == []


def test_every_user_facing_error_is_in_the_errors_module() -> None:
    assert errors_elsewhere(SRC) == []


# -- the checks themselves, on a package that breaks each rule ---------------------------------------------------------


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A package ``fake`` with one upward import (base -> venv), a cycle (store.a -> store.b -> store.a, one side
    lazy and one under TYPE_CHECKING), a module in no layer, a long function, and an error class outside errors."""
    root = tmp_path / "fake"
    files = {
        "__init__.py": "__version__ = '1'\n",
        "base/__init__.py": "",
        "base/errors.py": "class WheelstoreError(Exception): ...\nclass StoreError(WheelstoreError): ...\n",
        "base/util.py": "def f():\n    from ..venv import thing\n",
        "base/http.py": "from .. import __version__\n",
        "base/names.py": "import fake\n",
        "store/__init__.py": "",
        "store/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n",
        "store/b.py": "from . import a\nfrom ..base.errors import StoreError\nclass Bad(StoreError): ...\n",
        "fetch/__init__.py": "", "resolve/__init__.py": "", "cli/__init__.py": "",
        "venv/__init__.py": "",
        "venv/thing.py": "def long():\n" + "    x = 1\n" * MAX_FUNCTION_LINES + "\n\n# long: it must be\ndef ok():\n"
                         + "    y = 2\n" * MAX_FUNCTION_LINES,
        "stray.py": "",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_checks_catch_what_they_are_for(broken: Path) -> None:
    g = graph(broken)
    assert upward(g) == ["fake.base.names imports fake", "fake.base.util (base) imports fake.venv.thing (venv)",
                         "fake.stray is in no layer"]
    assert cycles(g) == [["fake.store.a", "fake.store.b"]]
    assert too_long(broken) == [f"fake.venv.thing.long: {MAX_FUNCTION_LINES + 1} lines"]
    assert errors_elsewhere(broken) == ["fake.store.b.Bad"]
