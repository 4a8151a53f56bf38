"""The repository files a Python module can import, found statically (AST), for checking that every
code file a DVC stage runs is among its deps.

Static on purpose: function-local imports count (a stage reaches them on some path), and nothing is
executed. Each `import a.b.c` also counts the package `__init__` files on the way, as Python runs them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("ofasys", "pipeline", "stages")
"""The project's top-level packages; imports of anything else are third-party or stdlib."""


def module_file(root: Path, dotted: str) -> Path | None:
    """The file of a project module or package, or None when `dotted` names an attribute."""
    base = root.joinpath(*dotted.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def imported_files(root: Path, path: Path) -> set[Path]:
    """The project files `path` imports directly, anywhere in its body."""
    rel = path.relative_to(root).with_suffix("")
    package = list(rel.parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    found: set[Path] = set()
    for name in names:
        parts = name.split(".")
        if parts[0] not in PACKAGES:
            continue
        for i in range(1, len(parts) + 1):
            file = module_file(root, ".".join(parts[:i]))
            if file is not None:
                found.add(file)
    return found


def import_closure(root: Path, start: Path, stop: frozenset[Path] = frozenset()) -> set[Path]:
    """Every project file reachable from `start` by imports; files in `stop` are included but not
    followed."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        if file not in stop:
            todo.extend(imported_files(root, file))
    return seen
