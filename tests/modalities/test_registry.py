"""The registry is the one place that knows modality names: nothing else compares them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ofasys.modalities import MODALITIES, Modality, get

ROOT = Path(__file__).resolve().parents[2]
NAMES = frozenset(MODALITIES)


def _names_in(node: ast.AST) -> set[str]:
    """Modality names written as literals in `node` (a string, or a tuple/list/set of strings)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value} & NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_names_in(e) for e in node.elts)) if node.elts else set()
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("frozenset", "set", "tuple") and node.args:
        return _names_in(node.args[0])
    return set()


def _comparisons(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            names = _names_in(node.left).union(*(_names_in(c) for c in node.comparators))
            if names:
                shown = path.relative_to(ROOT) if ROOT in path.parents else path.name
                found.append(f"{shown}:{node.lineno} compares {sorted(names)}")
    return found


def test_no_module_outside_the_modalities_package_compares_a_modality_name():
    package = ROOT / "ofasys" / "modalities"
    files = [p for d in ("ofasys", "pipeline", "stages") for p in (ROOT / d).rglob("*.py")
             if package not in p.parents]
    assert len(files) > 50
    offenders = [hit for p in files for hit in _comparisons(p)]
    assert offenders == []


def test_the_check_finds_a_comparison(tmp_path):
    """The scan above is not vacuous: it catches the forms a comparison takes."""
    probe = tmp_path / "probe.py"
    probe.write_text('def f(m):\n    return m == "IMAGE" or m in ("TEXT", "x") or m not in {"BOX"}\n')
    assert len(_comparisons(probe)) == 3


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_modality_declares_itself_consistently(name):
    m = get(name)
    assert isinstance(m, Modality) and m.name == name
    assert name in m.attributes, "the plain kind must have an attribute set"
    assert "default" in m.preprocess and "default" in m.adaptors
    if m.status is None and not m.token_run:  # an embedded modality needs an adaptor and collation
        assert m.adaptor_config is not None
        assert type(m).collate is not Modality.collate and type(m).build_adaptor is not Modality.build_adaptor


def test_unknown_modality_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown modality 'SMELL'; known: TEXT, IMAGE"):
        get("SMELL")
