import hashlib
import io
import subprocess
import tarfile

import pytest

from ofasys.data.shards import (ShardWriter, _scan_plain, _tarinfo, encode_sample, index_shard, sample_key,
                                shard_name)


def write(tmp_path, n, per_shard):
    with ShardWriter(tmp_path, "train", per_shard) as w:
        for i in range(n):
            w.write(sample_key("train", i), [("json", b'{"row":%d}' % i), ("x.text.npy", bytes([i]) * (i + 1))])
    return w.shards


def test_rollover_names_and_counts(tmp_path):
    shards = write(tmp_path, 7, 3)
    assert [(s.path, s.num_samples) for s in shards] == [(shard_name("train", k), c) for k, c in enumerate([3, 3, 1])]
    for s in shards:
        data = (tmp_path / s.path).read_bytes()
        assert s.bytes == len(data) and s.sha256 == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]


def test_deterministic_bytes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = write(tmp_path / "a", 5, 2), write(tmp_path / "b", 5, 2)
    assert [s.sha256 for s in a] == [s.sha256 for s in b]
    assert (tmp_path / "a/train-000001.tar").read_bytes() == (tmp_path / "b/train-000001.tar").read_bytes()


def test_shards_are_the_bytes_tarfile_writes(tmp_path):
    """Samples are encoded apart from the writer (in worker processes): the shard must still be
    exactly the tar `tarfile` makes of the same members, end-of-archive record padding included."""
    for n in (1, 4, 23):  # ends inside and across 10 KiB records
        (tmp_path / str(n)).mkdir()
        write(tmp_path / str(n), n, 100)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for i in range(n):
                for ext, data in [("json", b'{"row":%d}' % i), ("x.text.npy", bytes([i]) * (i + 1))]:
                    tar.addfile(_tarinfo(f"{sample_key('train', i)}.{ext}", len(data)), io.BytesIO(data))
        assert (tmp_path / str(n) / "train-000000.tar").read_bytes() == buf.getvalue()
    with pytest.raises(ValueError, match="must not contain"):
        encode_sample("a.b", [])


def test_index_offsets_and_stock_tar(tmp_path):
    write(tmp_path, 4, 10)
    path = tmp_path / "train-000000.tar"
    index = index_shard(path)
    assert list(index) == [sample_key("train", i) for i in range(4)]
    raw = path.read_bytes()
    ref = index["train-000000002"]["x.text.npy"]
    assert raw[ref.offset : ref.offset + ref.size] == bytes([2]) * 3
    listed = subprocess.run(["tar", "-tvf", str(path)], capture_output=True, text=True, check=True).stdout
    assert "train-000000003.x.text.npy" in listed and "1970-01-01" in listed
    with tarfile.open(path) as tar:
        assert tar.extractfile("train-000000001.json").read() == b'{"row":1}'


def _tarfile_index(path):
    """The index as `tarfile` reads the shard: the reference the header scan must equal."""
    index = {}
    with tarfile.open(path) as tar:
        for info in tar:
            if info.isfile():
                key, _, ext = info.name.rsplit("/", 1)[-1].partition(".")
                index.setdefault(key, {})[(ext)] = (info.offset_data, info.size)
    return index


def _as_pairs(index):
    return {k: {e: (r.offset, r.size) for e, r in v.items()} for k, v in index.items()}


def test_header_scan_equals_tarfile_on_written_and_foreign_tars(tmp_path):
    write(tmp_path, 23, 100)
    path = tmp_path / "train-000000.tar"
    assert list(_as_pairs(index_shard(path)).items()) == list(_tarfile_index(path).items())
    for fmt, name in ((tarfile.PAX_FORMAT, "dir/" + "k" * 120), (tarfile.GNU_FORMAT, "k" * 120),
                      (tarfile.USTAR_FORMAT, "p" * 90 + "/key")):
        other = tmp_path / f"other-{fmt}.tar"  # long names: pax / GNU long-name headers, a ustar prefix
        with tarfile.open(other, "w", format=fmt) as tar:
            if fmt != tarfile.USTAR_FORMAT:  # a directory is not a sample member: skipped
                folder = tarfile.TarInfo("dir")
                folder.type = tarfile.DIRTYPE
                tar.addfile(folder)
            for ext, data in (("json", b"{}"), ("x.text.npy", b"abc")):
                info = tarfile.TarInfo(f"{name}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        assert list(_as_pairs(index_shard(other)).items()) == list(_tarfile_index(other).items())
        assert len(index_shard(other)) == 1
    assert [m[0] for m in _scan_plain(other)] == ["p" * 90 + "/key.json", "p" * 90 + "/key.x.text.npy"]


def test_header_scan_rejects_a_corrupt_or_cut_tar(tmp_path):
    write(tmp_path, 3, 100)
    path = tmp_path / "train-000000.tar"
    raw = bytearray(path.read_bytes())
    second = index_shard(path)["train-000000001"]["json"].offset - 512
    raw[second + 5] ^= 0x01  # a flipped bit in the second sample's header name
    path.write_bytes(bytes(raw))
    with pytest.raises(tarfile.ReadError, match="checksum"):
        index_shard(path)
    raw[second + 5] ^= 0x01
    bad_name = bytearray(raw)  # a name that is not UTF-8, with a checksum that matches it
    bad_name[second] = 0xFF
    bad_name[second + 148: second + 156] = b"%06o\0 " % (sum(bad_name[second: second + 148]) + 256
                                                          + sum(bad_name[second + 156: second + 512]))
    path.write_bytes(bytes(bad_name))
    with pytest.raises(tarfile.ReadError, match="not UTF-8"):
        index_shard(path)
    path.write_bytes(bytes(raw[: second + 512 + 3]))  # cut inside that member's data
    with pytest.raises(tarfile.ReadError, match="past the end"):
        index_shard(path)


def test_empty_split_writes_nothing_and_failure_leaves_no_temp(tmp_path):
    assert write(tmp_path, 0, 3) == []
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "valid", 5) as w:
            w.write("valid-000000000", [("json", b"{}")])
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        ShardWriter(tmp_path, "train", 2).write("bad.key", [])


def test_npy_round_trip_fast_path():
    import numpy as np

    from ofasys.data.io import npy_bytes, npy_load

    for arr in [np.arange(7, dtype=np.int32), np.zeros((0,), np.int32), np.ones((3, 4, 3), np.uint8),
                np.float16([1.5, 2]), np.array(5, np.int64), np.arange(6, dtype=">i4").reshape(2, 3)]:
        back = npy_load(npy_bytes(arr))
        assert back.dtype == arr.dtype and back.shape == arr.shape and np.array_equal(back, arr)
        assert back.flags.writeable
