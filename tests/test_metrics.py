"""Metrics against hand-computed values, and the baselines they are reported next to."""

from __future__ import annotations

import math

import pytest

from ofasys import metrics as m


def test_bleu_of_identical_corpus_is_one():
    sents = ["the cat sat on the mat", "a b c d e"]
    assert m.bleu4(sents, sents) == pytest.approx(1.0)


def test_bleu_textbook_example():
    hyp, ref = "the cat sat on the mat", "the cat is on the mat"
    # p1 = 5/6 (the x2, cat, on, mat), p2 = 3/5, p3 = 1/4, p4 = 0/3; c = r = 6 so BP = 1.
    assert m.bleu([hyp], [ref], max_n=3) == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
    assert m.bleu([hyp], [ref], max_n=3) == pytest.approx(0.5)
    assert m.bleu4([hyp], [ref]) == 0.0  # no smoothing: a zero 4-gram precision zeroes BLEU-4


def test_bleu4_geometric_mean_of_precisions():
    # p1..p4 = 5/6, 4/5, 3/4, 2/3 -> product 1/3.
    assert m.bleu4(["a b c d e f"], ["a b c d e g"]) == pytest.approx((1 / 3) ** 0.25)


def test_bleu_brevity_penalty():
    assert m.bleu4(["a b c d"], ["a b c d e f g h"]) == pytest.approx(math.exp(1 - 8 / 4))
    # A long hypothesis is not penalised by BP, only by precision: p1..p4 = 4/8, 3/7, 2/6, 1/5.
    assert m.bleu4(["a b c d e f g h"], ["a b c d"]) == pytest.approx((4 / 8 * 3 / 7 * 2 / 6 * 1 / 5) ** 0.25)


def test_bleu_clips_counts_by_the_max_over_references():
    hyp = "the the the the the the the"
    refs = [["the cat is on the mat", "there is a cat on the mat"]]
    # 'the' occurs at most twice in one reference -> 2/7; closest ref length 7 -> BP 1.
    assert m.bleu([hyp], refs, max_n=1) == pytest.approx(2 / 7)


def test_bleu_is_corpus_level_not_a_mean_of_sentences():
    # Unigram matches (1 + 4) / (2 + 4) = 5/6, whereas the mean of sentence scores would be 0.75.
    assert m.bleu(["a b", "c d e f"], ["a x", "c d e f"], max_n=1) == pytest.approx(5 / 6)


def test_bleu_closest_reference_length_ties_go_to_the_shorter():
    # c = 5; refs of length 4 and 6 are equally close -> r = 4 -> no penalty (6 would give 0.82).
    assert m.bleu(["a b c d e"], [["a b c d", "a b c d e f"]], max_n=1) == pytest.approx(1.0)


def test_bleu_rejects_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        m.bleu4(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        m.bleu4([], [])


def test_exact_match_and_accuracy():
    assert m.exact_match(["three  five", "one", None], ["three five", "two", "one"]) == pytest.approx(1 / 3)
    assert m.exact_match(["a b"], [["x", "a b"]]) == 1.0
    assert m.accuracy(["one", "two", "two", None], ["one", "two", "three", "one"]) == 0.5


def test_box_iou_hand_values():
    assert m.box_iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert m.box_iou("0,0,2,2", (0, 0, 2, 2)) == 1.0
    assert m.box_iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    assert m.box_iou([0, 0, 4, 4], [1, 1, 3, 3]) == pytest.approx(4 / 16)
    with pytest.raises(ValueError, match="x0 <= x1"):
        m.box_iou([2, 0, 1, 1], [0, 0, 1, 1])


def test_iou_accuracy_threshold_is_inclusive_and_none_misses():
    gold = [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]]
    preds = [[0, 0, 2, 1], [0, 0, 3, 1], None]  # IoU 0.5, 1/3, no prediction
    assert m.iou_accuracy(preds, gold) == pytest.approx(1 / 3)
    assert m.iou_accuracy(preds, gold, threshold=0.3) == pytest.approx(2 / 3)


def test_token_accuracy_is_positional_and_corpus_level():
    assert m.token_accuracy(["a b x"], ["a b c d"]) == 0.5
    assert m.token_accuracy(["a b c d e f"], ["a b"]) == 1.0  # extra tokens are ignored
    # (2 + 0) correct of (4 + 1) gold tokens; not the mean (0.5 + 0) / 2.
    assert m.token_accuracy(["a b x", "y"], ["a b c d", "z"]) == pytest.approx(2 / 5)
    assert m.token_accuracy([[1, 2, 3]], [[1, 9, 3]]) == pytest.approx(2 / 3)


