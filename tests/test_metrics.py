"""Continual-learning metrics on small accuracy matrices whose values are worked out by hand."""

import math

import numpy as np
import pytest

from codecl.errors import UserError
from codecl.metrics import (
    average_final_score,
    backward_transfer,
    eval_only_summary,
    forgetting,
    forward_transfer,
    summarize,
)

# Rows: before training, then after training tasks 1, 2, 3. Columns: tasks 1, 2, 3.
THREE_TASKS = [
    [10.0, 20.0, 30.0],  # row 0: the starting model
    [50.0, 25.0, 32.0],  # after task 1
    [58.0, 60.0, 38.0],  # after task 2: task 1 rose from 50 to 58
    [45.0, 55.0, 70.0],  # after task 3: task 1 fell to 45, task 2 to 55
]


def test_average_final_score_is_mean_of_last_row():
    # (45 + 55 + 70) / 3 = 170 / 3
    assert average_final_score(THREE_TASKS) == pytest.approx(170 / 3)


def test_backward_transfer_compares_final_row_with_score_just_after_learning():
    # Task 1: R[3][1] - R[1][1] = 45 - 50 = -5
    # Task 2: R[3][2] - R[2][2] = 55 - 60 = -5
    # BWT = (-5 + -5) / 2 = -5
    assert backward_transfer(THREE_TASKS) == pytest.approx(-5.0)


def test_forgetting_takes_max_over_rows_after_learning_and_before_last_task():
    # Task 1: max(R[1][1], R[2][1]) - R[3][1] = max(50, 58) - 45 = 13   (rose, then fell)
    # Task 2: max(R[2][2]) - R[3][2] = 60 - 55 = 5
    # F = (13 + 5) / 2 = 9; BWT is -5 because it measures from 50, not from the peak of 58.
    assert forgetting(THREE_TASKS) == pytest.approx(9.0)


def test_forward_transfer_compares_score_just_before_training_with_row_zero():
    # Task 2: R[1][2] - R[0][2] = 25 - 20 = 5
    # Task 3: R[2][3] - R[0][3] = 38 - 30 = 8
    # FWT = (5 + 8) / 2 = 6.5
    assert forward_transfer(THREE_TASKS) == pytest.approx(6.5)


def test_summarize_holds_every_metric_and_accepts_numpy():
    summary = summarize(np.array(THREE_TASKS))
    assert summary == pytest.approx(
        {"average": 170 / 3, "backward_transfer": -5.0, "forgetting": 9.0, "forward_transfer": 6.5}
    )
    assert all(type(value) is float for value in summary.values())


def test_frozen_adapters_neither_forget_nor_transfer():
    # Each task's column stays at its just-learned value for every later row, as with one frozen
    # adapter per task; before training, every column equals row 0.
    frozen = [
        [10.0, 20.0, 30.0],
        [50.0, 20.0, 30.0],
        [50.0, 60.0, 30.0],
        [50.0, 60.0, 70.0],
    ]
    assert forgetting(frozen) == 0.0
    assert backward_transfer(frozen) == 0.0
    assert forward_transfer(frozen) == 0.0
    assert average_final_score(frozen) == pytest.approx(60.0)  # (50 + 60 + 70) / 3


def test_forgetting_ignores_scores_from_before_the_task_was_learned():
    # Task 1 scored 90 before any training and 50 after it; 90 is not a score it "forgot".
    # Task 1: max(R[1][1], R[2][1]) - R[3][1] = max(50, 50) - 50 = 0
    # Task 2: max(R[2][2]) - R[3][2] = 60 - 60 = 0
    matrix = [
        [90.0, 95.0, 30.0],
        [50.0, 20.0, 30.0],
        [50.0, 60.0, 30.0],
        [50.0, 60.0, 70.0],
    ]
    assert forgetting(matrix) == 0.0


def test_forgetting_is_negative_when_the_final_score_beats_every_earlier_one():
    # T = 2. Task 1: max(R[1][1]) - R[2][1] = 40 - 46 = -6
    matrix = [[0.0, 0.0], [40.0, 1.0], [46.0, 50.0]]
    assert forgetting(matrix) == pytest.approx(-6.0)
    assert backward_transfer(matrix) == pytest.approx(6.0)  # 46 - 40
    assert forward_transfer(matrix) == pytest.approx(1.0)  # R[1][2] - R[0][2] = 1 - 0


def test_single_task_has_only_an_average():
    matrix = [[10.0], [50.0]]
    assert average_final_score(matrix) == 50.0
    assert backward_transfer(matrix) is None
    assert forgetting(matrix) is None
    assert forward_transfer(matrix) is None
    assert summarize(matrix) == {
        "average": 50.0,
        "backward_transfer": None,
        "forgetting": None,
        "forward_transfer": None,
    }


