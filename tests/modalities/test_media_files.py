"""What every media modality (a cell may name a file) says of a file that is not there to read:
the same reasons, by `media_path`, naming the path as written in the data."""

from __future__ import annotations

import pytest

from ofasys.data.rows import RowContext
from ofasys.modalities import MODALITIES, RejectRow

MEDIA = sorted(name for name, m in MODALITIES.items() if m.media_files)


def test_every_media_modality_is_covered():
    assert {"IMAGE", "AUDIO", "VIDEO", "MOTION"} <= set(MEDIA)


@pytest.mark.parametrize("name", MEDIA)
def test_a_zero_byte_file_is_rejected_as_empty_not_as_undecodable(name, tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips/empty.bin").write_bytes(b"")
    ctx = RowContext(vocab=None, image_size=32, base_dir=tmp_path)
    with pytest.raises(RejectRow) as e:
        MODALITIES[name].materialise("clips/empty.bin", {}, ctx)
    assert e.value.reason == f"{name.lower()} file is empty (0 bytes): clips/empty.bin"


@pytest.mark.parametrize("name", MEDIA)
def test_a_name_too_long_for_the_file_system_is_a_missing_file(name, tmp_path):
    """A text pasted into a media column is a rejected row, not an OSError that stops the stage."""
    ctx = RowContext(vocab=None, image_size=32, base_dir=tmp_path)
    with pytest.raises(RejectRow) as e:
        MODALITIES[name].materialise("a long caption " * 40, {}, ctx)
    assert e.value.reason.startswith(f"{name.lower()} file not found (a long caption a long caption")
    assert e.value.reason.endswith("...)")