def test_majority_baseline():
    assert m.majority_baseline(["a", "a", "b"], ["a", "b", "b", "b"]) == 0.25
    # Ties are broken independently of order.
    assert m.majority_baseline(["b", "a"], ["a"]) == m.majority_baseline(["a", "b"], ["a"]) == 1.0


def test_most_common_caption_baseline():
    train = ["one", "two five", "two  five", "three"]
    test = ["two five", "one", "two five", "nine"]
    assert m.most_common_caption_baseline(train, test, metric="exact_match") == 0.5
    assert m.most_common_caption_baseline(train, test) == 0.0  # two-word captions have no 4-grams
    long_train = ["a b c d e", "a b c d e", "x"]
    assert m.most_common_caption_baseline(long_train, ["a b c d e", "a b c d f"]) == pytest.approx(
        m.bleu4(["a b c d e"] * 2, ["a b c d e", "a b c d f"]))


def test_mean_box_baseline():
    train = ["0,0,10,10", "10,10,20,20"]  # mean box 5,5,15,15
    assert m.mean_box_baseline(train, [[5, 5, 15, 15], [0, 0, 10, 10]]) == 0.5  # IoU 1 and 25/175
    assert m.mean_box_baseline(train, [[0, 0, 10, 10]], threshold=0.1) == 1.0


def test_copy_baseline_is_the_share_of_visible_tokens():
    assert m.copy_baseline(["a <mask> c <mask>"], ["a b c d"]) == 0.5
    # A span masked as one token shifts later positions: copying scores below 1 - mask_ratio.
    assert m.copy_baseline(["a <mask> d e"], ["a b c d e"]) == pytest.approx(1 / 5)


def test_wer_one_substitution_in_four_words():
    assert m.wer(["a b x d"], ["a b c d"]) == 0.25
    assert m.wer(["a c"], ["a b c"]) == pytest.approx(1 / 3)  # one deletion
    assert m.wer(["a  b "], ["a b"]) == 0.0  # whitespace is collapsed
    assert m.wer([["a", "b"]], [["a", "c"]]) == 0.5  # token lists are accepted


def test_wer_is_corpus_level_and_counts_insertions():
    # (1 substitution + 1 insertion) / (4 + 2) reference words, not the mean (0.25 + 0.5) / 2.
    assert m.wer(["a b x d", "e f g"], ["a b c d", "e f"]) == pytest.approx(2 / 6)
    # 1 substitution + 3 insertions against a 1-word reference: an error rate can exceed 1.
    assert m.wer(["a b c d"], ["x"]) == 4.0


def test_wer_none_hypothesis_deletes_every_reference_word():
    assert m.wer([None, "c d"], ["a b", "c d"]) == 0.5


def test_wer_rejects_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        m.wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        m.wer([], [])
    with pytest.raises(ValueError, match="references hold no tokens"):
        m.wer(["a"], ["  "])


def test_phone_error_rate_counts_whole_phone_tokens():
    ref = "θ ɹ iː s ɛ v ə n"
    assert m.phone_error_rate([ref], [ref]) == 0.0
    # "i" for "iː" is one substituted phone of 8, whatever the characters.
    assert m.phone_error_rate(["θ ɹ i s ɛ v ə n"], [ref]) == pytest.approx(1 / 8)
    # A missing phone and an extra one over two utterances of 8 + 3 phones.
    assert m.phone_error_rate(["θ ɹ iː s ɛ v n", "w ʌ n n"], [ref, "w ʌ n"]) == pytest.approx(2 / 11)


def test_most_common_transcript_baseline():
    train = ["one two", "one  two", "three four"]
    test = ["one two", "one five", "six seven"]
    # Always "one two": 0 + 1 + 2 substitutions over 6 reference words.
    assert m.most_common_transcript_baseline(train, test) == 0.5
    # Ties are broken independently of order.
    assert (m.most_common_transcript_baseline(["b b", "a a"], ["a a"])
            == m.most_common_transcript_baseline(["a a", "b b"], ["a a"]) == 0.0)
    phones = ["w ʌ n", "w ʌ n", "t uː"]
    # "w ʌ n" for "t uː": 2 substitutions + 1 insertion; over 2 + 3 reference phones.
    assert m.most_common_transcript_baseline(phones, ["t uː", "w ʌ n"], metric="per") == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="'wer' or 'per'"):
        m.most_common_transcript_baseline(train, test, metric="bleu4")


