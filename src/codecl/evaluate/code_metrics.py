"""The two CodeXGLUE BLEU variants, edit similarity and CodeBLEU.

- CodeXGLUE's code-to-text BLEU (`Code-Text/code-to-text/evaluator/evaluator.py`, the MOSES
  `bleu.py` it inherits): text stripped, lower-cased and split into word runs and single punctuation
  marks (`splitPuncts`), then the MOSES normalisation, which also splits off underscores; smoothed
  sentence BLEU-4 (Lin & Och 2004, "ORANGE": +1 on the 2- to 4-gram counts only), one score per
  example, averaged, x 100. The metric of docstring generation.
- CodeXGLUE's text-to-code BLEU (`Text-Code/text-to-code/evaluator/bleu.py`, Google's `compute_bleu`
  as its `_bleu` calls it): whitespace tokens, case kept, n-gram counts summed over the corpus, +1 on
  every order's counts, BP = exp(1 - r / c) when c <= r, x 100. The metric of code generation.
- Edit similarity: 1 - Levenshtein(prediction, reference) / max(len), on characters, averaged.
- CodeBLEU (Ren et al. 2020, arXiv:2009.10297) through the `codebleu` package: n-gram, weighted
  n-gram, AST and data-flow match with weights 0.25 each.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from typing import Sequence

from codecl.evaluate.text import check_pairs

SMOOTHED_BLEU_VARIANT = (
    "CodeXGLUE code-to-text smoothed sentence BLEU-4 (evaluator.py: lowercased, splitPuncts + MOSES "
    "normalisation, +1 smoothing on 2-4-grams, BP exp(min(0, 1 - (r+1)/(c+1))), mean over examples x 100)"
)
CODE_BLEU_VARIANT = (
    "CodeXGLUE text-to-code corpus BLEU-4 (evaluator/bleu.py: whitespace tokens, case kept, +1 smoothing "
    "on 1-4-grams, BP exp(1 - r/c) if c <= r, x 100, not rounded)"
)
# The evaluator splits `x.strip().lower()` into runs of word characters and single other non-space
# characters (splitPuncts), then MOSES-normalises the result. After that split the MOSES step can
# only still cut one thing: the underscore, a word character that its punctuation class lists. Its
# line joining, entity unescaping and number rules find nothing left to act on (no newlines remain;
# '&', ';', '.', ',' and '-' already stand alone). So the whole pipeline is: runs of word characters
# other than '_', and every other non-space character on its own. Checked against the evaluator on
# the pairs in tests/test_code_metrics.py and on random Unicode strings.
_CODEXGLUE_TOKEN = re.compile(r"[^\W_]+|\S")


def codexglue_tokens(text: str) -> list[str]:
    """Tokens as CodeXGLUE's code-to-text evaluator scores them: normalize(splitPuncts(text.strip().lower()))."""
    return _CODEXGLUE_TOKEN.findall(text.lower())


def _ngrams(tokens: list[str], max_order: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1))


def smoothed_sentence_bleu(prediction: str, reference: str, max_order: int = 4) -> float:
    """One sentence's smoothed BLEU in [0, 1], as CodeXGLUE's code-to-text evaluator computes it:
    exp(mean_n log((m_n + s_n) / (g_n + s_n)) + min(0, 1 - (r + 1) / (c + 1))), s_1 = 0, s_n = 1 for n > 1,
    where m_n are clipped n-gram matches, g_n the prediction's n-grams, r and c the token lengths.
    An empty prediction scores exp(-r): every log ratio is log(tiny / tiny) = 0, leaving the penalty."""
    hypothesis, ref = codexglue_tokens(prediction), codexglue_tokens(reference)
    reference_counts = _ngrams(ref, max_order)
    matches = [0] * max_order
    for ngram, count in _ngrams(hypothesis, max_order).items():
        matches[len(ngram) - 1] += min(count, reference_counts.get(ngram, 0))
    # The evaluator adds the smallest normal float to keep log finite at 0 matches; a zero unigram
    # precision then gives log(2.2e-308) / 4 (a score near 1e-77), so the constant must be this one.
    tiny = sys.float_info.min
    log_precision = 0.0
    for n in range(1, max_order + 1):
        guesses = max(len(hypothesis) - n + 1, 0)
        smoothing = 1 if n > 1 else 0
        log_precision += math.log(matches[n - 1] + smoothing + tiny) - math.log(guesses + smoothing + tiny)
    brevity = min(0.0, 1.0 - (len(ref) + 1) / (len(hypothesis) + 1))
    return math.exp(log_precision / max_order + brevity)


