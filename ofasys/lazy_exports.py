"""Package-level names imported from their submodule on first use (PEP 562 `__getattr__`).

A package's `__init__` that imported every submodule would make `import ofasys.model.config` (read by
every pipeline stage when params load) pay for torch; a plain dict from public name to submodule
keeps the package's public surface in one place without that cost.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: `exports` maps each public name to its module's dotted path."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