def test_evaluation_dispatches_error_rates_and_orients_their_gain():
    from ofasys import evaluation as ev

    assert ev.score("wer", [None, "a b"], ["a b", "a b"]) == 0.5  # an undecoded output deletes all
    assert ev.score("per", ["θ ɹ i"], ["θ ɹ iː"]) == pytest.approx(1 / 3)
    assert ev.baseline("wer", ["a b", "a b", "c"], ["a b", "a x"]) == 0.25
    assert ev.baseline("per", ["w ʌ n"], ["w ʌ n"]) == 0.0
    assert ev.LOWER_IS_BETTER == {"wer", "per"}
    # A WER of 0.2 against a baseline of 0.9 is a gain of 0.7; accuracy 0.2 against 0.9 is a loss.
    assert ev.gain("wer", 0.2, 0.9) == pytest.approx(0.7)
    assert ev.gain("per", 0.9, 0.2) == pytest.approx(-0.7)
    assert ev.gain("accuracy", 0.2, 0.9) == pytest.approx(-0.7)
    assert ev.gain("bleu4", 0.9, 0.2) == pytest.approx(0.7)


# ----- SQL ----------------------------------------------------------------------------------------

@pytest.fixture
def music_db(tmp_path):
    """A small real SQLite database: 3 artists, 4 albums."""
    import sqlite3

    path = tmp_path / "music.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE Artist (ArtistId INTEGER PRIMARY KEY, Name TEXT);
        CREATE TABLE Album (AlbumId INTEGER PRIMARY KEY, Title TEXT, ArtistId INTEGER);
        INSERT INTO Artist VALUES (1, 'AC/DC'), (2, 'Accept'), (3, 'Aerosmith');
        INSERT INTO Album VALUES (1, 'For Those About To Rock', 1), (2, 'Balls to the Wall', 2),
                                 (3, 'Restless and Wild', 2), (4, 'Let There Be Rock', 1);
    """)
    conn.commit()
    conn.close()
    return path


COUNT_ACCEPT = "SELECT COUNT(*) FROM Album WHERE ArtistId = (SELECT ArtistId FROM Artist WHERE Name = 'Accept')"


def test_normalise_sql_ignores_spacing_keyword_and_identifier_case_but_not_literals():
    a = m.normalise_sql(COUNT_ACCEPT)
    assert m.normalise_sql("select count(*)  from album where artistid=(select ARTISTID from ARTIST "
                           "where name = 'Accept');") == a
    assert m.normalise_sql(COUNT_ACCEPT.replace("'Accept'", "'accept'")) != a
    assert m.normalise_sql("SELECT  ((  broken") == "SELECT (( broken"  # unparsable: whitespace only
    assert m.normalise_sql(None) is None


def test_sql_exact_match_counts_normalised_equal_queries():
    golds = [COUNT_ACCEPT, "SELECT Name FROM Artist"]
    spaced = COUNT_ACCEPT.replace("SELECT", "select  ").replace("Album", "ALBUM")
    assert m.sql_exact_match([spaced, "SELECT Title FROM Album"], golds) == 0.5
    assert m.sql_exact_match([None, "select name from artist;"], golds) == 0.5


def test_execution_accuracy_compares_result_sets(music_db):
    db = [str(music_db)]
    assert m.execution_accuracy([COUNT_ACCEPT], [COUNT_ACCEPT], db) == 1.0
    # a different query with the same result is right; another result is wrong
    assert m.execution_accuracy(["SELECT 2"], [COUNT_ACCEPT], db) == 1.0
    assert m.execution_accuracy(["SELECT 2.0"], [COUNT_ACCEPT], db) == 1.0  # 2 == 2.0
    assert m.execution_accuracy(["SELECT 3"], [COUNT_ACCEPT], db) == 0.0
    # rows as a multiset unless the gold orders them
    gold = "SELECT Title FROM Album WHERE ArtistId = 1"
    assert m.execution_accuracy([gold + " ORDER BY AlbumId DESC"], [gold], db) == 1.0
    assert m.execution_accuracy([gold + " ORDER BY AlbumId DESC"], [gold + " ORDER BY AlbumId"], db) == 0.0
    assert m.execution_accuracy(["SELECT Title FROM Album WHERE ArtistId = 1 UNION ALL SELECT 'x'"], [gold], db) == 0.0
    assert m.execution_accuracy(["SELECT Title, AlbumId FROM Album WHERE ArtistId = 1"], [gold], db) == 0.0


@pytest.mark.parametrize("pred", [
    None, "", "SELEC COUNT(*) FROM Album", "SELECT COUNT(*) FROM Albums", "SELECT 2; DELETE FROM Album",
    "DELETE FROM Album", "DROP TABLE Album", "UPDATE Album SET Title = 'x'", "INSERT INTO Artist VALUES (9, 'x')",
    "CREATE TABLE t (x)", "ATTACH DATABASE 'other.sqlite' AS other", "PRAGMA writable_schema = ON",
    "SELECT 2\x00", "SELECT randomblob(1000000000)", "SELECT 99999999999999999999999 * 99999999999999999999",
])
def test_failing_or_writing_predictions_are_wrong_and_leave_the_database_alone(music_db, pred, tmp_path, monkeypatch):
    import hashlib

    monkeypatch.chdir(tmp_path)  # where an ATTACH would create its file
    before = hashlib.sha256(music_db.read_bytes()).hexdigest()
    assert m.execution_accuracy([pred], [COUNT_ACCEPT], [str(music_db)]) == 0.0
    assert hashlib.sha256(music_db.read_bytes()).hexdigest() == before
    assert not (tmp_path / "other.sqlite").exists()


def test_a_runaway_query_is_stopped_by_the_time_limit(music_db):
    import time

    endless = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT COUNT(*) FROM n"
    start = time.monotonic()
    assert m.execution_accuracy([endless], [COUNT_ACCEPT], [str(music_db)], seconds=0.3) == 0.0
    assert time.monotonic() - start < 5
    huge = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n"
    assert m.execution_accuracy([huge], [COUNT_ACCEPT], [str(music_db)], seconds=30) == 0.0  # > MAX_RESULT_ROWS


def test_gold_failures_and_missing_databases_are_errors(music_db, tmp_path):
    with pytest.raises(ValueError, match="the gold query 'SELECT nope FROM Album' fails"):
        m.execution_accuracy([COUNT_ACCEPT], ["SELECT nope FROM Album"], [str(music_db)])
    with pytest.raises(FileNotFoundError, match="database .*missing.sqlite not found"):
        m.execution_accuracy([COUNT_ACCEPT], [COUNT_ACCEPT], [str(tmp_path / "missing.sqlite")])
    with pytest.raises(ValueError, match="1 references but 2 databases"):
        m.execution_accuracy([COUNT_ACCEPT], [COUNT_ACCEPT], [str(music_db)] * 2)


def test_most_common_query_baseline(music_db):
    train = ["SELECT Name FROM Artist", COUNT_ACCEPT, COUNT_ACCEPT.replace("SELECT", "select")]
    test = [COUNT_ACCEPT, "SELECT 2", "SELECT Name FROM Artist"]
    assert m.most_common_query_baseline(train, test) == pytest.approx(1 / 3)
    dbs = [str(music_db)] * 3
    assert m.most_common_query_baseline(train, test, dbs, metric="exec_acc") == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="needs the test samples' databases"):
        m.most_common_query_baseline(train, test, metric="exec_acc")


def test_evaluation_dispatches_sql_metrics(music_db):
    from ofasys import evaluation as ev

    dbs = [str(music_db)] * 2
    preds, refs = ["SELECT 2", None], [COUNT_ACCEPT, "SELECT Name FROM Artist"]
    assert ev.score("exec_acc", preds, refs, dbs) == 0.5
    assert ev.score("sql_em", preds, refs) == 0.0
    with pytest.raises(ValueError, match="pass databases="):
        ev.score("exec_acc", preds, refs)
    assert ev.baseline("exec_acc", [COUNT_ACCEPT], refs, databases=dbs) == 0.5
    assert ev.baseline("sql_em", ["SELECT name FROM artist"], refs) == 0.5
    assert ev.companion_figures("exec_acc", [COUNT_ACCEPT, None], refs, [COUNT_ACCEPT]) == \
        {"sql_em": 0.5, "sql_em_baseline": 0.5}
    assert ev.companion_figures("bleu4", ["a"], ["a"], ["a"]) == {}
    assert "exec_acc" in ev.NEEDS_DATABASE and ev.gain("exec_acc", 0.7, 0.2) == pytest.approx(0.5)


def test_sql_metrics_are_selectable_in_params():
    from pipeline.params import METRICS

    assert {"exec_acc", "sql_em"} <= set(METRICS)
