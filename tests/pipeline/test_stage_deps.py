"""Every code file a DVC stage runs is among its deps, so editing it re-runs the stage (and a stage
never silently keeps outputs made by code that has since changed).

The closure stops at the validation front door: `stages/cli.py` (the runner), `pipeline/params.py`
and `pipeline/params_checks.py` (the schema), and the root packages' `__init__` files (re-export
tables). What those decide reaches a stage only through the params slice `resolve` writes for it,
which is the stage's first dep; code that turns params into a stage's work (`pipeline/run_config.py`)
is followed like any other. `resolve` itself runs on every `dvc repro` (always_changed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.import_closure import import_closure, module_file

ROOT = Path(__file__).resolve().parents[2]
FRONT_DOOR = frozenset(ROOT / p for p in (
    "stages/cli.py", "pipeline/params.py", "pipeline/params_checks.py",
    "ofasys/__init__.py", "pipeline/__init__.py", "stages/__init__.py",
))


def _stages(root: Path) -> dict[str, dict]:
    raw = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in raw.items()}


def uncovered_files(root: Path, stage: dict, front_door: frozenset[Path]) -> list[str]:
    """Project files the stage's `python -m <module>` can import that none of its deps covers."""
    module = stage["cmd"].split("-m", 1)[1].split()[0]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]
    files = import_closure(root, module_file(root, module), front_door) - front_door
    rel = sorted(f.relative_to(root).as_posix() for f in files)
    return [r for r in rel if not any(r == d or r.startswith(d.rstrip("/") + "/") for d in deps)]


@pytest.mark.parametrize("name", [n for n, s in _stages(ROOT).items() if not s.get("always_changed")])
def test_every_imported_project_file_is_a_dep_of_the_stage(name):
    missing = uncovered_files(ROOT, _stages(ROOT)[name], FRONT_DOOR)
    assert not missing, f"dvc.yaml stage {name!r} imports {missing} but does not list them (or a parent) in deps"


def test_the_check_sees_a_function_local_import_through_a_package(tmp_path):
    for rel, text in {
        "stages/__init__.py": "", "stages/work.py": "def main():\n    from ofasys.deep import helper\n",
        "ofasys/__init__.py": "", "ofasys/deep/__init__.py": "from .inner import helper\n",
        "ofasys/deep/inner.py": "import json\nfrom ofasys import leaf\n", "ofasys/leaf.py": "",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    stage = {"cmd": "python -m stages.work", "deps": ["stages/work.py", "ofasys/deep"]}
    front = frozenset({tmp_path / "ofasys/__init__.py", tmp_path / "stages/__init__.py"})
    assert uncovered_files(tmp_path, stage, front) == ["ofasys/leaf.py"]
    stage["deps"].append("ofasys/leaf.py")
    assert uncovered_files(tmp_path, stage, front) == []
