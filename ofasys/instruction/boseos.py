"""Where `<BOS>`/`<EOS>` go on one side of a template.

The rule (applied to each side separately):

1. **Explicit side.** If the side marks boundaries itself — any `<BOS>`/`<EOS>` written
   anywhere on it (groups included), or any slot with `add_bos`/`add_eos` — nothing is
   added automatically. Written specials stay exactly where they are; a slot with
   `add_bos` gets a `<BOS>` right before it, `add_eos` an `<EOS>` right after it.
   Why: OFASys templates written with explicit markers (`<BOS> ... <EOS> [TEXT:label]`)
   place them deliberately, sometimes asymmetrically; adding more would change the task.
   Treating `add_bos`/`add_eos` as explicit too avoids a doubled `<BOS> <BOS>` on
   `-> [BOX:b,add_bos,add_eos]`.
2. **Opted out.** Otherwise, if any slot on the side has `disable_auto_boseos`, the side
   is left as written.
3. **Automatic.** Otherwise every maximal run of consecutive text-like items is wrapped
   in `<BOS> ... <EOS>`. Text-like: prompt `Text`, slots whose modality makes a run of
   vocabulary ids with their `preprocess=` (`Modality.is_token_run`: TEXT, BOX, CATEGORY,
   an IMAGE with `preprocess=image_vqgan`, ...), and a group whose items are all text-like
   (so `-> ( [BOX] [TEXT] )*` becomes `<BOS> ( [BOX] [TEXT] )* <EOS>`: one sequence, not
   one per repetition). Any other item (an embedded slot: an IMAGE of pixels, AUDIO, ...)
   ends a run; a group holding such an item has its own inner runs wrapped per repetition.

Inserted specials have `implicit=True`; an automatic `<BOS>` takes the position of the
first item of its run, an `<EOS>` that of the last, `add_*` ones that of their slot.
"""

from __future__ import annotations

from dataclasses import replace

from .nodes import Group, Item, Slot, Special, Text


def resolve_side(items: tuple[Item, ...]) -> tuple[Item, ...]:
    """`items` with BOS/EOS placed per the module rule."""
    if _is_explicit(items):
        return _apply_slot_markers(items)
    if any(s.get("disable_auto_boseos") for s in _slots(items)):
        return items
    return _wrap_runs(items)


def _slots(items):
    for item in items:
        if isinstance(item, Slot):
            yield item
        elif isinstance(item, Group):
            yield from _slots(item.items)


def _has_special(items) -> bool:
    return any(
        isinstance(i, Special) or (isinstance(i, Group) and _has_special(i.items)) for i in items
    )


def _is_explicit(items) -> bool:
    return _has_special(items) or any(s.get("add_bos") or s.get("add_eos") for s in _slots(items))


def _apply_slot_markers(items) -> tuple[Item, ...]:
    out: list[Item] = []
    for item in items:
        if isinstance(item, Slot):
            if item.get("add_bos"):
                out.append(Special("BOS", item.pos, implicit=True))
            out.append(item)
            if item.get("add_eos"):
                out.append(Special("EOS", item.pos, implicit=True))
        elif isinstance(item, Group):
            out.append(replace(item, items=_apply_slot_markers(item.items)))
        else:
            out.append(item)
    return tuple(out)


def _text_like(item: Item) -> bool:
    if isinstance(item, Text):
        return True
    if isinstance(item, Slot):
        return item.is_text_like
    if isinstance(item, Group):
        return bool(item.items) and all(_text_like(i) for i in item.items)
    return False


def _wrap_runs(items) -> tuple[Item, ...]:
    out: list[Item] = []
    run: list[Item] = []

    def flush() -> None:
        if run:
            out.extend([Special("BOS", run[0].pos, True), *run, Special("EOS", run[-1].pos, True)])
            run.clear()

    for item in items:
        if _text_like(item):
            run.append(item)
            continue
        flush()
        out.append(replace(item, items=_wrap_runs(item.items)) if isinstance(item, Group) else item)
    flush()
    return tuple(out)
