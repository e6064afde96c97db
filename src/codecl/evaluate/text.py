"""Text metrics for generated code: corpus BLEU, exact match, and per-example BLEU statistics.

BLEU is sacrebleu's with its defaults (13a tokenizer, exponential smoothing, mixed case, one
reference), so scores are comparable with any other paper that reports the same signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sacrebleu.metrics import BLEU

from codecl.errors import UserError

BLEU_MAX_NGRAM_ORDER = 4


@dataclass(frozen=True)
class BleuResult:
    """A corpus BLEU score in [0, 100] and the sacrebleu signature naming the variant used."""

    score: float
    signature: str


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> BleuResult:
    """Corpus-level BLEU with one reference per prediction (Papineni et al., 2002; Post, 2018).

    BLEU = BP * exp(1/4 * sum_{n=1..4} log p_n), BP = min(1, exp(1 - ref_len / hyp_len)), where
    p_n is the clipped n-gram precision summed over the whole corpus. Computed by
    ``sacrebleu.metrics.BLEU()`` with its defaults; ``signature`` is sacrebleu's own signature
    string, for example ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``.
    """
    check_pairs(predictions, references)
    bleu = BLEU()
    score = bleu.corpus_score(list(predictions), [list(references)])
    # The signature is only known after scoring: it records the number of references seen.
    return BleuResult(score=float(score.score), signature=str(bleu.get_signature()))


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction in [0, 1] of predictions equal to their reference after whitespace normalisation.

    Normalisation collapses every run of whitespace (spaces, tabs, newlines) to one space and strips
    both ends, so indentation and line breaks do not count; everything else must match exactly.
    """
    check_pairs(predictions, references)
    matches = sum(
        _normalise_whitespace(prediction) == _normalise_whitespace(reference)
        for prediction, reference in zip(predictions, references)
    )
    return matches / len(predictions)


def sentence_bleu_scores(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Per-example BLEU in [0, 100], as ``sacrebleu.sentence_bleu`` computes it.

    Uses effective order (n-gram orders longer than the prediction are left out) with exponential
    smoothing, the sacrebleu default for single sentences. The mean of these is not corpus BLEU;
    to resample corpus BLEU use ``bleu_statistics`` and ``corpus_bleu_from_statistics``.
    """
    check_pairs(predictions, references)
    bleu = BLEU(effective_order=True)
    return [
        float(bleu.sentence_score(prediction, [reference]).score)
        for prediction, reference in zip(predictions, references)
    ]


def bleu_statistics(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-example BLEU sufficient statistics, one row per example, for bootstrap resampling.

    Columns: matched n-grams for n = 1..4, candidate n-grams for n = 1..4, prediction length,
    reference length (all after 13a tokenisation). Corpus BLEU depends on the data only through the
    column sums, so summing any resample of rows and passing it to ``corpus_bleu_from_statistics``
    gives that resample's corpus BLEU (Koehn, 2004, "Statistical Significance Tests for MT").
    """
    check_pairs(predictions, references)
    # Effective order changes only how the score is combined, not the counts, and silences
    # sacrebleu's warning about sentence-level BLEU without it.
    bleu = BLEU(effective_order=True)
    rows = []
    for prediction, reference in zip(predictions, references):
        sentence = bleu.sentence_score(prediction, [reference])
        rows.append([*sentence.counts, *sentence.totals, sentence.sys_len, sentence.ref_len])
    return np.array(rows, dtype=np.int64)


def corpus_bleu_from_statistics(statistics: np.ndarray) -> float:
    """Corpus BLEU in [0, 100] from rows of ``bleu_statistics``; equals ``corpus_bleu`` on them."""
    totals = np.asarray(statistics, dtype=np.int64).sum(axis=0)
    order = BLEU_MAX_NGRAM_ORDER
    score = BLEU.compute_bleu(
        correct=[int(value) for value in totals[:order]],
        total=[int(value) for value in totals[order : 2 * order]],
        sys_len=int(totals[2 * order]),
        ref_len=int(totals[2 * order + 1]),
        smooth_method="exp",  # sacrebleu's corpus default, the one corpus_bleu uses
    )
    return float(score.score)


def _normalise_whitespace(text: str) -> str:
    return " ".join(text.split())


def check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    """One prediction per reference, and at least one: else a one-line `UserError`."""
    if len(predictions) != len(references):
        raise UserError(
            f"got {len(predictions)} predictions but {len(references)} references; "
            f"each prediction needs exactly one reference"
        )
    if len(predictions) == 0:
        raise UserError("no predictions to score; a metric over zero examples is undefined")
