"""`InstructionError`: every instruction problem points at a column and says how to fix it.

Why a dedicated error: instructions are typed by people into params files, and the
cheapest moment to catch a typo (`[BOUNDING_BOX:b]`, `preprocessor=`) is at parse time,
with the offending column underlined, instead of hours later in a half-trained model.

`str(err)` looks like::

    unknown modality 'BOUNDING_BOX'
        [IMAGE:img] -> [BOUNDING_BOX:b]
                        ^
    fix: did you mean BOX? ...

`column` is a 0-based char offset into `template` (the offending template's own source; for
errors in how templates are separated, the whole instruction). When the template spans
several lines, the line holding the column is shown and the header names the line.
"""

from __future__ import annotations

_INDENT = "    "


def caret_block(template: str, column: int) -> str:
    """The template line holding `column` and a caret line under it.

    Tabs are shown as single spaces so the caret stays aligned with the offset.
    """
    column = max(0, min(column, len(template)))
    line_start = template.rfind("\n", 0, column) + 1
    line_end = template.find("\n", column)
    if line_end == -1:
        line_end = len(template)
    line = template[line_start:line_end].replace("\t", " ")
    return f"{_INDENT}{line}\n{_INDENT}{' ' * (column - line_start)}^"


class InstructionError(ValueError):
    """A malformed instruction (or one that does not fit the data), with position and fix.

    Attributes:
        message: what is wrong, one line.
        template: the source text the column refers to.
        column: 0-based char offset into `template`.
        fix: a concrete way to correct it.
    """

    def __init__(self, message: str, template: str, column: int, fix: str):
        # args carry everything so the error survives pickling (loader workers re-raise it).
        super().__init__(message, template, column, fix)
        self.message = message
        self.template = template
        self.column = column
        self.fix = fix

    def __str__(self) -> str:
        header = self.message
        line_no = self.template.count("\n", 0, max(0, self.column)) + 1
        if "\n" in self.template:
            header = f"{header} (line {line_no} of the template)"
        return f"{header}\n{caret_block(self.template, self.column)}\nfix: {self.fix}"


class NotSupportedYetError(InstructionError, NotImplementedError):
    """A valid instruction naming a `preprocess=`/`adaptor=` value (an OFASys name) that this code
    can't honour yet; the message says why, the fix what works instead.

    Also a NotImplementedError, so callers can tell "right, but not yet" from "malformed"."""
