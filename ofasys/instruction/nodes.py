"""The items a template side is made of: prompt `Text`, `<BOS>`/`<EOS>` `Special`s, `Slot`s and
repeated `Group`s (frozen, hashable, positions kept).

They live apart from `ast.Template` so that `boseos` (which places specials among items) and `ast`
(whose templates call `boseos`) import in one direction only: nodes <- boseos <- ast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Union

from .attributes import Value
from .modalities import is_text_like


class Attrs(Mapping[str, Value]):
    """Read-only, hashable, ordered mapping of a slot's typed attributes.

    Compares equal to a plain dict with the same items, so tests and callers can write
    `slot.attrs == {"no_loss": True}`.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Value] | Iterable[tuple[str, Value]] = ()):
        pairs = tuple(items.items()) if isinstance(items, Mapping) else tuple(items)
        object.__setattr__(self, "_items", pairs)

    def __getitem__(self, key: str) -> Value:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def get(self, key: str, default: Value | None = None) -> Value | None:
        """As `Mapping.get`, without its raise-and-catch: collation asks for attributes per sample."""
        for k, v in self._items:
            if k == key:
                return v
        return default

    def __contains__(self, key: object) -> bool:
        return any(k == key for k, _ in self._items)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items))

    def __repr__(self) -> str:
        return f"Attrs({dict(self._items)!r})"


@dataclass(frozen=True)
class Text:
    """Prompt text, whitespace-normalised (runs collapsed to one space, ends stripped).
    On the output side it is a forced prefix that carries no loss."""

    text: str
    pos: int


@dataclass(frozen=True)
class Special:
    """`<BOS>` or `<EOS>`. `implicit` marks ones inserted by `resolved_inputs/outputs`
    (automatic, or from add_bos/add_eos) rather than written in the template."""

    name: str
    pos: int
    implicit: bool = False


@dataclass(frozen=True)
class Slot:
    """`[MODALITY:column,attr,attr=value]`. `column` None = an output to generate, or a
    value supplied by position. `attrs` holds typed values (flags are True)."""

    modality: str
    column: str | None
    attrs: Mapping[str, Value] = field(default_factory=Attrs)
    pos: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.attrs, Attrs):
            object.__setattr__(self, "attrs", Attrs(self.attrs))

    def get(self, name: str, default: Value | None = None) -> Value | None:
        return self.attrs.get(name, default)

    @property
    def no_loss(self) -> bool:
        return bool(self.attrs.get("no_loss", False))

    @property
    def closed_set(self) -> bool:
        return bool(self.attrs.get("closed_set", False))

    @property
    def preprocess(self) -> str | None:
        return self.attrs.get("preprocess")  # type: ignore[return-value]

    @property
    def is_text_like(self) -> bool:
        """A run of vocabulary ids that takes BOS/EOS (see modalities.is_text_like)."""
        return is_text_like(self.modality, self.preprocess)


@dataclass(frozen=True)
class Group:
    """`( ... )*`: items repeated once per element of the list-valued columns inside."""

    items: tuple["Item", ...]
    pos: int


Item = Union[Text, Special, Slot, Group]


def walk_slots(items: Iterable[Item]) -> Iterator[Slot]:
    """The slots among `items`, groups included, in source order."""
    for item in items:
        if isinstance(item, Slot):
            yield item
        elif isinstance(item, Group):
            yield from walk_slots(item.items)
