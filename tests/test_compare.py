"""`codecl compare`: config differences, headline tables and Welch intervals, from hand-made results.json files."""

import copy
import json
import math
from pathlib import Path

import pytest
from scipy import stats

from codecl.compare import compare_page, compare_runs, config_differences, welch_difference
from codecl.config import ABSENT
from codecl.errors import UserError


def summary(bleu, forgetting, bwt, codebleu, humaneval=None) -> dict:
    """A summary with the headline numbers, each given as (mean, ci95, n)."""
    def cell(mean, ci95, n):
        return {"mean": mean, "ci95": ci95, "n": n}
    numbers = {"bleu": {"average": cell(*bleu), "forgetting": cell(*forgetting), "backward_transfer": cell(*bwt)},
               "codebleu": {"average": cell(*codebleu)}}
    if humaneval:
        numbers["pass@1 humaneval-python"] = {"average": cell(*humaneval)}
    return numbers


def seed_run(seed: int, routed: bool) -> dict:
    run = {"status": "ok", "seed": seed, "train": [{"seconds": 1.0}], "parameters": {"trainable_per_task": [10], "added": 0}}
    if routed:
        run |= {"per_task_parameters": True, "task_agnostic": {"prototype": {"router_accuracy": [[None, None], [90.0, 70.0]]}}}
    return run


def make_results() -> dict:
    """Two methods, three seeds; lora has per-task parameters and one router, so three ranking rows."""
    return {
        "created": "2026-11-28T12:00:00+00:00",
        "git": {"commit": "0123456789abcdef", "dirty": False},
        "seeds": [0, 1, 2],
        "config": {
            "name": "handmade", "seeds": [0, 1, 2],
            "methods": {"full-ft": {"method": "full-ft", "learning_rate": 0.002},
                        "lora": {"method": "lora", "r": 8, "per_task": True}},
            "train": {"epochs": 3.0, "batch_size": 16, "checkpoint_every": 0},
            "run": {"executor": "local", "threads": 1},
        },
        "methods": {
            "full-ft": {"status": "ok", "runs": [seed_run(s, False) for s in range(3)],
                        "summary": summary((10.0, 2.0, 3), (4.0, 1.0, 3), (-4.0, 1.0, 3), (30.0, 3.0, 3), (5.0, 2.5, 3))},
            "lora": {"status": "ok", "runs": [seed_run(s, True) for s in range(3)],
                     "summary": summary((14.0, 1.5, 3), (0.0, 0.0, 3), (0.0, 0.0, 3), (35.0, 2.0, 3), (7.5, 2.5, 3)),
                     # HumanEval is scored with the task id only: a routed pass@1 must not be shown.
                     "summary_task_agnostic": {"prototype": summary((12.0, 1.0, 3), (1.0, 0.5, 3), (-1.0, 0.5, 3),
                                                                    (33.0, 2.0, 3), (99.0, 1.0, 3))}},
        },
    }


HEADLINE_NUMBERS = 3 * 4 + 2  # 3 rows × (BLEU average, forgetting, BWT, CodeBLEU), pass@1 on the 2 unrouted rows


def write_run(root: Path, name: str, results: dict) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """Each ### table of the Markdown, as rows keyed by column header."""
    found: dict[str, list[dict[str, str]]] = {}
    title, header = None, None
    for line in markdown.splitlines():
        if line.startswith("### "):
            title, header = line[4:], None
        elif line.startswith("| ") and title is not None:
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            if header is None:
                header = cells
            else:
                found.setdefault(title, []).append(dict(zip(header, cells)))
    return found


def bullets_after(markdown: str, line: str) -> list[str]:
    lines = markdown.splitlines()
    start = lines.index(line) + 2
    end = lines.index("", start)
    return lines[start:end]


def test_a_run_against_itself_differs_nowhere(tmp_path):
    folder = write_run(tmp_path, "a", make_results())
    markdown = compare_runs([folder, folder])
    assert "B vs A: identical configs" in markdown
    assert f"B vs A: 0 of {HEADLINE_NUMBERS} headline numbers differ\n" in markdown
    differences = [row["B − A (95% CI)"] for rows in tables(markdown).values() for row in rows]
    assert len(differences) == HEADLINE_NUMBERS
    for cell in differences:
        mean, low, high = (float(x) for x in cell.replace("[", "").replace("]", "").replace(",", "").split())
        assert mean == 0 and low == -high
    # full-ft's BLEU: equal variances and n = 3 give df = 4, so the half-width is t(4)·√2·2.0 / t(2) = 1.83.
    full_ft = next(row for row in tables(markdown)["average BLEU"] if row["method"] == "full-ft")
    assert full_ft == {"method": "full-ft", "task id": "not needed", "A": "10.00 ± 2.00", "B": "10.00 ± 2.00",
                       "B − A (95% CI)": "0.00 [-1.83, 1.83]"}


