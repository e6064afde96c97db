"""Text metrics (BLEU, exact match) and syntax validity on small hand-checked examples."""

import math

import pytest
import sacrebleu
import tree_sitter_javascript
from tree_sitter import Language, Parser

from codecl.errors import UserError
from codecl.evaluate.syntax import is_valid_syntax, syntax_validity
from codecl.evaluate.text import (
    BleuResult,
    bleu_statistics,
    corpus_bleu,
    corpus_bleu_from_statistics,
    exact_match,
    sentence_bleu_scores,
)

PREDICTIONS = [
    "def add(a, b):\n    return a + b",
    "return self.items[index]",
    "function f(x) { return x * 2; }",
]
REFERENCES = [
    "def add(a, b):\n    return a + b + 0",
    "return self._items[index]",
    "function f(y) { return y * 2; }",
]


# --- BLEU ---------------------------------------------------------------------------------------


def test_corpus_bleu_matches_sacrebleu_and_names_its_variant():
    result = corpus_bleu(PREDICTIONS, REFERENCES)
    assert isinstance(result, BleuResult)
    assert result.score == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score)
    assert "nrefs:1" in result.signature
    assert "tok:13a" in result.signature
    assert "smooth:exp" in result.signature


def test_identical_prediction_and_reference_score_100():
    assert corpus_bleu(REFERENCES, REFERENCES).score == pytest.approx(100.0)


def test_bleu_brevity_penalty_by_hand():
    # Prediction 6 tokens, reference 7; every n-gram of the prediction is in the reference, so all
    # precisions are 1 and BLEU = 100 * BP = 100 * exp(1 - 7/6) = 100 * exp(-1/6) = 84.648...
    result = corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat today"])
    assert result.score == pytest.approx(100 * math.exp(-1 / 6))


def test_bleu_precisions_by_hand():
    # Same length (BP = 1); only the last token differs.
    # p1 = 4/5, p2 = 3/4, p3 = 2/3, p4 = 1/2; product = 24/120 = 1/5; BLEU = 100 * (1/5) ** (1/4)
    result = corpus_bleu(["a b c d e"], ["a b c d f"])
    assert result.score == pytest.approx(100 * 0.2**0.25)


def test_sentence_bleu_scores_match_sacrebleu_sentence_bleu():
    scores = sentence_bleu_scores(PREDICTIONS, REFERENCES)
    expected = [sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(PREDICTIONS, REFERENCES)]
    assert scores == pytest.approx(expected)


def test_bleu_statistics_reproduce_corpus_bleu_on_any_subset():
    statistics = bleu_statistics(PREDICTIONS, REFERENCES)
    assert statistics.shape == (3, 10)
    whole_corpus = corpus_bleu(PREDICTIONS, REFERENCES).score
    assert corpus_bleu_from_statistics(statistics) == pytest.approx(whole_corpus)
    # A bootstrap resample repeats rows; its BLEU is the corpus BLEU of the repeated examples.
    rows = [2, 0, 2]
    resampled = corpus_bleu([PREDICTIONS[i] for i in rows], [REFERENCES[i] for i in rows]).score
    assert corpus_bleu_from_statistics(statistics[rows]) == pytest.approx(resampled)


# --- exact match --------------------------------------------------------------------------------


def test_exact_match_ignores_whitespace_only():
    predictions = ["def f():\n    return 1", "x = 1", "X = 1", "a\t+\n b "]
    references = ["def f():  return 1  ", "x = 2", "x = 1", "a + b"]
    # Matches: 1st (whitespace differs), 4th (tabs, newlines, trailing space). Case still counts.
    assert exact_match(predictions, references) == 0.5


def test_text_metrics_reject_mismatched_or_empty_inputs():
    with pytest.raises(UserError):
        exact_match(["a"], ["a", "b"])
    with pytest.raises(UserError):
        corpus_bleu(["a"], [])
    with pytest.raises(UserError):
        exact_match([], [])


# --- syntax validity ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "def f(x):\n    return x + 1\n",
        # A method cut out of its class keeps its indentation.
        "    def size(self):\n        return len(self.items)\n",
        "x = '\\d'  # invalid escape: a warning, not an error",
    ],
)
def test_valid_python(code):
    assert is_valid_syntax(code, "python")


