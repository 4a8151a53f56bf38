"""Modalities the instruction language knows but materialisation does not support yet.

Their slots parse and their attributes are checked (so an instruction written for them is validated
before any work); `plan_members` refuses them with `status` as the reason. Each moves to a file of
its own when it is implemented.
"""

from __future__ import annotations

from ofasys.modalities.base import Modality

_NOT_YET = "not supported yet"
_EMBEDDED_SEQUENCE = frozenset({"max_length", "min_length", "preprocess", "adaptor", "disable_auto_boseos"})
_TOKEN_SEQUENCE = frozenset({
    "no_loss", "mask_ratio", "noise_ratio", "max_length", "min_length", "preprocess", "adaptor", "add_bos",
    "add_eos", "disable_auto_boseos",
})


class Video(Modality):
    media_files = True
    name = "VIDEO"
    doc = "mp4/webm/gif -> F frames; image adaptor per frame + frame positions"
    status = _NOT_YET
    token_run = False
    attributes = {"VIDEO": _EMBEDDED_SEQUENCE}
    preprocess = {"default": _NOT_YET, "video": "not supported yet: VIDEO slots are not materialised yet"}
    adaptors = {
        "default": _NOT_YET,
        "video_image_sequence": "not supported yet: VIDEO slots are not materialised yet",
    }


class Struct(Modality):
    text_values = True
    name = "STRUCT"
    doc = "table rows / database schema -> linearised text -> BPE ids"
    status = _NOT_YET
    attributes = {"STRUCT": _TOKEN_SEQUENCE | {"uncased", "no_punctuation"}}
    preprocess = {
        "default": _NOT_YET,
        "table": "not supported yet: STRUCT slots are not materialised yet; linearise the table into a "
                 "[TEXT:<column>] slot",
        "database": "not supported yet: STRUCT slots are not materialised yet; serialise the schema into a "
                    "[TEXT:<column>] slot",
    }
    """OFASys's struct preprocessors (ofasys/preprocessor/default/struct.py; `table` is its STRUCT
    default)."""
    adaptors = {
        "default": _NOT_YET,
        "text": "not supported yet: STRUCT slots are not materialised yet; use a [TEXT:<column>] slot",
    }


class Motion(Modality):
    media_files = True
    name = "MOTION"
    doc = "humanoid clips -> T x D 6-D joint rotations; frame adaptor"
    status = _NOT_YET
    token_run = False
    attributes = {"MOTION": _EMBEDDED_SEQUENCE | {"sample_rate"}}
    preprocess = {"default": _NOT_YET, "motion_6d": "not supported yet: MOTION slots are not materialised yet"}
    adaptors = {"default": _NOT_YET, "motion_6d": "not supported yet: MOTION slots are not materialised yet"}
    """OFASys lists `text` as MOTION's default adaptor, but only `motion_6d` embeds motion frames."""