def test_rows_follow_the_first_run_and_routed_rows_have_no_humaneval(tmp_path):
    folder = write_run(tmp_path, "a", make_results())
    found = tables(compare_runs([folder, folder]))
    assert [(row["method"], row["task id"]) for row in found["average BLEU"]] == [
        ("full-ft", "not needed"), ("lora", "given (oracle)"), ("lora", "routed: prototype")]
    assert [row["A"] for row in found["average pass@1 humaneval-python"]] == ["5.00 ± 2.50", "7.50 ± 2.50"]


def test_every_changed_config_key_is_named_with_both_values(tmp_path):
    changed = make_results()
    changed["config"]["train"]["epochs"] = 5.0
    changed["config"]["methods"]["lora"]["r"] = 16
    markdown = compare_runs([write_run(tmp_path, "a", make_results()), write_run(tmp_path, "b", changed)])
    assert bullets_after(markdown, "B vs A: 2 keys differ") == ["- methods.lora.r: 8 → 16", "- train.epochs: 3.0 → 5.0"]
    assert f"B vs A: 0 of {HEADLINE_NUMBERS} headline numbers differ" in markdown  # the summaries are unchanged


def test_keys_that_do_not_change_results_and_a_method_in_one_config_only(tmp_path):
    changed = make_results()
    changed["config"]["run"] |= {"executor": "ray", "threads": 4}
    changed["config"]["tracking"] = ["mlflow"]
    changed["config"]["methods"]["olora"] = {"method": "olora", "r": 8}
    markdown = compare_runs([write_run(tmp_path, "a", make_results()), write_run(tmp_path, "b", changed)])
    # run.threads is not one of RESUMABLE_KEYS (threads can change floating-point sums), so it is not marked.
    assert bullets_after(markdown, "B vs A: 4 keys differ (2 of which do not change results)") == [
        '- methods.olora: (absent) → {"method": "olora", "r": 8}',
        '- run.executor: "local" → "ray" (does not change results)',
        "- run.threads: 1 → 4",
        '- tracking: (absent) → ["mlflow"] (does not change results)',
    ]


def test_runs_that_differ_only_in_how_they_ran(tmp_path):
    changed = make_results()
    changed["config"]["tracking"] = []  # a run written before the key existed has none
    markdown = compare_runs([write_run(tmp_path, "a", make_results()), write_run(tmp_path, "b", changed)])
    assert "B vs A: 1 key differs, which does not change results\n" in markdown
    changed["config"]["run"]["executor"] = "inline"
    markdown = compare_runs([write_run(tmp_path, "a2", make_results()), write_run(tmp_path, "b2", changed)])
    assert "B vs A: 2 keys differ, none of which changes results\n" in markdown


def test_config_differences_lists_every_key_in_the_first_configs_order():
    ours = {"a": {"b": 1, "c": [1, 2]}, "d": None, "gone": 1}
    theirs = {"new": True, "a": {"b": 2, "c": [1, 2, 3]}, "d": None}
    assert config_differences(ours, theirs) == [
        ("a.b", 1, 2), ("a.c", [1, 2], [1, 2, 3]), ("gone", 1, ABSENT), ("new", ABSENT, True)]
    assert config_differences(ours, copy.deepcopy(ours)) == []


def test_welch_interval_from_the_two_summaries(tmp_path):
    later = make_results()
    later["methods"]["full-ft"]["summary"]["bleu"]["average"] = {"mean": 12.0, "ci95": 3.0, "n": 3}
    markdown = compare_runs([write_run(tmp_path, "a", make_results()), write_run(tmp_path, "b", later)])
    # Written out from the formula: sd = ci95·√n / t(0.975, n−1); se² = sd_A²/n_A + sd_B²/n_B;
    # df = se⁴ / ((sd_A²/n_A)²/(n_A−1) + (sd_B²/n_B)²/(n_B−1)).
    t2 = stats.t.ppf(0.975, 2)
    sd_a, sd_b = 2.0 * math.sqrt(3) / t2, 3.0 * math.sqrt(3) / t2
    se2 = sd_a ** 2 / 3 + sd_b ** 2 / 3
    df = se2 ** 2 / ((sd_a ** 2 / 3) ** 2 / 2 + (sd_b ** 2 / 3) ** 2 / 2)
    half_width = stats.t.ppf(0.975, df) * math.sqrt(se2)
    assert 3.4 < df < 3.6 and 2.4 < half_width < 2.6
    full_ft = next(row for row in tables(markdown)["average BLEU"] if row["method"] == "full-ft")
    assert full_ft["B"] == "12.00 ± 3.00"
    assert full_ft["B − A (95% CI)"] == f"+2.00 [{2 - half_width:.2f}, {2 + half_width:.2f}]"
    assert f"B vs A: 1 of {HEADLINE_NUMBERS} headline numbers differ" in markdown


