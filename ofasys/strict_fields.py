"""Build a config dataclass from a plain mapping, refusing keys it does not have and values of the
wrong type.

Configs arrive as YAML or JSON mappings (params.yaml sections, an exported model's config.json); a
misspelt key silently falling back to its default, or `weight: "abc"` surviving until a sampler
divides by it hours later, is how a run trains something other than what its author meant. So unknown
keys are an error that names the closest known key, and every value is checked against its field's
annotation before the dataclass is built (its `__post_init__` then checks ranges).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Mapping, TypeVar, Union

T = TypeVar("T")


class UnknownKeyError(ValueError):
    """A mapping had a key the target dataclass does not define."""


class FieldTypeError(ValueError):
    """A value does not have its field's type; the message names the key and the expected type."""


def check_known_keys(cls: type, data: Mapping[str, Any], where: str, extra: tuple[str, ...] = ()) -> None:
    """Raise UnknownKeyError for the first key of `data` that is not an init field of `cls` (or one of
    `extra`, keys a section adds to the class's)."""
    names = [f.name for f in dataclasses.fields(cls) if f.init] + list(extra)
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(names)}"
            raise UnknownKeyError(f"{where}.{key}: unknown key; {hint}")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return "a mapping"
    if origin is list or tp is list:
        return "a list"
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> bool:
    """Whether `value` (as YAML/JSON gives it) fits annotation `tp`. Unknown annotations pass."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:  # YAML writes 1 for 1.0; NaN and infinity are never a meaningful setting
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return isinstance(value, Mapping)
    if origin is list or tp is list:
        return isinstance(value, list)
    return True  # nested dataclasses and other types are checked by their own builders


def check_field_types(cls: type, data: Mapping[str, Any], where: str) -> None:
    """Raise FieldTypeError for the first value of `data` that does not fit its field's annotation."""
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        tp = hints.get(key)
        if tp is not None and not _matches(value, tp):
            shown = repr(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
            raise FieldTypeError(f"{where}.{key}: expected {_describe(tp)}, got {shown} "
                                 f"({type(value).__name__})")


def from_mapping(cls: type[T], data: Mapping[str, Any], where: str | None = None) -> T:
    """`cls(**data)` after checking every key is a field of `cls` and every value has its type
    (`where` prefixes the error)."""
    check_known_keys(cls, data, where or cls.__name__)
    check_field_types(cls, data, where or cls.__name__)
    return cls(**data)
