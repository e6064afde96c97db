"""The report's tables, from hand-made results dictionaries."""

import copy

from codecl.report import degeneration_table


def run(status: str, distinct: list[list[float]], loop: list[list[float]]) -> dict:
    return {"status": status, "degeneration": {"distinct": distinct, "loop": loop}}


RESULTS = {
    "tasks": [{"name": "python"}, {"name": "javascript"}],
    "evaluation": {"examples_per_task": {"python": 4, "javascript": 4},
                   "degeneration": {"distinct": "DISTINCT RULE", "loop": "LOOP RULE"}},
    "methods": {
        "full-ft": {"runs": [
            run("ok", [[25, 50], [50, 50], [100, 75]], [[75, 0], [25, 0], [0, 0]]),
            run("ok", [[25, 50], [100, 50], [50, 25]], [[75, 0], [0, 0], [50, 25]]),
        ]},
        "broken": {"runs": [run("failed", [[25, 50]], [[75, 0]])]},
    },
}


def test_one_row_per_trained_task_with_the_mean_over_finished_seeds():
    lines = degeneration_table(RESULTS)
    assert "DISTINCT RULE" in "\n".join(lines) and "LOOP RULE" in "\n".join(lines)
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| method |")]
    assert rows == [
        "| base model (all methods) | nothing | 25.0 | 75.0 | 50.0 | 0.0 |",
        "| full-ft | python | 75.0 | 12.5 | 50.0 | 0.0 |",  # (50 + 100) / 2, (25 + 0) / 2
        "| full-ft | javascript | 75.0 | 25.0 | 50.0 | 12.5 |",
        "| broken | failed | — | — | — | — |",
    ]


def test_results_from_before_the_diagnostic_have_no_table():
    old = {**RESULTS, "methods": {"full-ft": {"runs": [{"status": "ok"}]}}}
    assert degeneration_table(old) == []


def test_the_corpus_line_names_its_checksum_sources_and_departures_from_the_pins():
    from codecl.report import corpus_identity

    corpus = {
        "miner_version": "4", "python": "3.11.7", "corpus_sha256": "e9d92e89c8e61b42" + "0" * 48,
        "counts": {"python": {"train": 23728}, "javascript": {"train": 10656}},
        "sources": [{"language": "python", "source": "cpython-stdlib"}, {"language": "python", "source": "sympy@1.14.0"},
                    {"language": "javascript", "source": "lodash@4.17.21"}],
        "differs_from_pins": [],
    }
    assert corpus_identity(corpus) == (
        "mined (miner v4, Python 3.11.7), sha256 `e9d92e89c8e61b42…`; python 2 sources, 23,728 train functions; "
        "javascript 1 source, 10,656 train functions (each source's version in results.json); "
        "every source at its pinned version"
    )
    corpus["differs_from_pins"] = ["sympy@1.14.0: pinned 1.14.0, mined 1.13.0"]
    assert corpus_identity(corpus).endswith("off its pins: sympy@1.14.0: pinned 1.14.0, mined 1.13.0")


def summary(bleu: float) -> dict:
    cell = {"mean": bleu, "ci95": None, "n": 1}
    return {"bleu": {"average": cell, "forgetting": cell, "backward_transfer": cell, "forward_transfer": cell}}


def routed_run(order: list[str], confusion: list[list[int]], accuracy: list[float]) -> dict:
    return {"status": "ok", "seed": 0, "order": order, "error": None, "train": [{"seconds": 1.0}],
            "parameters": {"trainable_per_task": [10, 10], "added": 20},
            "task_agnostic": {"prototype": {"confusion": confusion, "router_accuracy": [[None, None], [None, None], accuracy]}}}