def test_no_interval_with_one_seed_and_a_point_interval_without_spread():
    assert welch_difference((10.0, 2.0, 3), (12.0, None, 1)) == (2.0, None)
    assert welch_difference((10.0, 0.0, 3), (12.5, 0.0, 2)) == (2.5, 0.0)


def test_a_method_in_one_run_only_shows_dashes(tmp_path):
    later = make_results()
    del later["methods"]["lora"]
    later["methods"]["ffn"] = copy.deepcopy(make_results()["methods"]["full-ft"])
    markdown = compare_runs([write_run(tmp_path, "a", make_results()), write_run(tmp_path, "b", later)])
    rows = tables(markdown)["average BLEU"]
    assert [(row["method"], row["A"], row["B"], row["B − A (95% CI)"]) for row in rows] == [
        ("full-ft", "10.00 ± 2.00", "10.00 ± 2.00", "0.00 [-1.83, 1.83]"),
        ("lora", "14.00 ± 1.50", "—", "—"),
        ("lora", "12.00 ± 1.00", "—", "—"),
        ("ffn", "—", "10.00 ± 2.00", "—"),
    ]
    assert "B vs A: 0 of 5 headline numbers differ (14 more in only one of the two)" in markdown


def test_bad_run_folders_name_the_file(tmp_path):
    good = write_run(tmp_path, "good", make_results())
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text('{"config": ')
    no_methods = make_results()
    del no_methods["methods"]
    no_mean = make_results()
    del no_mean["methods"]["lora"]["summary_task_agnostic"]["prototype"]["bleu"]["average"]["mean"]
    cases = [(empty, "no results.json"), (broken, "not valid JSON"),
             (write_run(tmp_path, "no-methods", no_methods), "'methods'"),
             (write_run(tmp_path, "no-mean", no_mean), "'mean'")]
    for folder, expected in cases:
        for render in (compare_runs, compare_page):
            with pytest.raises(UserError) as raised:
                render([good, folder])
            message = str(raised.value)
            assert str(folder) in message and expected in message and "\n" not in message
    with pytest.raises(UserError, match="expected 2 to 26"):
        compare_runs([good])


def test_page_is_self_contained_and_shows_the_same_numbers(tmp_path):
    later = make_results()
    later["methods"]["lora"]["summary"]["codebleu"]["average"] = {"mean": 31.25, "ci95": 4.0, "n": 3}
    later["methods"]["<b>&"] = copy.deepcopy(later["methods"]["full-ft"])
    folders = [write_run(tmp_path, "a", make_results()), write_run(tmp_path, "b", later)]
    page = compare_page(folders)
    assert "http://" not in page and "https://" not in page and "<script src" not in page.lower()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "<b>&" not in page and "&lt;b&gt;&amp;" in page
    for method in ("full-ft", "lora"):
        assert f"<td>{method}</td>" in page
    differences = [row["B − A (95% CI)"] for rows in tables(compare_runs(folders)).values() for row in rows]
    assert "-3.75 [" in " ".join(differences)
    for cell in differences:
        assert f'<td class="number">{cell}</td>' in page


def test_the_command_prints_markdown_and_writes_the_page(tmp_path, capsys):
    from codecl.cli import main

    first, second = write_run(tmp_path, "a", make_results()), write_run(tmp_path, "b", make_results())
    assert main(["compare", str(first), str(second), "--html", str(tmp_path / "compare.html")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# codecl compare: A vs B") and "B vs A: identical configs" in out
    assert "<td class=\"number\">0.00 [-1.83, 1.83]</td>" in (tmp_path / "compare.html").read_text()
    assert main(["compare", str(first), str(tmp_path / "absent")]) == 2
    assert f"codecl: error: compare {tmp_path / 'absent'}: no results.json in it" in capsys.readouterr().err
