"""Build a config dataclass from a plain mapping, refusing keys it does not have.

Configs arrive as YAML or JSON mappings (params.yaml sections, an exported model's config.json); a
misspelt key silently falling back to its default is how a run trains something other than what its
author meant. So unknown keys are an error that names the closest known key.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


class UnknownKeyError(ValueError):
    """A mapping had a key the target dataclass does not define."""


def check_known_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    """Raise UnknownKeyError for the first key of `data` that is not an init field of `cls`."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(names)}"
            raise UnknownKeyError(f"{where}.{key}: unknown key; {hint}")


def from_mapping(cls: type[T], data: Mapping[str, Any], where: str | None = None) -> T:
    """`cls(**data)` after checking every key is a field of `cls` (`where` prefixes the error)."""
    check_known_keys(cls, data, where or cls.__name__)
    return cls(**data)
