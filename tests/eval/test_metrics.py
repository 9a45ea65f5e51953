import pytest

from ift.eval.metrics import exact_match, normalize_answer, rouge_l, score_predictions


def test_normalize_answer():
    assert normalize_answer("  The  Cat.\n") == "the cat"
    assert normalize_answer("a, b; c!") == "a b c"
    assert normalize_answer("An apple") == "an apple"  # articles are kept (SNI convention)
    assert normalize_answer("don't") == "dont"


def test_exact_match_case_punctuation_whitespace():
    assert exact_match("The cat.", ["the cat"]) == 1.0
    assert exact_match("the   cat", ["The cat"]) == 1.0
    assert exact_match("a cat", ["the cat"]) == 0.0  # articles matter
    assert exact_match("the cat", "the cat") == 1.0  # a single reference string is accepted


def test_exact_match_max_over_references():
    assert exact_match("dog", ["cat", "Dog!"]) == 1.0
    assert exact_match("dog", ["cat", "bird"]) == 0.0


def test_rouge_l_partial_overlap_by_hand():
    # LCS("a b c d", "a c d e") = "a c d" = 3 tokens; P = 3/4, R = 3/4, F = 0.75
    assert rouge_l("a b c d", ["a c d e"]) == pytest.approx(0.75)
    # P = 2/2, R = 2/4 -> F = 2PR/(P+R) = 2/3
    assert rouge_l("red fox", ["the red quick fox"]) == pytest.approx(2 / 3)


def test_rouge_l_stemming_and_max_over_references():
    assert rouge_l("running dogs", ["run dog"]) == pytest.approx(1.0)
    # max over references: 0.75 from the second reference beats 0 from the first
    assert rouge_l("a b c d", ["x y", "a c d e"]) == pytest.approx(0.75)
    assert rouge_l("The Cat.", ["the cat"]) == pytest.approx(1.0)


def test_empty_prediction_and_no_references():
    assert rouge_l("", ["the cat"]) == 0.0
    assert exact_match("", ["the cat"]) == 0.0
    assert exact_match("", [""]) == 1.0
    with pytest.raises(ValueError):
        rouge_l("x", [])


def test_score_predictions():
    preds = ["The cat.", "a b c d", ""]
    refs = [["the cat"], ["x", "a c d e"], ["something"]]
    s = score_predictions(preds, refs)
    assert s["n"] == 3
    assert s["exact_match"] == pytest.approx(100 / 3)
    assert s["rougeL"] == pytest.approx(100 * (1.0 + 0.75 + 0.0) / 3)
    assert s["per_example"]["exact_match"] == [1.0, 0.0, 0.0]
    assert s["per_example"]["rougeL"] == pytest.approx([1.0, 0.75, 0.0])
    with pytest.raises(ValueError):
        score_predictions(["a"], [])
