"""Continual-learning metrics computed from the accuracy matrix.

The accuracy matrix ``R`` has shape (T+1, T) for a stream of T tasks:

- row 0 holds the score on every task before any training (the starting model, zero-shot);
- row i, for i = 1..T, holds the score on every task after training the i-th task.

So ``R[i][j]`` is the score on task j after training task i. In the formulas below tasks are
numbered 1..T, as in the papers: task j is trained at row j and its scores sit in column j, which
is index ``j - 1`` of a Python row. Row indices need no shift because row 0 is the untrained model.

A NaN (or None) entry marks an evaluation that failed. Any metric that reads such an entry is None:
a failed evaluation must never be averaged in as a score of 0.

`columns` restricts a metric to some tasks (those a metric applies to: CodeBLEU and syntax score code,
not a code -> docstring task's text); each formula then averages over those of its tasks that are in it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from codecl.errors import UserError

AccuracyMatrix = Sequence[Sequence[float | None]] | np.ndarray


Columns = Sequence[int] | None


def average_final_score(accuracy_matrix: AccuracyMatrix, columns: Columns = None) -> float | None:
    """Mean score over all tasks after training the last one.

    A = 1/T * sum_{j=1..T} R[T][j]   (ACC in Lopez-Paz & Ranzato, 2017, "Gradient Episodic Memory").
    """
    scores = _as_accuracy_matrix(accuracy_matrix)
    return _mean_or_none(np.array([scores[-1, c] for c in _columns(scores, columns)]))


def backward_transfer(accuracy_matrix: AccuracyMatrix, columns: Columns = None) -> float | None:
    """How training later tasks changed the score on earlier ones; negative means forgetting.

    BWT = 1/(T-1) * sum_{j=1..T-1} (R[T][j] - R[j][j])
    (Lopez-Paz & Ranzato, 2017, "Gradient Episodic Memory for Continual Learning", eq. 3).
    R[j][j] is the score on task j right after training it. None when T < 2, where no task has a
    later task to be affected by.
    """
    scores = _as_accuracy_matrix(accuracy_matrix)
    task_count = scores.shape[1]
    if task_count < 2:
        return None
    # Column c (0-based) is task c+1, trained at row c+1.
    earlier = [c for c in _columns(scores, columns) if c < task_count - 1]
    return _mean_or_none(np.array([scores[task_count, c] - scores[c + 1, c] for c in earlier]))


def forgetting(accuracy_matrix: AccuracyMatrix, columns: Columns = None) -> float | None:
    """Average drop from the best earlier score to the final score, over all but the last task.

    F = 1/(T-1) * sum_{j=1..T-1} ( max_{l in j..T-1} R[l][j] - R[T][j] )
    (Chaudhry et al., 2018, "Riemannian Walk for Incremental Learning", eq. 7, at k = T).

    For task j the max ranges over rows l = j, j+1, ..., T-1: the score right after training task j
    and after each later task except the last. Row 0 and the rows before task j was trained are
    excluded, so a task is never "forgotten" relative to a score it had before it was learned
    (Chaudhry et al. take l over 1..T-1, which includes those rows; their class-incremental
    setting scores unseen tasks near zero, so the two agree there). Row T is the final score being
    compared against. A negative value means the final score is above every earlier one. None when
    T < 2.
    """
    scores = _as_accuracy_matrix(accuracy_matrix)
    task_count = scores.shape[1]
    if task_count < 2:
        return None
    drops = []
    for column in (c for c in _columns(scores, columns) if c < task_count - 1):
        # Task column+1 is trained at row column+1; rows up to T-1 inclusive are "before the
        # last task".
        best_before_last = _max_or_nan(scores[column + 1 : task_count, column])
        drops.append(best_before_last - scores[task_count, column])
    return _mean_or_none(np.array(drops))


def forward_transfer(accuracy_matrix: AccuracyMatrix, columns: Columns = None) -> float | None:
    """How training earlier tasks changed the score on a task before it was trained.

    FWT = 1/(T-1) * sum_{j=2..T} (R[j-1][j] - R[0][j])
    (Lopez-Paz & Ranzato, 2017, "Gradient Episodic Memory for Continual Learning", eq. 4).
    R[j-1][j] is the score on task j just before training it. The baseline R[0][j] is the starting
    model's score, where the paper uses a randomly initialised model; for a pretrained code model
    the starting model is the natural reference. None when T < 2.
    """
    scores = _as_accuracy_matrix(accuracy_matrix)
    task_count = scores.shape[1]
    if task_count < 2:
        return None
    # Column c (0-based) is task c+1; the row just before training it is row c.
    later = [c for c in _columns(scores, columns) if c >= 1]
    return _mean_or_none(np.array([scores[c, c] - scores[0, c] for c in later]))


def summarize(accuracy_matrix: AccuracyMatrix, columns: Columns = None) -> dict[str, float | None]:
    """All the metrics of this module for one accuracy matrix, keyed by name."""
    scores = _as_accuracy_matrix(accuracy_matrix)
    return {
        "average": average_final_score(scores, columns),
        "backward_transfer": backward_transfer(scores, columns),
        "forgetting": forgetting(scores, columns),
        "forward_transfer": forward_transfer(scores, columns),
    }


def _columns(scores: np.ndarray, columns: Columns) -> list[int]:
    return list(range(scores.shape[1])) if columns is None else sorted(columns)


def _as_accuracy_matrix(accuracy_matrix: AccuracyMatrix) -> np.ndarray:
    """The matrix as a float array of shape (T+1, T), T >= 1, with None turned into NaN."""
    try:
        scores = np.array(accuracy_matrix, dtype=float)
    except (TypeError, ValueError) as error:
        # Ragged rows or non-numbers; numpy's own message is multi-line or obscure.
        raise UserError(
            f"accuracy matrix must be a rectangular table of numbers: {error}"
        ) from None
    if scores.ndim != 2 or scores.shape[1] < 1 or scores.shape[0] != scores.shape[1] + 1:
        raise UserError(
            f"accuracy matrix must have shape (T+1, T) with T >= 1 "
            f"(row 0 before training, one row per trained task); got shape {scores.shape}"
        )
    if np.isinf(scores).any():
        raise UserError("accuracy matrix contains an infinite score; scores must be finite or NaN")
    return scores


def _max_or_nan(values: np.ndarray) -> float:
    # np.max would return NaN too, but spelled out so the intent does not rest on numpy's NaN rules.
    return math.nan if np.isnan(values).any() else float(values.max())


def _mean_or_none(values: np.ndarray) -> float | None:
    if values.size == 0 or np.isnan(values).any():
        return None
    return float(values.mean())


def eval_only_summary(
    accuracy_matrix: AccuracyMatrix, trained_at: Sequence[int | None]
) -> list[dict[str, float | None]]:
    """Per column of a (T+1) x J matrix of tasks that are scored but never trained (HumanEval).

    ``trained_at[j]`` is the row (1..T) after which column j's skill was trained: the stream task in
    its language. average = R[T][j], the final score. Forgetting follows `forgetting`'s rule:
    F_j = max_{l in t_j..T-1} R[l][j] - R[T][j], with t_j = trained_at[j], so the rows before the
    skill was learned never count (otherwise learning it would read as negative forgetting). None
    when the skill is trained by the last task (t_j = T), by no task (None), or T < 2. Transfer needs
    a task's own training row, so eval-only tasks have none.
    """
    matrix = np.asarray(accuracy_matrix, dtype=float)
    last = matrix.shape[0] - 1
    if len(trained_at) != matrix.shape[1]:
        raise ValueError(f"trained_at has {len(trained_at)} entries for {matrix.shape[1]} columns")
    summaries = []
    for column, start in zip(matrix.T, trained_at):
        final = None if np.isnan(column[last]) else float(column[last])
        learned = column[start:last] if start is not None else column[:0]
        forgetting = None if final is None or learned.size == 0 or np.isnan(learned).any() else float(learned.max() - final)
        summaries.append({"average": final, "backward_transfer": None, "forgetting": forgetting, "forward_transfer": None})
    return summaries
