"""The instruction language: one line declares a task's encoder input and decoder output.

    [IMAGE:img] what does the image describe? -> [TEXT:cap]

`parse_instruction` turns it into an `Instruction` (frozen AST with positions); anything
malformed raises `InstructionError` with the template, a caret under the offending
column and a fix. Grammar and lexical rules: `parser` and `scanner`; attributes:
`attributes.ATTRIBUTES`; where `<BOS>`/`<EOS>` go: `boseos`. Modality names, kinds and
`preprocess=`/`adaptor=` values come from the registry, `ofasys.modalities` (see `modalities`).
"""

from .ast import Attrs, Group, Instruction, Item, Slot, Special, Template, Text
from .attributes import ATTRIBUTES, AttributeSpec
from .errors import InstructionError, NotSupportedYetError
from .modalities import MODALITIES
from .parser import parse_instruction

__all__ = [
    "ATTRIBUTES", "AttributeSpec", "Attrs", "Group", "Instruction", "InstructionError", "Item",
    "MODALITIES", "NotSupportedYetError", "Slot", "Special", "Template", "Text", "parse_instruction",
]
