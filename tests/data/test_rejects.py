from ofasys.data.rejects import Reject, RejectBudget, RejectBudgetExceeded, read_rejects, write_rejects


def test_budget_forms_and_semantics():
    assert RejectBudget.of(0.01) == RejectBudget(0.01, None)
    assert RejectBudget.of(5) == RejectBudget(None, 5)
    assert RejectBudget.of({"max_fraction": 0.1, "max_count": 2}) == RejectBudget(0.1, 2)
    b = RejectBudget(0.01, None)
    assert b.allows(0, 10) and b.allows(10, 1000) and not b.allows(11, 1000) and not b.allows(1, 10)
    either = RejectBudget(0.01, 3)
    assert either.allows(3, 10) and either.allows(10, 1000) and not either.allows(11, 1000)
    assert not RejectBudget(None, None).allows(1, 1000)


def test_exceeded_message_has_counts():
    e = RejectBudgetExceeded("caption", {"train": (30, 1000), "valid": (0, 10)}, RejectBudget(0.01), "out/rejects.jsonl")
    msg = str(e)
    assert "train: 30/1000 rows rejected (3.00%)  <- over budget" in msg
    assert "valid: 0/10" in msg and "1.00%" in msg and "out/rejects.jsonl" in msg


def test_jsonl_round_trip(tmp_path):
    rows = [Reject("train", 3, "img", "image could not be decoded (UnidentifiedImageError)"), Reject("test", 0, "cap", "empty text")]
    assert write_rejects(tmp_path / "r.jsonl", rows) == 2
    assert read_rejects(tmp_path / "r.jsonl") == rows
    assert (tmp_path / "r.jsonl").read_text().splitlines()[1] == '{"column":"cap","reason":"empty text","row":0,"split":"test"}'


def test_provenance_round_trip_and_absent_fields_left_out(tmp_path):
    rows = [
        Reject("train", 7, "img", "image file not found (a.png)", "data/src/caps.jsonl", 41, "img-41"),
        Reject("train", 8, "cap", "empty text", "demo:digits", 8),
        Reject("valid", 0, "cap", "empty text"),
    ]
    write_rejects(tmp_path / "r.jsonl", rows)
    assert read_rejects(tmp_path / "r.jsonl") == rows
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert lines[0] == ('{"column":"img","reason":"image file not found (a.png)","row":7,"source":"data/src/caps.jsonl",'
                        '"source_id":"img-41","source_row":41,"split":"train"}')
    assert lines[1] == '{"column":"cap","reason":"empty text","row":8,"source":"demo:digits","source_row":8,"split":"train"}'
    assert lines[2] == '{"column":"cap","reason":"empty text","row":0,"split":"valid"}'
