import json

import pytest

from ofasys.data.manifest import ManifestError, ShardIntegrityError, length_stats, read_manifest, verify_file


def test_length_stats():
    assert length_stats([]) == {"max": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0}
    s = length_stats(list(range(1, 101)))
    assert s["max"] == 100 and s["mean"] == 50.5 and s["p50"] == 50.5 and s["p95"] == pytest.approx(95.05)


def test_read_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 2}))
    with pytest.raises(ManifestError, match="format"):
        read_manifest(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "task": "x"}))
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
