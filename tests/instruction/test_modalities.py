"""The parser's view of modalities is the registry's: nothing about a modality is written in
ofasys/instruction/, and the package imports neither in a cycle nor torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from ofasys.instruction import MODALITIES
from ofasys.instruction.modalities import KINDS, REGISTRY, describe_kinds, is_text_like, slot_kinds

PACKAGE = Path(__file__).resolve().parents[2] / "ofasys" / "instruction"


def test_names_and_kinds_are_the_registrys():
    assert MODALITIES == tuple(REGISTRY)
    assert set(KINDS) == {k for m in REGISTRY.values() for k in m.attributes}


def test_kinds_and_token_runs_are_delegated_for_every_value():
    for name, m in REGISTRY.items():
        for pre in (None, *m.preprocess):
            assert slot_kinds(name, pre) == m.kinds(pre)
            assert is_text_like(name, pre) == m.is_token_run(pre)


def test_describe_kinds_names_a_preprocess_kind_only_without_its_modality():
    vq = next(k for m in REGISTRY.values() for k in m.attributes if k not in m.kinds(None))
    owner = next(m for m in REGISTRY.values() if vq in m.attributes)
    maker = next(p for p in owner.preprocess if vq in owner.kinds(p))
    assert describe_kinds({vq}) == f"{owner.name} (preprocess={maker})"
    assert describe_kinds({vq, owner.name}) == owner.name
    assert describe_kinds(reversed(MODALITIES)) == ", ".join(MODALITIES)  # registry order


def _string_constants(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant) and
            isinstance(n.value, str)}


def test_no_modality_name_or_kind_is_written_in_the_instruction_package():
    names = set(REGISTRY) | set(KINDS)
    for path in sorted(PACKAGE.glob("*.py")):
        assert not (_string_constants(path) & names), f"{path.name} names {_string_constants(path) & names}"


def _imports(path: Path) -> set[str]:
    """Sibling modules `path` imports (`from .x import`, at any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_package_imports_without_cycles():
    graph = {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join(path + (module,))}"
        if module in done:
            return
        for dep in graph.get(module, ()):
            visit(dep, path + (module,))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_the_registry_does_not_import_the_parser():
    for path in sorted((PACKAGE.parent / "modalities").glob("*.py")):
        tree = ast.parse(path.read_text())
        modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in modules if m.startswith("ofasys.instruction")], path.name


def test_parsing_imports_no_torch():
    code = ("import sys; from ofasys.instruction import parse_instruction; "
            "parse_instruction('[IMAGE:img] what? -> [TEXT:cap]'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
