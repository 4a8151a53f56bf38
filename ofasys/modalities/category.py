"""CATEGORY: a label -> the BPE ids of its (normalised) text, like TEXT.

Labels are usually generated from a closed set (`closed_set`), collected from the train split at
materialisation and turned into a trie at generation time.
"""

from __future__ import annotations

from ofasys.modalities.text import TextEncoder


class CategoryEncoder(TextEncoder):
    modality = "CATEGORY"
    what = "label"
