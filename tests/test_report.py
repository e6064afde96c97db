"""The report's degeneration table, from a hand-made results dictionary."""

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
