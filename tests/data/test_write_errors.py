"""A write that fails for real (file size limit, full device) leaves no temp file and no manifest, and
raises one OutputWriteError whose message is one line: the file, the OS reason, the fix."""

import errno
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ofasys.data.io import OutputWriteError, atomic_write_bytes, writing
from ofasys.data.materialise import MaterialiseConfig, materialise_task

ROOT = Path(__file__).resolve().parents[2]
CAPTION = "[IMAGE:img] <BOS> what does the image describe? <EOS> -> <BOS> [TEXT:cap] <EOS>"

# Runs materialisation under RLIMIT_FSIZE: writes past the limit fail with EFBIG (SIGXFSZ ignored,
# so the process gets the error instead of being killed), exactly as on a full disk.
LIMITED = textwrap.dedent(
    """
    import json, resource, signal, sys
    from ofasys.data.materialise import MaterialiseConfig, materialise_task
    from ofasys.data.io import OutputWriteError

    cfg = MaterialiseConfig(**json.loads(sys.argv[1]))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        materialise_task(cfg)
    except OutputWriteError as exc:
        print(str(exc))
        sys.exit(2)
    """
)


def _config(tmp_path, png, parquet, vocab_path, n=24, image_size=32, shard_samples=8) -> dict:
    rows = {"img": [png(image_size, image_size, seed=i) for i in range(n)], "cap": ["one two"] * n}
    return dict(task="caption", instruction=CAPTION, vocab_path=str(vocab_path), out_dir=str(tmp_path / "out"),
                raw_splits={"train": parquet(tmp_path / "raw/train.parquet", rows)}, image_size=image_size,
                shard_samples=shard_samples, progress=False)


def test_file_size_limit_mid_shard_cleans_up_and_rerun_succeeds(tmp_path, png, parquet, vocab_path):
    cfg = _config(tmp_path, png, parquet, vocab_path)
    # one sample is ~4 KB (a 32x32x3 image), a shard of 8 ~33 KB: the first shard fails part way
    proc = subprocess.run([sys.executable, "-c", LIMITED, json.dumps(cfg), "20000"], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    out = tmp_path / "out"
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith(f"cannot write {out / 'train-000000.tar'}: File too large (errno {errno.EFBIG}); ")
    assert lines[0].endswith("and re-run") and "ulimit -f" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == []  # no temp file, no shard, no manifest

    report = materialise_task(MaterialiseConfig(**cfg))  # with space again
    assert report.splits["train"].num_samples == 24
    assert (out / "manifest.json").is_file() and not list(out.glob(".*"))


def test_a_small_file_failing_after_the_shards_cleans_up_too(tmp_path, png, parquet, vocab_path):
    """Shards fit (one tiny sample each: a tar's minimum 10 KB) but the manifest listing 100 of them
    (~17 KB) does not: nothing of the run is left."""
    cfg = _config(tmp_path, png, parquet, vocab_path, n=100, image_size=4, shard_samples=1)
    proc = subprocess.run([sys.executable, "-c", LIMITED, json.dumps(cfg), "12000"], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    out = tmp_path / "out"
    [line] = proc.stdout.strip().splitlines()
    assert line.startswith(f"cannot write {out / 'manifest.json'}: File too large")
    assert list(out.iterdir()) == []


def test_no_space_on_device_names_the_file_and_the_filesystem(tmp_path):
    """/dev/full fails every write with ENOSPC."""
    final = tmp_path / "shard.tar"
    tmp = tmp_path / ".shard.tar.tmp"
    tmp.write_bytes(b"partial")
    with pytest.raises(OutputWriteError) as e:
        with writing(final, tmp), open("/dev/full", "wb") as f:
            f.write(b"x" * 10)
            f.flush()
    assert e.value.errno == errno.ENOSPC and not tmp.exists()
    msg = str(e.value)
    assert msg.startswith(f"cannot write {final}: No space left on device (errno {errno.ENOSPC}); free space on ")
    assert msg.endswith(f"(the filesystem of {tmp_path}) and re-run") and "\n" not in msg
    assert isinstance(e.value, OSError)  # callers catching OSError still do


def test_unwritable_directory_is_one_line_too(tmp_path):
    missing = tmp_path / "gone" / "rejects.jsonl"
    with pytest.raises(OutputWriteError) as e:
        atomic_write_bytes(missing, b"{}")
    assert str(e.value) == (f"cannot write {missing}: No such file or directory (errno {errno.ENOENT}); "
                            f"check that {missing.parent} exists, is writable and has free space, then re-run")