ROUTED = {
    "tasks": [{"name": "python"}, {"name": "javascript"}],
    "base_model": {"parameters": 1000},
    "evaluation": {"examples_per_task": {"python": 4, "javascript": 4},
                   "routers": {"prototype": {"description": "PROTOTYPE RULE"}}},
    "methods": {
        "full-ft": {"status": "ok", "summary": summary(5.0), "runs": [
            {"status": "ok", "seed": 0, "error": None, "train": [{"seconds": 2.0}],
             "parameters": {"trainable_per_task": [1000, 1000], "added": 0}}]},
        "lora": {"status": "ok", "summary": summary(9.0), "summary_task_agnostic": {"prototype": summary(3.0)}, "runs": [
            # Two orders: each run's confusion is in its own order; the table sums them in stream order.
            routed_run(["python", "javascript"], [[3, 1], [0, 4]], [75.0, 100.0]),
            routed_run(["javascript", "python"], [[2, 2], [1, 3]], [50.0, 75.0]),
        ]},
    },
}


def test_a_method_with_per_task_parameters_ranks_once_with_its_task_id_and_once_per_router():
    from codecl.report import ranking_table

    rows = [line.split(" | ") for line in ranking_table(ROUTED).splitlines()[2:]]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("lora", "given (oracle)", "9.00"), ("full-ft", "not needed", "5.00"), ("lora", "routed: prototype", "3.00"),
    ]
    # Router accuracy: the mean over tasks and runs of the final row, (75 + 100 + 50 + 75) / 4.
    assert rows[2][9] == "75.0%" and rows[0][9] == "—"


def test_router_confusion_is_summed_over_runs_in_stream_order():
    from codecl.report import router_tables

    lines = router_tables(ROUTED)
    assert "- prototype: PROTOTYPE RULE" in lines
    table = [line for line in lines if line.startswith("| python |") or line.startswith("| javascript |")]
    # python row: run 1 [3, 1]; run 2 (javascript first) routed python's inputs 1 to javascript, 3 to python.
    assert table == ["| python | 6 | 2 | 75.0% |", "| javascript | 2 | 6 | 75.0% |"]


def test_degeneration_rows_follow_each_order_with_columns_in_stream_order():
    both = {**RESULTS, "methods": {"full-ft": {"runs": [
        {**run("ok", [[25, 50], [50, 50], [100, 75]], [[75, 0], [25, 0], [0, 0]]), "order": ["python", "javascript"]},
        # Trained javascript first: its columns are (javascript, python).
        {**run("ok", [[50, 25], [10, 20], [30, 40]], [[0, 75], [1, 2], [3, 4]]), "order": ["javascript", "python"]},
    ]}}}
    rows = [line for line in degeneration_table(both) if line.startswith("| full-ft")]
    assert rows == [
        "| full-ft | python (order python → javascript) | 50.0 | 25.0 | 50.0 | 0.0 |",
        "| full-ft | javascript (order python → javascript) | 100.0 | 0.0 | 75.0 | 0.0 |",
        "| full-ft | javascript (order javascript → python) | 20.0 | 2.0 | 10.0 | 1.0 |",
        "| full-ft | python (order javascript → python) | 40.0 | 4.0 | 30.0 | 3.0 |",
    ]


def test_a_router_that_routes_alike_for_every_method_gets_one_table():
    from codecl.report import router_tables

    twice = {**ROUTED, "methods": {**ROUTED["methods"], "layers": ROUTED["methods"]["lora"]}}
    headings = [line for line in router_tables(twice) if line.startswith("### ")]
    assert headings == ["### prototype router, every method, after the last task (inputs summed over 2 runs)"]
    different = {**ROUTED, "methods": {**ROUTED["methods"], "layers": copy.deepcopy(ROUTED["methods"]["lora"])}}
    different["methods"]["layers"]["runs"][0]["task_agnostic"]["prototype"]["confusion"] = [[4, 0], [0, 4]]
    headings = [line for line in router_tables(different) if line.startswith("### ")]
    assert [h.split(",")[1].strip() for h in headings] == ["lora", "layers"]