@pytest.mark.parametrize(
    "code",
    [
        "def f(x):\n    return (x +\n",
        "print 'hello'",  # Python 2
        "def f(:\n    pass",
        "x = 1\0",  # null byte
        "(" * 100_000,  # deeper than the parser allows
        "",
        "   \n\t",
    ],
)
def test_invalid_python(code):
    assert not is_valid_syntax(code, "python")


@pytest.mark.parametrize(
    "code",
    [
        "function add(a, b) {\n  return a + b;\n}",
        "var x = 1\nvar y = 2\n",  # no semicolons: automatic semicolon insertion
        "function (a) { return a; }",  # an anonymous function, as extracted from an assignment
        # Method definitions are not programs on their own; valid inside a class body.
        "foo(a) {\n  return a * 2;\n}",
        "async load(url) { return await fetch(url); }",
        "get name() { return this._name; }",
        "foo() { return 1; } // a trailing comment must not eat the wrapper's brace",
        "greet() { return 'héllo wörld'; }",  # multi-byte characters inside a wrapper
        # An object-literal property: valid inside an object literal.
        "load: function (url) {\n  return fetch(url);\n},",
    ],
)
def test_valid_javascript(code):
    assert is_valid_syntax(code, "javascript")


@pytest.mark.parametrize(
    "code",
    [
        "function f() {\n  return 1;\n",  # unclosed brace: a MISSING "}" node
        "function f( {",  # an ERROR node
        "function f() { return 1 +; }",  # a MISSING identifier after "+"
        "a b c",  # an ERROR node
        "foo(a) { return a; } }",  # extra closing brace, in and out of the wrappers
        # Unbalanced braces that would otherwise borrow the wrapper's braces.
        "} x = 1; {",
        "}, x = {",
        "",
        "  \n",
    ],
)
def test_invalid_javascript(code):
    assert not is_valid_syntax(code, "javascript")


@pytest.mark.parametrize(
    "language, code",
    [
        ("go", "func (s *Server) Start(port int) error {\n\treturn s.listen(port)\n}"),
        ("java", "@Override\npublic int add(int a, int b) {\n    return a + b;\n}"),
        ("java", "public Point(int x) { this.x = x; }"),  # a constructor: valid inside a class only
        ("php", "public static function add($a, $b)\n{\n    return $a + $b;\n}"),  # no `<?php`, as in CodeSearchNet
        ("ruby", "def add(a, b)\n  a + b\nend"),
    ],
)
def test_valid_code_in_the_other_codesearchnet_languages(language, code):
    assert is_valid_syntax(code, language)


@pytest.mark.parametrize(
    "language, code",
    [
        ("go", "func add(a int, b int) int {\n\treturn a +\n}"),
        ("go", "func add(a int) int {\n\treturn a\n"),  # unclosed brace
        ("java", "public int add(int a, int b) { return a + ; }"),
        ("java", "public int add(int a) { return a; } }"),  # extra brace, in and out of the wrapper
        ("php", "function add($a, $b) { return $a + $b }"),  # missing `;`
        ("php", "} $x = 1; {"),  # would borrow the wrapper's braces
        ("ruby", "def add(a, b)\n  a + b\n"),  # missing `end`
    ],
)
def test_invalid_code_in_the_other_codesearchnet_languages(language, code):
    assert not is_valid_syntax(code, language)


def _node_types_and_missing(code):
    parser = Parser(Language(tree_sitter_javascript.language()))
    cursor = parser.parse(code.encode()).walk()
    seen = []
    while True:
        seen.append((cursor.node.type, cursor.node.is_missing))
        if cursor.goto_first_child():
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return seen


def test_invalid_javascript_cases_cover_missing_and_error_nodes():
    # The cases above are only meaningful if tree-sitter reports them as we assume.
    # A MISSING node has has_error set but is not an ERROR node; the check must catch both kinds.
    for code in ["function f() {\n  return 1;\n", "function f() { return 1 +; }"]:
        nodes = _node_types_and_missing(code)
        assert any(missing for _, missing in nodes)
        assert not any(node_type == "ERROR" for node_type, _ in nodes)
    assert any(node_type == "ERROR" for node_type, _ in _node_types_and_missing("function f( {"))


def test_syntax_validity_is_the_valid_fraction():
    codes = ["function f() {}", "function f( {", "foo() {}", "}"]
    assert syntax_validity(codes, "javascript") == 0.5


def test_unknown_language_is_a_user_error():
    with pytest.raises(UserError):
        is_valid_syntax("fn main() {}", "rust")
    with pytest.raises(UserError):
        syntax_validity([], "python")
