"""The metric registry: each metric's baseline predictor, direction, companions and needs, and the
report a metrics file holds."""

from __future__ import annotations

import pytest

from ofasys.metrics import registry as r
from tests.metrics.conftest import COUNT_ACCEPT


def data(refs, train=(), **kw):
    return r.EvalData(references=refs, train_references=train, **kw)


def test_every_metric_has_a_description_known_outputs_and_registered_companions():
    for name, spec in r.METRICS.items():
        assert spec.description, name
        assert set(spec.outputs) <= {"text", "box", "phones", "image", "objects", "motion", "audio"}, name
        assert all(c in r.METRICS and c != name for c in spec.companions), name
        for companion in spec.companions:  # a companion scores whatever the metric scores
            assert set(spec.outputs) <= set(r.METRICS[companion].outputs), (name, companion)
    assert {n for n, s in r.METRICS.items() if not s.higher_is_better} == {"wer", "cer", "per", "pixel_error", "tts_wer",
                                                                           "fbank_l1"}
    for name, spec in r.METRICS.items():  # a perfect output scores `perfect` (CIDEr has no fixed top)
        assert spec.perfect == (None if name == "cider" else 100.0 if name == "bleu4" else
                                1.0 if spec.higher_is_better else 0.0), name


def test_majority_label_baseline_breaks_ties_independently_of_order():
    assert r.baseline("accuracy", data(["a", "b", "b", "b"], ["a", "a", "b"])) == 0.25
    assert r.baseline("accuracy", data(["a"], ["b", "a"])) == r.baseline("accuracy", data(["a"], ["a", "b"])) == 1.0


def test_most_common_text_baseline_for_captions():
    train = ["one", "two five", "two  five", "three"]
    test = ["two five", "one", "two five", "nine"]
    assert r.baseline("exact_match", data(test, train)) == 0.5
    long_train = ["a b c d e", "a b c d e", "x"]
    refs = ["a b c d e", "a b c d f"]
    assert r.baseline("bleu4", data(refs, long_train)) == pytest.approx(r.score("bleu4", ["a b c d e"] * 2, data(refs)))


def test_mean_box_baseline():
    train = ["0,0,10,10", "10,10,20,20"]  # mean box 5,5,15,15
    assert r.baseline("iou_acc", data([[5, 5, 15, 15], [0, 0, 10, 10]], train)) == 0.5  # IoU 1 and 25/175


def test_copy_baseline_is_the_share_of_visible_tokens_and_needs_the_masked_inputs():
    assert r.baseline("token_accuracy", data(["a b c d"], masked_inputs=["a <mask> c <mask>"])) == 0.5
    # A span masked as one token shifts later positions: copying scores below 1 - mask_ratio.
    assert r.baseline("token_accuracy", data(["a b c d e"], masked_inputs=["a <mask> d e"])) == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="token_accuracy needs masked_inputs"):
        r.baseline("token_accuracy", data(["a b"]))
    assert r.needs("token_accuracy") == {"masked_inputs"}


def test_most_common_transcript_baseline_for_error_rates():
    train = ["one two", "one  two", "three four"]
    test = ["one two", "one five", "six seven"]
    # Always "one two": 0 + 1 + 2 substitutions over 6 reference words.
    assert r.baseline("wer", data(test, train)) == 0.5
    phones = ["w ʌ n", "w ʌ n", "t uː"]
    # "w ʌ n" for "t uː": 2 substitutions + 1 insertion; over 2 + 3 reference phones.
    assert r.baseline("per", data(["t uː", "w ʌ n"], phones)) == pytest.approx(3 / 5)


def test_gain_is_oriented_so_larger_is_better():
    assert r.gain("wer", 0.2, 0.9) == pytest.approx(0.7)
    assert r.gain("per", 0.9, 0.2) == pytest.approx(-0.7)
    assert r.gain("accuracy", 0.2, 0.9) == pytest.approx(-0.7)
    assert r.gain("bleu4", 90.0, 20.0) == pytest.approx(70.0)
    with pytest.raises(ValueError, match="unknown metric 'blue4'; metrics: bleu4"):
        r.gain("blue4", 1, 0)