def codexglue_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """CodeXGLUE code-to-text BLEU: mean smoothed sentence BLEU-4 over the examples, x 100
    (the number `evaluator.py` prints, unrounded; its `bleuFromMaps(...)[0]`)."""
    check_pairs(predictions, references)
    # (sum x 100) / n in this order, as bleuFromMaps does, so the two agree to the last bit.
    return 100.0 * sum(map(smoothed_sentence_bleu, predictions, references)) / len(predictions)


def codexglue_code_bleu(predictions: Sequence[str], references: Sequence[str], max_order: int = 4) -> float:
    """CodeXGLUE text-to-code BLEU x 100: corpus BLEU-4 over whitespace tokens (`_bleu` in its
    evaluator's `bleu.py`, which calls `compute_bleu(..., smooth=True)`):
    100 * exp(sum_n 1/4 log((M_n + 1) / (G_n + 1))) * BP, BP = 1 if C > R else exp(1 - R / C),
    with M_n the clipped n-gram matches and G_n the prediction's n-grams summed over the corpus,
    C and R the corpus token lengths. Unrounded; the evaluator prints round(x, 2).
    Where the evaluator divides by zero we return the limit: 0 if every prediction is empty
    (C = 0), BP = 1 if every reference is empty (R = 0). Its `evaluator.py` reads the ground-truth
    file it has not yet flushed, losing the last few kB of references; this scores every pair."""
    check_pairs(predictions, references)
    matches, guesses = [0] * max_order, [0] * max_order
    prediction_length = reference_length = 0
    for prediction, reference in zip(predictions, references):
        hypothesis, ref = prediction.split(), reference.split()
        prediction_length += len(hypothesis)
        reference_length += len(ref)
        reference_counts = _ngrams(ref, max_order)
        for ngram, count in _ngrams(hypothesis, max_order).items():
            matches[len(ngram) - 1] += min(count, reference_counts.get(ngram, 0))
        for n in range(1, max_order + 1):
            guesses[n - 1] += max(len(hypothesis) - n + 1, 0)
    if prediction_length == 0:
        return 0.0
    # Same operations in the same order as compute_bleu, so the two agree to the last bit.
    log_mean = sum((1.0 / max_order) * math.log((m + 1.0) / (g + 1.0)) for m, g in zip(matches, guesses))
    ratio = prediction_length / reference_length if reference_length else math.inf
    brevity = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    return 100 * (math.exp(log_mean) * brevity)


def edit_similarity(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean of 1 - Levenshtein(p, r) / max(len(p), len(r)) over examples, in [0, 1] (1 if both empty).

    The distance is rapidfuzz's (C++): a pure-Python one took longer than decoding the examples."""
    from rapidfuzz.distance import Levenshtein

    scores = [1.0 - Levenshtein.distance(p, r) / max(len(p), len(r)) if (p or r) else 1.0 for p, r in zip(predictions, references)]
    return sum(scores) / len(scores)


def normalize_dataflow(dataflow: list[tuple]) -> list[tuple[str, str, list[str]]]:
    """The codebleu package's data-flow normalisation, made independent of PYTHONHASHSEED. The package
    numbers variables (`var_0`, `var_1`, ...) as they first appear among each data-flow's parents, whose
    order comes from a Python set of names when two flows merge: a set's order follows the process's
    string hashes, so the same predictions scored 7.043, 7.046 and 7.048 CodeBLEU under three seeds (one
    demo column). Here each flow's parents are taken in sorted order and compared as a sorted list."""
    numbers: dict[str, str] = {}
    normalized = []
    for var_name, _, relationship, parents, _ in dataflow:
        for name in [*sorted(parents), var_name]:
            numbers.setdefault(name, f"var_{len(numbers)}")
        normalized.append((numbers[var_name], relationship, sorted(numbers[name] for name in parents)))
    return normalized


def codebleu(predictions: Sequence[str], references: Sequence[str], language: str) -> tuple[float | None, str | None]:
    """CodeBLEU x 100, or (None, why) when the package cannot run: a missing metric, never a 0.

    The package scores all six CodeSearchNet languages, each through its tree-sitter grammar package
    (tree-sitter-go, -java, -php, -ruby beside Python's and JavaScript's); a language it lacks, or a
    grammar not installed, is the reason given. Its data-flow match is the package's but for
    `normalize_dataflow`."""
    try:
        from codebleu import calc_codebleu, dataflow_match

        dataflow_match.normalize_dataflow = normalize_dataflow
        result = calc_codebleu(list(references), list(predictions), lang=language)
    except Exception as error:  # the package raises ImportError, TypeError (grammar ABI), ValueError...
        return None, f"CodeBLEU unavailable: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return 100.0 * float(result["codebleu"]), None
