"""CATEGORY: a label -> the BPE ids of its (normalised) text, like TEXT.

Labels are usually generated from a closed set (`closed_set`), collected from the train split at
materialisation and turned into a trie at generation time.
"""

from __future__ import annotations

from ofasys.modalities.text import Text


class Category(Text):
    name = "CATEGORY"
    doc = "label -> int32 BPE ids; shared token embedding; generated from the closed set"
    attributes = {"CATEGORY": frozenset({
        "no_loss", "closed_set", "uncased", "no_punctuation", "preprocess", "adaptor",
        "add_bos", "add_eos", "disable_auto_boseos",
    })}
    materialise_attrs = ("uncased", "no_punctuation")
    preprocess = {"default": None}
    """OFASys registers its `category` preprocessor for TEXT slots (see Text.preprocess); a CATEGORY
    slot is that preprocessing already, so only `default` names it here."""
    adaptors = {"default": None, "text": None}
    what = "label"
