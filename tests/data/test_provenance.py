"""Raw-row provenance (contracts C1, C2): rejects name the user's own file and row; relative media
paths resolve against the source file's directory; provenance columns are never data."""

import json
import tarfile

import pytest

from ofasys.data.materialise import MaterialiseConfig, RowRejected, materialise_task, sample_from_row
from ofasys.data.rejects import Reject, read_rejects
from ofasys.instruction import InstructionError

CAPTION = "[IMAGE:img] <BOS> what does the image describe? <EOS> -> <BOS> [TEXT:cap] <EOS>"


def _config(tmp_path, splits, vocab_path, **kw):
    base = dict(task="caption", instruction=CAPTION, raw_splits=splits, vocab_path=str(vocab_path),
                out_dir=str(tmp_path / "out"), image_size=8, reject_budget=1.0, progress=False)
    return MaterialiseConfig(**{**base, **kw})


def test_relative_paths_resolve_against_the_source_file_and_rejects_name_it(tmp_path, monkeypatch, png, parquet, vocab_path):
    """The raw parquet lives in data/raw/caption/, the source file and its images elsewhere."""
    project = tmp_path / "project"
    photos = tmp_path / "photos"  # an absolute source elsewhere, images next to it
    (project / "sources/imgs").mkdir(parents=True)
    (photos / "pics").mkdir(parents=True)
    (project / "sources/imgs/a.png").write_bytes(png(10, 12, seed=1))
    (photos / "pics/b.png").write_bytes(png(14, 16, seed=2))
    (project / "data/raw/caption").mkdir(parents=True)
    (project / "data/raw/caption/c.png").write_bytes(png(18, 20, seed=3))  # demo rows: the parquet's directory
    monkeypatch.chdir(project)  # ingest's relative __source__ is relative to the project dir
    rows = {
        "img": ["imgs/a.png", "imgs/missing.png", "pics/b.png", "c.png", "c.png", "imgs/a.png"],
        "cap": ["one", "two", "three", "four", "five", "  "],
        "__source__": ["sources/caps.jsonl", "sources/caps.jsonl", str(photos / "caps.csv"), "demo:digits", None,
                       "sources/caps.jsonl"],
        "__source_row__": [0, 1, 7, 3, None, 2],
        "__source_id__": ["a-0", "a-1", None, None, None, '{"n": 2}'],
    }
    splits = {"train": parquet(project / "data/raw/caption/train.parquet", rows)}
    materialise_task(_config(tmp_path, splits, vocab_path))

    rejects = read_rejects(tmp_path / "out/rejects.jsonl")
    assert rejects == [
        Reject("train", 1, "img", "image file not found (imgs/missing.png)", "sources/caps.jsonl", 1, "a-1"),
        Reject("train", 5, "cap", "empty text", "sources/caps.jsonl", 2, '{"n": 2}'),
    ]
    lines = (tmp_path / "out/rejects.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"split": "train", "row": 1, "column": "img", "reason": "image file not found (imgs/missing.png)",
                                    "source": "sources/caps.jsonl", "source_row": 1, "source_id": "a-1"}
    with tarfile.open(tmp_path / "out/train-000000.tar") as tar:
        names = tar.getnames()
        metas = {n: json.loads(tar.extractfile(n).read()) for n in names if n.endswith(".json")}
    sizes = {n.split(".")[0]: (m["meta"]["img"]["width"], m["meta"]["img"]["height"]) for n, m in metas.items()}
    assert sizes == {"train-000000000": (10, 12), "train-000000002": (14, 16), "train-000000003": (18, 20),
                     "train-000000004": (18, 20)}
    # the provenance columns are read, never stored as data
    assert not [n for n in names if "__source" in n]
    slots = json.loads((tmp_path / "out/manifest.json").read_text())["slots"]
    assert [s["column"] for s in slots] == ["img", "cap"]


def test_a_rejected_row_without_a_source_id_omits_it(tmp_path, png, parquet, vocab_path):
    rows = {"img": [png(8, 8), b"junk"], "cap": ["one", "two"],
            "__source__": ["in.parquet", "in.parquet"], "__source_row__": [0, 1], "__source_id__": [None, None]}
    materialise_task(_config(tmp_path, {"train": parquet(tmp_path / "raw/train.parquet", rows)}, vocab_path))
    [line] = (tmp_path / "out/rejects.jsonl").read_text().splitlines()
    assert json.loads(line) == {"split": "train", "row": 1, "column": "img", "source": "in.parquet", "source_row": 1,
                                "reason": "image could not be decoded (UnidentifiedImageError)"}


def test_older_raw_data_without_provenance_still_works(tmp_path, png, parquet, vocab_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw/x.png").write_bytes(png(9, 9))
    rows = {"img": ["x.png", "nope.png"], "cap": ["one", "two"]}
    materialise_task(_config(tmp_path, {"train": parquet(tmp_path / "raw/train.parquet", rows)}, vocab_path))
    [line] = (tmp_path / "out/rejects.jsonl").read_text().splitlines()
    assert json.loads(line) == {"split": "train", "row": 1, "column": "img", "reason": "image file not found (nope.png)"}
    assert read_rejects(tmp_path / "out/rejects.jsonl") == [Reject("train", 1, "img", "image file not found (nope.png)")]


def test_provenance_columns_cannot_be_bound_as_data(tmp_path, png, parquet, vocab_path):
    rows = {"img": [png(8, 8)], "cap": ["one"], "__source__": ["s.jsonl"], "__source_row__": [0], "__source_id__": [None]}
    splits = {"train": parquet(tmp_path / "raw/train.parquet", rows)}
    with pytest.raises(InstructionError) as e:
        materialise_task(_config(tmp_path, splits, vocab_path, instruction="[IMAGE:img] -> [TEXT:__source__]"))
    assert "__source__" in str(e.value) and "img, cap" in str(e.value) and "__source_row__" not in str(e.value)


def test_inference_rows_resolve_against_base_dir_or_their_source(tmp_path, png, vocab):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a/x.png").write_bytes(png(11, 13))
    (tmp_path / "b/x.png").write_bytes(png(21, 23))
    s = sample_from_row(CAPTION, {"img": "x.png"}, vocab, image_size=8, base_dir=tmp_path / "a")
    assert s.meta["meta"]["img"] == {"width": 11, "height": 13}
    row = {"img": "x.png", "__source__": str(tmp_path / "b/rows.jsonl")}
    s = sample_from_row(CAPTION, row, vocab, image_size=8, base_dir=tmp_path / "a")
    assert s.meta["meta"]["img"] == {"width": 21, "height": 23}
    with pytest.raises(RowRejected, match="image file not found"):
        sample_from_row(CAPTION, {"img": "x.png"}, vocab, image_size=8, base_dir=tmp_path)
