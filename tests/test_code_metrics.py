import math

import pytest

from codecl.evaluate.code_metrics import (
    codebleu, codexglue_bleu, codexglue_tokens, edit_similarity, smoothed_sentence_bleu,
)


def test_codexglue_tokenisation_lowercases_and_splits_punctuation():
    assert codexglue_tokens("Return x.Sum(a, B);\nDone 3.5") == ["return", "x", ".", "sum", "(", "a", ",", "b", ")", ";", "done", "3.5"]


def test_smoothed_bleu_by_hand():
    # 'a b c d' vs 'a b c e': p1 = 3/4, p2 = (2+1)/(3+1), p3 = (1+1)/(2+1), p4 = (0+1)/(1+1); equal lengths: no penalty.
    expected = (3 / 4 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert smoothed_sentence_bleu("a b c d", "a b c e") == pytest.approx(expected, rel=1e-12)
    assert codexglue_bleu(["a b c d", "x y"], ["a b c e", "x y"]) == pytest.approx(100 * (expected + 1.0) / 2)


def test_smoothed_bleu_brevity_penalty_by_hand():
    # 'a b' vs 'a b c d': p1 = 2/2, p2 = (1+1)/(1+1), p3 = (0+1)/(0+1), p4 = (0+1)/(0+1); BP = exp(1 - 5/3).
    assert smoothed_sentence_bleu("a b", "a b c d") == pytest.approx(math.exp(1 - 5 / 3), rel=1e-12)


def test_identical_is_one_and_disjoint_is_near_zero():
    assert smoothed_sentence_bleu("def f(x): return x", "def f(x): return x") == pytest.approx(1.0)
    assert smoothed_sentence_bleu("alpha beta", "gamma delta") < 1e-50


def reference_levenshtein(a: str, b: str) -> int:
    """The textbook dynamic programme, to check the library's distance against."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def test_edit_similarity_by_hand():
    # kitten -> sitting: two substitutions and one insertion, over the longer length 7.
    assert edit_similarity(["kitten", ""], ["sitting", ""]) == pytest.approx((1 - 3 / 7 + 1.0) / 2)
    assert edit_similarity(["abc"], ["xyz"]) == 0.0


def test_edit_similarity_matches_the_textbook_distance():
    import random

    rng = random.Random(0)
    pairs = [("".join(rng.choices("ab(){} \n", k=rng.randrange(30))), "".join(rng.choices("ab(){} \n", k=rng.randrange(30))))
             for _ in range(200)]
    for a, b in pairs:
        expected = 1.0 - reference_levenshtein(a, b) / max(len(a), len(b)) if (a or b) else 1.0
        assert edit_similarity([a], [b]) == pytest.approx(expected)


@pytest.mark.parametrize("language, code", [("python", "def f(a):\n    return a + 1"), ("javascript", "function f(a) { return a + 1; }")])
def test_codebleu_runs_for_both_languages(language, code):
    score, problem = codebleu([code], [code], language)
    assert problem is None and score == pytest.approx(100.0)
    lower, _ = codebleu(["x = 1"], [code], language)
    assert 0 <= lower < 100


def test_codebleu_that_cannot_run_is_missing_not_zero():
    score, problem = codebleu(["x"], ["y"], "klingon")
    assert score is None and problem.startswith("CodeBLEU unavailable")
