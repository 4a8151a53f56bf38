from __future__ import annotations

import pytest

from ofasys.instruction import ATTRIBUTES, MODALITIES
from ofasys.instruction.suggest import did_you_mean, suggestion_text


@pytest.mark.parametrize(
    "word,candidates,expected",
    [
        ("BOUNDING_BOX", MODALITIES, "BOX"),  # difflib alone would say AUDIO
        ("text", MODALITIES, "TEXT"),
        ("IMG", MODALITIES, "IMAGE"),
        ("BBOX", MODALITIES, "BOX"),
        ("preprocessor", ATTRIBUTES, "preprocess"),
        ("closedset", ATTRIBUTES, "closed_set"),
        ("maxlength", ATTRIBUTES, "max_length"),
        ("SPEECH", MODALITIES, None),
        ("", MODALITIES, None),
        ("x", [], None),
    ],
)
def test_did_you_mean(word, candidates, expected):
    assert did_you_mean(word, candidates) == expected


def test_suggestion_text():
    assert suggestion_text("BOUNDING_BOX", MODALITIES) == "did you mean BOX? "
    assert suggestion_text("bos", ["BOS"], "<{}>") == "did you mean <BOS>? "
    assert suggestion_text("zzz", MODALITIES) == ""
