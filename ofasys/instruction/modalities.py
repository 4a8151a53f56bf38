"""Modality names and slot kinds as the instruction language sees them, all read from the registry.

The parser holds no list of modalities of its own: names, kinds, token-run-ness and which attribute
means something on which kind are declared once per modality in `ofasys.modalities` (one file per
modality), and this module only asks `ofasys.modalities.MODALITIES`. Adding a modality there makes
the parser accept its slots, attributes and `preprocess=`/`adaptor=` values with no change here.

A *kind* is what attribute applicability is decided on. A slot's kinds are
`Modality.kinds(preprocess)`: normally just the modality's name, but a preprocess can make a slot
another kind too (an IMAGE with `preprocess=image_vqgan` is VQ code tokens, so it also takes the
token attributes such as `length=`). "Text-like" (`is_text_like`) means the slot becomes a run of
ids in the unified vocabulary (`Modality.is_token_run`): only those take `<BOS>`/`<EOS>`.

The registry imports numpy, PIL and the vocabulary, never this package and never torch, so there is
no import cycle and parsing stays light.
"""

from __future__ import annotations

from collections.abc import Iterable

from ofasys.modalities import MODALITIES as REGISTRY

MODALITIES: tuple[str, ...] = tuple(REGISTRY)
"""Every modality name the language knows, in the registry's order (the order messages use)."""


def slot_kinds(modality: str, preprocess: str | None) -> frozenset[str]:
    """The kinds a `[modality,...]` slot with this `preprocess=` counts as."""
    return REGISTRY[modality].kinds(preprocess)


def is_text_like(modality: str, preprocess: str | None) -> bool:
    """Whether the slot is a token run that takes BOS/EOS (see module docstring)."""
    return REGISTRY[modality].is_token_run(preprocess)


def _kinds() -> dict[str, tuple[str, str, bool]]:
    """Every declared kind -> (its modality, how messages name it, whether it is the modality's own
    kind), in registry order. A kind a preprocess adds is named by that preprocess, e.g.
    'IMAGE (preprocess=image_vqgan)'."""
    kinds: dict[str, tuple[str, str, bool]] = {}
    for modality in REGISTRY.values():
        plain = modality.kinds(None)
        for kind in modality.attributes:
            if kind in plain:
                kinds[kind] = (modality.name, modality.name, True)
                continue
            makers = [p for p in modality.preprocess if kind in modality.kinds(p) - plain]
            label = f"{modality.name} (preprocess={makers[0]})" if makers else f"{modality.name} ({kind})"
            kinds[kind] = (modality.name, label, False)
    return kinds


_KINDS = _kinds()
KINDS: tuple[str, ...] = tuple(_KINDS)
"""Every kind some modality declares attributes for, in registry order."""


def attribute_kinds(attribute: str) -> frozenset[str]:
    """The kinds `attribute` means something on: those whose declared attribute set lists it."""
    return frozenset(
        kind for modality in REGISTRY.values() for kind, names in modality.attributes.items() if attribute in names
    )


def describe_kinds(kinds: Iterable[str]) -> str:
    """Human list of kinds in registry order, e.g. 'TEXT, IMAGE, STRUCT, PHONE'. A kind a preprocess
    adds is named only when its modality's own kind is not listed ('mask_ratio' applies to 'TEXT,
    IMAGE', not 'TEXT, IMAGE, IMAGE (preprocess=image_vqgan)')."""
    wanted = set(kinds)
    plain_listed = {mod for kind, (mod, _, plain) in _KINDS.items() if plain and kind in wanted}
    return ", ".join(
        label for kind, (mod, label, plain) in _KINDS.items() if kind in wanted and (plain or mod not in plain_listed)
    )


def choice_table(table: str) -> dict[str, dict[str, str | None]]:
    """Values of a choice attribute read from the modalities' `table` attribute ("preprocess" or
    "adaptors"): value -> {modality name -> None (supported) or why not yet}, values in first-seen
    registry order, modalities in registry order."""
    values: dict[str, dict[str, str | None]] = {}
    for modality in REGISTRY.values():
        for value, reason in getattr(modality, table).items():
            values.setdefault(value, {})[modality.name] = reason
    return values


def supported_modalities() -> list[str]:
    """Names of the modalities whose slots can be materialised."""
    return [name for name, m in REGISTRY.items() if m.status is None]
