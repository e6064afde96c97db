"""`codecl compare RUN_A RUN_B ...`: several runs' headline numbers side by side, the config keys that
differ, and each later run's difference from the first with a 95% Welch interval, as Markdown or HTML."""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy import stats

from codecl.config import ABSENT, RESUMABLE_KEYS
from codecl.errors import UserError
from codecl.report import scenario_rows
from codecl.results import read_results

Cell = tuple[float, float | None, int]  # mean, 95% t-interval half-width (None for one seed), n
Block = tuple  # ("h1" | "h2" | "h3" | "p", text), ("ul", items) or ("table", header, rows)

BLEU_HEADLINES = [("bleu", "average", "average BLEU"), ("bleu", "forgetting", "forgetting (BLEU)"),
                  ("bleu", "backward_transfer", "BWT (BLEU)"), ("codebleu", "average", "average CodeBLEU")]
FUNCTIONAL_PREFIX = "pass@1 "
STYLE = ("body{font-family:sans-serif;margin:2em;line-height:1.4}table{border-collapse:collapse;margin:.5em 0 1.5em}"
         "th,td{border:1px solid #bbb;padding:.2em .6em}th{background:#eee}td.number{text-align:right;white-space:nowrap}")


@dataclass
class Run:
    """One run folder's results, with its ranking rows' summaries keyed by (method, task id)."""

    letter: str
    folder: Path
    results: dict
    rows: dict[tuple[str, str], dict]


def _cell(summary: dict, metric: str, key: str) -> Cell | None:
    """(mean, ci95, n) of one summary number; None where the run has no such number."""
    cell = summary.get(metric, {}).get(key)
    if not cell or cell["mean"] is None:
        return None
    return float(cell["mean"]), cell.get("ci95"), int(cell["n"])


def _headlines(rows: dict[tuple[str, str], dict]) -> list[tuple[str, str, str]]:
    """(metric, key, title) of the headline numbers: BLEU's and CodeBLEU's, then each HumanEval pass@1 present."""
    functional = dict.fromkeys(m for summary in rows.values() for m in summary if m.startswith(FUNCTIONAL_PREFIX))
    return BLEU_HEADLINES + [(metric, "average", f"average {metric}") for metric in functional]


def load_run(folder: Path, letter: str) -> Run:
    """A run folder's results.json, checked for every field the comparison reads."""
    path = folder / "results.json"
    results = read_results(folder, "compare")
    try:
        results["config"]["name"], results["created"], results["seeds"]
        rows = {(name, task_id): summary for name, task_id, summary, _ in scenario_rows(results)}
        for metric, key, _ in _headlines(rows):
            for summary in rows.values():
                _cell(summary, metric, key)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as error:
        raise UserError(f"compare {path}: missing or malformed field {error} "
                        "(expected results.json as `codecl run` writes it)") from None
    return Run(letter, folder, results, rows)


