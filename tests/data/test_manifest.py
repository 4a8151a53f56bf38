import json

import pytest

import numpy as np

from ofasys.data.manifest import (
    ManifestError,
    ShardIntegrityError,
    length_stats,
    load_lengths,
    read_manifest,
    side_stats,
    verify_file,
)


def test_length_stats():
    assert side_stats([]) == {"max": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0}
    s = side_stats(list(range(1, 101)))
    assert s["max"] == 100 and s["mean"] == 50.5 and s["p50"] == 50.5 and s["p95"] == pytest.approx(95.05)
    both = length_stats(np.stack([np.full(100, 7), np.arange(1, 101)], axis=1))
    assert both == {"encoder": {"max": 7, "mean": 7.0, "p50": 7.0, "p95": 7.0}, "decoder": s}
    assert length_stats(np.zeros((0, 2), np.int32))["decoder"] == side_stats([])


def test_load_lengths_wants_encoder_and_decoder_per_sample(tmp_path):
    path = tmp_path / "train-lengths.npy"
    np.save(path, np.asarray([[3, 4], [5, 6]], np.int64))
    lengths = load_lengths(path, 2)
    assert lengths.dtype == np.int32 and lengths.tolist() == [[3, 4], [5, 6]]
    with pytest.raises(ManifestError, match=r"shape \(2, 2\), expected \(3, 2\)"):
        load_lengths(path, 3)
    np.save(path, np.asarray([7, 11], np.int32))
    with pytest.raises(ManifestError, match="old-format lengths file.*dvc repro"):
        load_lengths(path, 2)


def test_read_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 3}))
    with pytest.raises(ManifestError, match="format 3, this code reads 2$"):
        read_manifest(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1}))
    with pytest.raises(ManifestError, match="format 1, this code reads 2; .*older version.*dvc repro"):
        read_manifest(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 2, "task": "x"}))
    with pytest.raises(ManifestError, match="lacks"):
        read_manifest(tmp_path / "manifest.json")


def test_verify_file(tmp_path):
    import hashlib

    p = tmp_path / "a.tar"
    p.write_bytes(b"hello")
    verify_file(p, hashlib.sha256(b"hello").hexdigest(), 5)
    with pytest.raises(ShardIntegrityError, match="bytes"):
        verify_file(p, hashlib.sha256(b"hello").hexdigest(), 6)
    p.write_bytes(b"hellO")
    with pytest.raises(ShardIntegrityError, match="sha256"):
        verify_file(p, hashlib.sha256(b"hello").hexdigest(), 5)
    with pytest.raises(ShardIntegrityError, match="missing"):
        verify_file(tmp_path / "b.tar", "0" * 64)
