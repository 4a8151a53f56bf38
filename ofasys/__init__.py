"""ofasys: multi-modal multi-task learning from one-line instructions.

`import ofasys` stays light (no torch) so that parsing and validating instructions is instant; the
model-side API (`OFASys`, `Trainer`, `Task`) is imported on first use.
"""

from ofasys.instruction import Instruction, InstructionError, parse_instruction

__all__ = ["Instruction", "InstructionError", "parse_instruction", "OFASys", "Trainer", "Task", "Prediction",
           "DetectedObject"]

_LAZY = {
    "OFASys": ("ofasys.inference", "OFASys"),
    "Prediction": ("ofasys.inference", "Prediction"),
    "DetectedObject": ("ofasys.inference", "DetectedObject"),
    "Trainer": ("ofasys.training", "Trainer"),
    "Task": ("ofasys.task", "Task"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'ofasys' has no attribute {name!r}")