def test_sql_metrics_execute_on_the_databases_given(music_db):
    dbs = [str(music_db)] * 2
    preds, refs = ["SELECT 2", None], [COUNT_ACCEPT, "SELECT Name FROM Artist"]
    assert r.score("exec_acc", preds, data(refs, databases=dbs)) == 0.5
    assert r.score("sql_em", preds, data(refs)) == 0.0
    with pytest.raises(ValueError, match="exec_acc needs databases"):
        r.score("exec_acc", preds, data(refs))
    # the most common training query, counted after normalisation
    train = ["SELECT Name FROM Artist", COUNT_ACCEPT, COUNT_ACCEPT.replace("SELECT", "select")]
    test = [COUNT_ACCEPT, "SELECT 2", "SELECT Name FROM Artist"]
    assert r.baseline("sql_em", data(test, train)) == pytest.approx(1 / 3)
    assert r.baseline("exec_acc", data(test, train, databases=[str(music_db)] * 3)) == pytest.approx(2 / 3)
    assert r.needs("exec_acc") == {"databases"}


def test_report_holds_metric_companions_baselines_gain_and_spread(music_db):
    refs = [COUNT_ACCEPT, "SELECT Name FROM Artist"]
    rep = r.report("exec_acc", [COUNT_ACCEPT, None], data(refs, [COUNT_ACCEPT], databases=[str(music_db)] * 2))
    assert rep["metric"] == "exec_acc" and rep["exec_acc"] == 0.5 and rep["exec_acc_baseline"] == 0.5
    assert rep["sql_em"] == 0.5 and rep["sql_em_baseline"] == 0.5
    assert rep["gain"] == 0.0 and rep["higher_is_better"] is True and rep["num_samples"] == 2
    caps = ["a dog runs on grass", "two cats sleep on a sofa", "a bird flies"]
    rep = r.report("bleu4", caps, data(caps, ["a bird flies"]))
    assert set(rep) >= {"bleu4", "bleu4_baseline", "cider", "cider_baseline", "rouge_l", "rouge_l_baseline",
                        "exact_match", "exact_match_baseline"}
    assert rep["bleu4"] == pytest.approx(100.0) and rep["exact_match_baseline"] == pytest.approx(1 / 3)
    assert rep["degenerate"] is False


def test_one_output_for_most_inputs_is_flagged_degenerate():
    refs = [f"a digit {i} on a photo" for i in range(10)]
    spread = r.output_spread(["a digit 3 on a photo"] * 9 + ["a digit 9 on a photo"], refs)
    assert spread == {"top_output_share": 0.9, "top_reference_share": 0.1, "degenerate": True}
    # yes/no answers: the outputs are as concentrated as the references, which is not degenerate
    assert not r.output_spread(["yes"] * 6 + ["no"] * 4, ["yes"] * 5 + ["no"] * 5)["degenerate"]
    # boxes compare as values
    assert r.output_spread([[1, 2, 3, 4]] * 3, [[0, 0, 1, 1], [0, 0, 2, 2], [1, 1, 3, 3]])["degenerate"]


def test_sample_scores_are_each_outputs_own_score(music_db):
    assert r.sample_scores("iou_acc", [[0, 0, 1, 1], [5, 5, 6, 6], None], data([[0, 0, 1, 1]] * 3)) == [1.0, 0.0, 0.0]
    assert r.sample_scores("wer", ["a b", "a x", "a"], data(["a b", "a b", " "])) == [0.0, 0.5, None]  # no words
    bleu = r.sample_scores("bleu4", ["the cat sat on the mat", "x"], data(["the cat sat on the mat", "the dog ran"]))
    assert bleu[0] == pytest.approx(100.0) and bleu[1] < 10
    caps = ["a dog runs on grass", "two cats sleep on a sofa", "a bird flies over the sea"]
    outs = [caps[0], "two cats on a sofa", "nothing"]
    per = r.sample_scores("cider", outs, data(caps))  # document frequencies from the whole test set
    assert sum(per) / 3 == pytest.approx(r.score("cider", outs, data(caps))) and per[0] > per[1] > per[2]
    refs = [COUNT_ACCEPT, "SELECT Name FROM Artist"]
    assert r.sample_scores("exec_acc", ["SELECT 2", None], data(refs, databases=[str(music_db)] * 2)) == [1.0, 0.0]