def test_failed_evaluation_makes_every_metric_that_reads_it_none():
    matrix = [row[:] for row in THREE_TASKS]
    matrix[3][0] = math.nan  # final score on task 1 failed
    summary = summarize(matrix)
    assert summary["average"] is None
    assert summary["backward_transfer"] is None
    assert summary["forgetting"] is None
    # FWT never reads the final row, so it is still computed: 6.5 as above.
    assert summary["forward_transfer"] == pytest.approx(6.5)


def test_failed_evaluation_inside_the_forgetting_max_is_not_skipped():
    matrix = [row[:] for row in THREE_TASKS]
    matrix[2][0] = None  # task 1 after task 2; only the forgetting max reads it
    assert forgetting(matrix) is None
    assert backward_transfer(matrix) == pytest.approx(-5.0)


def test_failed_evaluation_in_row_zero_affects_only_forward_transfer():
    matrix = [row[:] for row in THREE_TASKS]
    matrix[0][2] = math.nan
    assert forward_transfer(matrix) is None
    assert forgetting(matrix) == pytest.approx(9.0)
    # R[0][1] is read by no metric: the first task has no "before training" comparison.
    matrix = [row[:] for row in THREE_TASKS]
    matrix[0][0] = math.nan
    assert summarize(matrix) == pytest.approx(summarize(THREE_TASKS))


@pytest.mark.parametrize(
    "bad_matrix",
    [
        [[1.0, 2.0], [3.0, 4.0]],  # T x T: no row 0
        [[1.0], [2.0], [3.0]],  # T+2 rows
        [1.0, 2.0],  # one-dimensional
        [[]],  # T = 0
        [],
        [[1.0, 2.0], [3.0], [4.0, 5.0]],  # ragged
        [["a"], [1.0]],  # not a number
        [[1.0], [math.inf]],
    ],
)
def test_bad_matrix_raises_one_line_user_error(bad_matrix):
    with pytest.raises(UserError) as raised:
        summarize(bad_matrix)
    assert "\n" not in str(raised.value)


def test_eval_only_forgetting_counts_only_rows_after_the_skill_was_learned():
    # Python -> JavaScript, columns HumanEval-Python then HumanEval-JavaScript (pass@1, %).
    # Python was trained at row 1: forgetting = R[1][py] - R[2][py] = 10 - 8 = 2.
    # JavaScript is learned by the last task: no row between learning it and the end, so no
    # forgetting; counting row 1 would read the gain from learning it (2 -> 30) as forgetting -28.
    matrix = [[0.0, 0.0], [10.0, 2.0], [8.0, 30.0]]
    python, javascript = eval_only_summary(matrix, trained_at=[1, 2])
    assert python == {"average": 8.0, "backward_transfer": None, "forgetting": 2.0, "forward_transfer": None}
    assert javascript["average"] == 30.0 and javascript["forgetting"] is None


def test_eval_only_forgetting_over_a_longer_stream():
    # Three tasks; the column's skill is trained at row 2: max(R[2], R[3]) - R[4] = max(7, 9) - 4 = 5.
    # Row 1's 20 comes before the skill was learned and must not count (it would give 16).
    matrix = [[1.0], [20.0], [7.0], [9.0], [4.0]]
    assert eval_only_summary(matrix, trained_at=[2])[0]["forgetting"] == 5.0
    # A skill no stream task trains has no forgetting.
    assert eval_only_summary(matrix, trained_at=[None])[0]["forgetting"] is None


def test_a_metric_restricted_to_some_tasks_averages_over_those_alone():
    from codecl.metrics import summarize
    from codecl.results import summarize_run

    # Three tasks; the last is text, so its code metric is None in every row.
    matrix = [
        [10.0, 20.0, None],
        [30.0, 25.0, None],
        [20.0, 40.0, None],
        [15.0, 35.0, None],
    ]
    expected = {
        "average": (15 + 35) / 2,
        "backward_transfer": ((15 - 30) + (35 - 40)) / 2,  # R[3][j] - R[j+1][j], tasks 1 and 2
        "forgetting": ((30 - 15) + (40 - 35)) / 2,  # max over rows j+1..2 minus the final score
        "forward_transfer": 25 - 20,  # task 2 only: R[1][1] - R[0][1]; task 3 is not scored
    }
    assert summarize(matrix, [0, 1]) == expected
    assert summarize_run({"codebleu": matrix})["codebleu"] == expected
    # A column with a hole in some rows is a failed evaluation: it is kept, and voids what reads the hole.
    holed = [row[:2] + [5.0] for row in matrix]
    holed[2][2] = None  # R[2][2], what forward transfer reads for task 3
    summary = summarize_run({"codebleu": holed})["codebleu"]
    assert summary["forward_transfer"] is None and summary["average"] == (15 + 35 + 5) / 3
