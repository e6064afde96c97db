"""The second BLEU variant, edit similarity and CodeBLEU.

- CodeXGLUE's smoothed sentence-level BLEU-4, the metric of its code-to-text evaluator (inherited
  from the MOSES `bleu.py` script): text lower-cased and punctuation split off, n-gram precisions with
  +1 smoothing for n = 2..4 (Lin & Och 2004, "ORANGE"), brevity penalty
  min(0, 1 - (r + 1) / (c + 1)) in log space, one score per sentence, averaged, times 100.
- Edit similarity: 1 - Levenshtein(prediction, reference) / max(len), on characters, averaged.
- CodeBLEU (Ren et al. 2020, arXiv:2009.10297) through the `codebleu` package: n-gram, weighted
  n-gram, AST and data-flow match with weights 0.25 each.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

SMOOTHED_BLEU_VARIANT = "CodeXGLUE smoothed sentence BLEU-4 (lowercased, punctuation split, +1 smoothing on 2-4-grams, mean x 100)"
# CodeXGLUE's tokenisation: join lines, then put spaces around punctuation (but keep decimals and
# thousands separators inside numbers, and a minus after a digit apart).
_JOIN_LINES = [(re.compile(r"<skipped>"), ""), (re.compile(r"-\n"), ""), (re.compile(r"\n"), " ")]
_SPLIT_PUNCTUATION = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
]


def codexglue_tokens(text: str) -> list[str]:
    for pattern, replacement in _JOIN_LINES:
        text = pattern.sub(replacement, text)
    text = f" {text.replace('&quot;', chr(34)).lower()} "
    for pattern, replacement in _SPLIT_PUNCTUATION:
        text = pattern.sub(replacement, text)
    return text.split()


def _ngrams(tokens: list[str], max_order: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1))


def smoothed_sentence_bleu(prediction: str, reference: str, max_order: int = 4) -> float:
    """One sentence's smoothed BLEU in [0, 1]:
    exp(mean_n log((m_n + s_n) / (g_n + s_n)) + min(0, 1 - (r + 1) / (c + 1))), s_1 = 0, s_n = 1 for n > 1,
    where m_n are clipped n-gram matches, g_n the prediction's n-grams, r and c the token lengths."""
    hypothesis, ref = codexglue_tokens(prediction), codexglue_tokens(reference)
    reference_counts = _ngrams(ref, max_order)
    matches = [0] * max_order
    for ngram, count in _ngrams(hypothesis, max_order).items():
        matches[len(ngram) - 1] += min(count, reference_counts.get(ngram, 0))
    log_precision = 0.0
    for n in range(1, max_order + 1):
        guesses = max(len(hypothesis) - n + 1, 0)
        smoothing = 1 if n > 1 else 0
        # The tiny constant keeps log finite when a unigram precision is 0, as the original does.
        log_precision += math.log(matches[n - 1] + smoothing + 1e-300) - math.log(guesses + smoothing + 1e-300)
    brevity = min(0.0, 1.0 - (len(ref) + 1) / (len(hypothesis) + 1))
    return math.exp(log_precision / max_order + brevity)


def codexglue_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """CodeXGLUE code-to-text BLEU: mean smoothed sentence BLEU-4 over the examples, x 100."""
    return 100.0 * sum(map(smoothed_sentence_bleu, predictions, references)) / len(predictions)


def edit_similarity(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean of 1 - Levenshtein(p, r) / max(len(p), len(r)) over examples, in [0, 1] (1 if both empty).

    The distance is rapidfuzz's (C++): a pure-Python one took longer than decoding the examples."""
    from rapidfuzz.distance import Levenshtein

    scores = [1.0 - Levenshtein.distance(p, r) / max(len(p), len(r)) if (p or r) else 1.0 for p, r in zip(predictions, references)]
    return sum(scores) / len(scores)


def codebleu(predictions: Sequence[str], references: Sequence[str], language: str) -> tuple[float | None, str | None]:
    """CodeBLEU x 100, or (None, why) when the package cannot run: a missing metric, never a 0."""
    try:
        from codebleu import calc_codebleu

        result = calc_codebleu(list(references), list(predictions), lang=language)
    except Exception as error:  # the package raises ImportError, TypeError (grammar ABI), ValueError...
        return None, f"CodeBLEU unavailable: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return 100.0 * float(result["codebleu"]), None