def config_differences(ours: Any, theirs: Any, where: str = "") -> list[tuple[str, Any, Any]]:
    """Every dotted key where two config dumps differ, with both values (ABSENT where one lacks the key), in
    `ours`'s order then `theirs`'s new keys. Unlike `first_difference`, keys that do not change results count."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        keys = [*ours, *(key for key in theirs if key not in ours)]
        return [difference for key in keys for difference in
                config_differences(ours.get(key, ABSENT), theirs.get(key, ABSENT), f"{where}.{key}".lstrip("."))]
    return [] if ours == theirs else [(where, ours, theirs)]


def changes_results(key: str) -> bool:
    """False for keys that say how a run goes, not what it computes (`RESUMABLE_KEYS` and keys under them)."""
    return not any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)


def _value(value: Any) -> str:
    return "(absent)" if value is ABSENT else json.dumps(value, ensure_ascii=False)


def welch_difference(first: Cell, later: Cell) -> tuple[float, float | None]:
    """later − first and the half-width of its 95% Welch interval, from the two summaries alone: each
    sd/√n is ci95 / t(0.975, n−1). No interval (None) where either side has one seed or no ci95."""
    difference = later[0] - first[0]
    if any(n < 2 or ci95 is None for _, ci95, n in (first, later)):
        return difference, None
    variances = [((ci95 / stats.t.ppf(0.975, n - 1)) ** 2, n) for _, ci95, n in (first, later)]  # (sd²/n, n)
    squared_error = sum(v for v, _ in variances)
    if squared_error == 0:
        return difference, 0.0
    df = squared_error ** 2 / sum(v ** 2 / (n - 1) for v, n in variances)  # Welch–Satterthwaite
    return difference, float(stats.t.ppf(0.975, df) * math.sqrt(squared_error))


def _number(value: float, sign: str = "") -> str:
    """Two decimals, as in report.md; a value that rounds to zero reads 0.00 whatever its sign."""
    text = f"{value:{sign}.2f}"
    return "0.00" if text.lstrip("+-") == "0.00" else text


def _across_seeds(cell: Cell | None) -> str:
    if cell is None:
        return "—"
    return _number(cell[0]) + (f" ± {_number(cell[1])}" if cell[1] is not None else "")


def _difference(first: Cell | None, later: Cell | None) -> str:
    if first is None or later is None:
        return "—"
    difference, half_width = welch_difference(first, later)
    interval = f" [{_number(difference - half_width)}, {_number(difference + half_width)}]" if half_width is not None else ""
    return _number(difference, "+") + interval


def _header(run: Run) -> str:
    results = run.results
    git = results.get("git") or {}
    commit = (git.get("commit") or "n/a")[:7] + (" (dirty)" if git.get("dirty") else "")
    return (f"{run.letter}: {run.folder} — config {results['config']['name']}, created {results['created']}, "
            f"git {commit}, seeds {', '.join(map(str, results['seeds']))}")


def _config_blocks(first: Run, later: Run) -> list[Block]:
    differences = config_differences(first.results["config"], later.results["config"])
    if not differences:
        return [("p", f"{later.letter} vs {first.letter}: identical configs")]
    inert = sum(not changes_results(key) for key, _, _ in differences)
    count = f"{len(differences)} key{' differs' if len(differences) == 1 else 's differ'}"
    if inert == len(differences):
        note = ", which does not change results" if inert == 1 else ", none of which changes results"
    else:
        note = f" ({inert} of which do not change results)" if inert else ""
    items = [f"{key}: {_value(ours)} → {_value(theirs)}" + ("" if changes_results(key) else " (does not change results)")
             for key, ours, theirs in differences]
    return [("p", f"{later.letter} vs {first.letter}: {count}{note}"), ("ul", items)]


def _blocks(runs: list[Run]) -> list[Block]:
    """The comparison as a list of blocks, so Markdown and HTML show the same content."""
    first, later_runs = runs[0], runs[1:]
    all_rows = list(dict.fromkeys(row for run in runs for row in run.rows))
    headlines = list(dict.fromkeys(h for run in runs for h in _headlines(run.rows)))
    counts = {run.letter: [0, 0, 0] for run in later_runs}  # differ, in both, in one only
    tables: list[Block] = []
    for metric, key, title in headlines:
        functional = metric.startswith(FUNCTIONAL_PREFIX)
        header = ["method", "task id", *(run.letter for run in runs),
                  *(f"{run.letter} − {first.letter} (95% CI)" for run in later_runs)]
        table_rows = []
        for method, task_id in all_rows:
            if functional and task_id.startswith("routed"):
                continue  # HumanEval is scored with the task id only, as in report.md
            cells = [_cell(run.rows[(method, task_id)], metric, key) if (method, task_id) in run.rows else None
                     for run in runs]
            for run, cell in zip(later_runs, cells[1:]):
                if (cells[0] is None) != (cell is None):
                    counts[run.letter][2] += 1
                elif cell is not None:
                    counts[run.letter][0] += cell[0] != cells[0][0]
                    counts[run.letter][1] += 1
            table_rows.append([method, task_id, *map(_across_seeds, cells),
                               *(_difference(cells[0], cell) for cell in cells[1:])])
        tables += [("h3", title), ("table", header, table_rows)]
    summary = "; ".join(
        f"{letter} vs {first.letter}: {differ} of {both} headline numbers differ"
        + (f" ({one_only} more in only one of the two)" if one_only else "")
        for letter, (differ, both, one_only) in counts.items())
    blocks: list[Block] = [("h1", "codecl compare: " + " vs ".join(run.letter for run in runs)), ("p", summary),
                           ("ul", [_header(run) for run in runs]), ("h2", "Config")]
    for run in later_runs:
        blocks += _config_blocks(first, run)
    blocks += [("h2", "Headline numbers"),
               ("p", "Each run: mean ± 95% t-interval half-width over seeds (a bare mean for one seed). "
                     f"Each later run − {first.letter}: the difference of means with its 95% Welch interval "
                     "(none where either run has one seed), which treats the runs as independent: runs that share "
                     "seeds share their initial draws, so for them it is if anything too wide; — where a run lacks "
                     "the number. A number differs when its means are not exactly equal, before rounding.")]
    return blocks + tables


def _load_all(run_dirs: list[Path]) -> list[Run]:
    if not 2 <= len(run_dirs) <= 26:
        raise UserError(f"compare: got {len(run_dirs)} run folders (expected 2 to 26)")
    return [load_run(Path(folder), chr(ord("A") + i)) for i, folder in enumerate(run_dirs)]


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def compare_runs(run_dirs: list[Path]) -> str:
    """The comparison of two or more run folders as Markdown; the first folder is the reference, A."""
    lines: list[str] = []
    for block in _blocks(_load_all(run_dirs)):
        kind = block[0]
        if kind == "table":
            header, rows = block[1], block[2]
            lines += [_markdown_row(header), "|---|---|" + "---:|" * (len(header) - 2), *map(_markdown_row, rows)]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]]
        else:
            lines.append({"h1": "# ", "h2": "## ", "h3": "### ", "p": ""}[kind] + block[1])
        lines.append("")
    return "\n".join(lines)


def compare_page(run_dirs: list[Path]) -> str:
    """The same comparison as one self-contained HTML page: inline CSS, nothing fetched from elsewhere."""
    blocks = _blocks(_load_all(run_dirs))
    parts: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "table":
            header, rows = block[1], block[2]
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(cell)}</th>" for cell in header) + "</tr>")
            for row in rows:
                cells = [f"<td>{html.escape(cell)}</td>" for cell in row[:2]]
                cells += [f'<td class="number">{html.escape(cell)}</td>' for cell in row[2:]]
                parts.append("<tr>" + "".join(cells) + "</tr>")
            parts.append("</table>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in block[1]) + "</ul>")
        else:
            parts.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
    title = html.escape(blocks[0][1])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
