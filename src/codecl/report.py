"""`report.md` from `results.json`: a ranking table like the original study's, then the matrices; and
`write_reports`, which writes it and `report.html` (`codecl.report_html`) together."""

from __future__ import annotations

from pathlib import Path

from codecl.errors import UserError
from codecl.results import read_results, write_text_atomically
from codecl.statistics import format_p

METRIC_TITLES = {
    "bleu": "BLEU (sacrebleu corpus)", "bleu_codexglue": "BLEU (CodeXGLUE code-to-text, smoothed sentence)",
    "bleu_codexglue_code": "BLEU (CodeXGLUE text-to-code, corpus)", "codebleu": "CodeBLEU",
    "exact_match": "exact match (%)", "edit_similarity": "edit similarity (%)", "syntax": "syntax valid (%)",
}
DEGENERATION_TITLES = {"distinct": "distinct predictions (%)", "loop": "repetition loops (%)"}
SIGNIFICANCE = 0.05


def _number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _across_seeds(summary: dict, metric: str, key: str) -> str:
    """mean ± 95% CI half-width (n seeds); a bare mean when there is one seed."""
    cell = summary.get(metric, {}).get(key)
    if not cell or cell["mean"] is None:
        return "—"
    text = _number(cell["mean"])
    return text + (f" ± {cell['ci95']:.2f}" if cell.get("ci95") is not None else "")


def _parameters(entry: dict, base: int) -> tuple[str, str, str]:
    finished = [run for run in entry["runs"] if "parameters" in run]
    if not finished:
        return "—", "—", "—"
    parameters = finished[0]["parameters"]
    per_task = max(parameters["trainable_per_task"], default=0)
    return f"{per_task:,}", f"{100.0 * per_task / base:.2f}%", f"{parameters['added']:,}"


def _versus_best(entry: dict, resamples: int) -> str:
    versus = entry.get("bleu_vs_best")
    if not versus:
        return "—"
    if versus["p_value"] == 1.0 and versus["best"] == entry.get("name"):
        return "best"
    mark = " *" if versus["p_value"] < SIGNIFICANCE else ""
    return f"{format_p(versus['p_value'], resamples)}{mark}"


def _router_accuracy(entry: dict, router: str) -> str:
    """The final row's router accuracy, mean over the tasks and the runs that finished."""
    values = [
        value for run in entry["runs"] if run["status"] == "ok"
        for value in run["task_agnostic"][router]["router_accuracy"][-1] if value is not None
    ]
    return f"{sum(values) / len(values):.1f}%" if values else "—"


def scenario_rows(results: dict) -> list[tuple[str, str, dict, str]]:
    """(method, task id, summary, router accuracy) for every row of the ranking: each method as trained,
    and for a method with per-task parameters one more row per router, scored without the task id."""
    rows = []
    for name, entry in results["methods"].items():
        routed = entry.get("summary_task_agnostic") or {}
        per_task = bool(routed) or any(run.get("per_task_parameters") for run in entry["runs"])
        rows.append((name, "given (oracle)" if per_task else "not needed", entry.get("summary", {}), "—"))
        for router, summary in routed.items():
            rows.append((name, f"routed: {router}", summary, _router_accuracy(entry, router)))
    return rows


def ranking_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """The ranking's header and rows, cell by cell, best average BLEU first; failed methods last."""
    base = results["base_model"]["parameters"]
    eval_only = results.get("eval_only_tasks", [])
    counts = results["evaluation"]["examples_per_task"]
    resamples = results["evaluation"].get("bootstrap", {}).get("resamples", 1000)
    n = "n=" + "/".join(str(counts[t["name"]]) for t in results["tasks"])  # per task, in stream order
    header = [
        "rank", "method", "task id", f"avg BLEU ({n})", "p vs best", f"avg BLEU (CodeXGLUE text-to-code) ({n})",
        f"avg CodeBLEU ({n})", f"avg EM ({n})", f"avg syntax ({n})",
        *(f"final pass@1 {t['name']} (n={t['problems']})" for t in eval_only),
        "router accuracy", "trainable params / task", "% of base", "added params", "forgetting (BLEU)", "BWT (BLEU)",
        "FWT (BLEU)", "train s", "status",
    ]

    def sort_key(row):
        name, _, summary, _ = row
        cell = summary.get("bleu", {}).get("average") or {}
        mean = cell.get("mean")
        # Ties keep the config's order, as the choice of the best method in the runner does.
        return (results["methods"][name].get("status") != "ok", -mean if mean is not None else float("inf"))

    rows = []
    for rank, (name, task_id, summary, router_accuracy) in enumerate(sorted(scenario_rows(results), key=sort_key), 1):
        entry = results["methods"][name]
        routed = task_id.startswith("routed")
        seconds = [sum(t["seconds"] for t in run["train"]) for run in entry["runs"]]
        status = entry.get("status", "?")
        if status != "ok":
            errors = [run["error"] for run in entry["runs"] if run["error"]]
            status = f"failed: {errors[0]}" if errors else status
        # HumanEval is scored with the task id (its language) only: nothing to show on a routed row.
        functional = ["—" if routed else _across_seeds(summary, f"pass@1 {t['name']}", "average") for t in eval_only]
        rows.append([
            str(rank), name, task_id, _across_seeds(summary, "bleu", "average"),
            "—" if routed else _versus_best({**entry, "name": name}, resamples),
            *(_across_seeds(summary, m, "average") for m in ("bleu_codexglue_code", "codebleu", "exact_match", "syntax")),
            *functional, router_accuracy, *_parameters(entry, base),
            *(_across_seeds(summary, "bleu", k) for k in ("forgetting", "backward_transfer", "forward_transfer")),
            f"{sum(seconds) / max(1, len(seconds)):.0f}", status,
        ])
    return header, rows


def ranking_table(results: dict) -> str:
    header, rows = ranking_rows(results)
    # Numbers right-aligned; the method, its task id and its status left.
    align = ["---" if cell in ("method", "task id", "status") else "---:" for cell in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def router_tables(results: dict) -> list[str]:
    """Per method with per-task parameters and per router: how often each task's inputs reached their own
    task's parameters after the last task, and where the others went (summed over runs, stream order)."""
    routers = results["evaluation"].get("routers") or {}
    entries = {name: entry for name, entry in results["methods"].items() if entry.get("summary_task_agnostic")}
    if not entries:
        return []
    task_names = [t["name"] for t in results["tasks"]]
    lines = ["## Task-agnostic inference: the routers", ""]
    lines += [f"- {router}: {about.get('description', 'n/a')}" for router, about in routers.items()]
    lines += ["- 'task id: given (oracle)' rows use the parameters of the task being scored; 'routed' rows get only the "
              "input, and the router picks the parameters of one trained task per input. Inputs it sends to their own "
              "task's parameters keep the oracle's prediction, so a perfect router scores exactly the oracle's row.", ""]
    tables = router_confusions(results)
    for router, shown in tables.items():
        for name, (confusion, runs) in shown.items():
            lines += [f"### {router} router, {name}, after the last task (inputs summed over {runs} runs)", "",
                      "| scored on ↓ / routed to → | " + " | ".join(task_names) + " | accuracy |",
                      "|---|" + "---:|" * (len(task_names) + 1)]
            for i, task in enumerate(task_names):
                total = sum(confusion[i])
                accuracy = f"{100.0 * confusion[i][i] / total:.1f}%" if total else "—"
                lines.append(f"| {task} | " + " | ".join(str(c) for c in confusion[i]) + f" | {accuracy} |")
            lines.append("")
    return lines


def router_confusions(results: dict) -> dict[str, dict[str, tuple[list[list[int]], int]]]:
    """router -> method -> (confusion counts after the last task, summed over the runs that finished; the
    number of runs). Rows: the task scored, columns: the task routed to, both in stream order. A router that
    reads only the base (the prototypes) routes alike for every method: then one entry, 'every method'."""
    task_names = [t["name"] for t in results["tasks"]]
    tables: dict[str, dict[str, tuple[list[list[int]], int]]] = {}
    for name, entry in results["methods"].items():
        finished = [run for run in entry["runs"] if run["status"] == "ok"]
        for router in entry.get("summary_task_agnostic") or {}:
            confusion = [[0] * len(task_names) for _ in task_names]
            for run in finished:
                order = run_order(run, task_names)
                for i, row in enumerate(run["task_agnostic"][router]["confusion"]):
                    for j, count in enumerate(row):
                        confusion[task_names.index(order[i])][task_names.index(order[j])] += count
            tables.setdefault(router, {})[name] = (confusion, len(finished))
    for router, by_method in tables.items():
        if len(by_method) > 1 and len({repr(table) for table in by_method.values()}) == 1:
            tables[router] = {"every method": next(iter(by_method.values()))}
    return tables


def humaneval_table(results: dict) -> list[str]:
    """Per method, each HumanEval task's final pass@1 and its forgetting, both across seeds."""
    eval_only = results.get("eval_only_tasks", [])
    if not eval_only:
        return []
    header = "| method | " + " | ".join(f"{t['name']} pass@1 (n={t['problems']}) | forgetting" for t in eval_only) + " |"
    lines = ["## HumanEval (eval-only tasks)", ""]
    for task in eval_only:
        skipped = f"; {task['skipped']} problems not translatable to {task['language']}, not scored" if task["skipped"] else ""
        dropped = task.get("dropped_assertions", [])
        if dropped:
            noun = "assertion" if len(dropped) == 1 else "assertions"
            skipped += f"; {len(dropped)} {noun} {task['language']} cannot express dropped ({', '.join(d['task_id'] for d in dropped)})"
        lines.append(f"- {task['name']}: {task['problems']} problems, {task['metric']}{skipped}; sandbox: {task.get('sandbox', 'n/a')}")
    lines += ["- Forgetting here, as for the stream's tasks: the best pass@1 from the row where the stream's task in "
              "that language was trained up to the last task's row, minus the final one, in points; — where the "
              "last task is that language's (nothing was learned after it) or no task trains it.", "",
              header, "|---|" + "---:|---:|" * len(eval_only)]
    for name, entry in results["methods"].items():
        summary = entry.get("summary", {})
        keys = [f"pass@1 {t['name']}" for t in eval_only]
        cells = " | ".join(f"{_across_seeds(summary, k, 'average')} | {_across_seeds(summary, k, 'forgetting')}" for k in keys)
        lines.append(f"| {name} | {cells} |")
    return lines + [""]


def mean_matrix(matrices: list[list[list[float | None]]]) -> list[list[float | None]]:
    """Cell by cell, the mean of same-shaped matrices; None where no matrix has a value (a metric that does
    not apply to a task, such as CodeBLEU on docstrings)."""
    def mean(cells):
        values = [cell for cell in cells if cell is not None]
        return sum(values) / len(values) if values else None
    return [[mean(cells) for cells in zip(*rows)] for rows in zip(*matrices)]


def run_order(run: dict, task_names: list[str]) -> list[str]:
    """The order a run trained its tasks in (results from before orders existed: the stream's)."""
    return run.get("order") or task_names


def in_stream_columns(matrix: list[list[float]], order: list[str], task_names: list[str]) -> list[list[float]]:
    """A run's matrix with its columns in stream order; its rows stay in the order it trained."""
    return [[row[order.index(name)] for name in task_names] for row in matrix]


def by_order(runs: list[dict], task_names: list[str]) -> dict[tuple[str, ...], list[dict]]:
    grouped: dict[tuple[str, ...], list[dict]] = {}
    for run in runs:
        grouped.setdefault(tuple(run_order(run, task_names)), []).append(run)
    return grouped


def degeneration_table(results: dict) -> list[str]:
    """Per method, after each task trained, every task's distinct and loop percentages, mean over the
    seeds that finished; row 0 (the base model) is shared by every method, so it is shown once."""
    runs = {name: [r for r in entry["runs"] if r.get("degeneration")] for name, entry in results["methods"].items()}
    if not any(runs.values()):
        return []  # results written before the diagnostic existed
    definitions = results["evaluation"].get("degeneration", {})
    tasks = [t["name"] for t in results["tasks"]]
    counts = results["evaluation"]["examples_per_task"]
    lines = [
        "## Degeneration", "",
        "- Not scores, diagnostics: a collapsed model writes the same output for many inputs (low distinct), often "
        "a loop cut off by the token limit (high loop). A model that writes code is near 100% distinct and 0% loops.",
        f"- distinct: {definitions.get('distinct', 'n/a')}; loop: {definitions.get('loop', 'n/a')}. "
        "Mean over the seeds that finished; the full matrices of each seed are under Accuracy matrices.",
        "",
        "| method | after training | " + " | ".join(f"{t} distinct % (n={counts[t]}) | {t} loop %" for t in tasks) + " |",
        "|---|---|" + "---:|---:|" * len(tasks),
    ]

    def row(name: str, after: str, distinct: list[float], loop: list[float]) -> str:
        return f"| {name} | {after} | " + " | ".join(f"{_number(d, 1)} | {_number(l, 1)}" for d, l in zip(distinct, loop)) + " |"

    first = next(r for rs in runs.values() for r in rs)
    start = {k: in_stream_columns(m, run_order(first, tasks), tasks)[0] for k, m in first["degeneration"].items()}
    lines.append(row("base model (all methods)", "nothing", start["distinct"], start["loop"]))
    for name, method_runs in runs.items():
        finished = [r for r in method_runs if r["status"] == "ok"]
        if not finished:
            lines.append(f"| {name} | failed | " + " | ".join("— | —" for _ in tasks) + " |")
            continue
        orders = by_order(finished, tasks)
        for order, group in orders.items():
            distinct, loop = (
                mean_matrix([in_stream_columns(r["degeneration"][kind], list(order), tasks) for r in group])
                for kind in ("distinct", "loop")
            )
            for i, after in enumerate(order, 1):
                label = after if len(orders) == 1 else f"{after} (order {' → '.join(order)})"
                lines.append(row(name, label, distinct[i], loop[i]))
    return lines + [""]


def matrix_table(
    matrix: list[list[float]], task_names: list[str], counts: dict[str, int], row_names: list[str] | None = None
) -> str:
    """Rows: after training nothing, then each stream task; columns: the tasks scored, with their n."""
    row_names = row_names or task_names
    header = "| after training ↓ / scored on → | " + " | ".join(f"{t} (n={counts[t]})" for t in task_names) + " |"
    lines = [header, "|---|" + "---:|" * len(task_names)]
    for i, row in enumerate(matrix):
        label = "nothing (base)" if i == 0 else row_names[i - 1]
        lines.append(f"| {label} | " + " | ".join(_number(v) for v in row) + " |")
    return "\n".join(lines)


def base_identity(base: dict) -> str:
    """The tiny base's checksums and origin, so two reports can be told to share a base or not."""
    made = base.get("made_by_codecl") or {}
    minutes = f"{made['total_seconds'] / 60:.1f} min" if isinstance(made.get("total_seconds"), (int, float)) else "n/a"
    origin = f"shipped (pretrained in {minutes} where it was made)" if base["origin"] == "shipped" else f"built here in {minutes}"
    return (f"tiny, {base['parameters'] / 1e6:.1f}M parameters, weights sha256 `{base['weights_sha256'][:16]}…`, "
            f"corpus `{base['corpus_fingerprint']}`, {origin}")


def corpus_identity(corpus: dict) -> str:
    """A mined corpus in one line: its checksum, its sources per language and the pins it departs from."""
    sources: dict[str, list[str]] = {}
    for source in corpus.get("sources") or []:
        sources.setdefault(source["language"], []).append(source["source"])
    counts = corpus.get("counts") or {}
    parts = [f"{language} {len(names)} source{'' if len(names) == 1 else 's'}, {counts.get(language, {}).get('train', 0):,} train functions"
             for language, names in sources.items()]
    departures = corpus.get("differs_from_pins") or []
    return (f"mined (miner v{corpus.get('miner_version')}, Python {corpus.get('python')}), sha256 "
            f"`{corpus['corpus_sha256'][:16]}…`; " + "; ".join(parts) + " (each source's version in results.json); "
            + (f"off its pins: {', '.join(map(str, departures))}" if departures else "every source at its pinned version"))


def stream_line(results: dict) -> str:
    """The tasks in stream order, each with its format where the config gives tasks of several formats."""
    data = results["config"]["data"]
    formats = {t.get("format", data.get("task_format")) for t in results["tasks"]}
    if len(formats) <= 1:
        return f"{' → '.join(t['name'] for t in results['tasks'])} ({formats.pop() if formats else 'n/a'}, data: {data['source']})"
    tasks = " → ".join(f"{t['name']} ({t['format']})" for t in results["tasks"])
    return f"{tasks}; data: {data['source']}"


def overview(results: dict) -> list[str]:
    """The run in a few lines of Markdown: stream, base, data, metrics, statistics, seeds and provenance."""
    evaluation = results["evaluation"]
    task_names = [t["name"] for t in results["tasks"]]
    orders = results["config"].get("orders") or [task_names]
    counts = evaluation["examples_per_task"]
    base = results["base_model"]
    made = base.get("made_by_codecl")
    base_line = f"`{base['name']}` ({base['parameters']:,} parameters"
    if made:
        corpus = made.get("corpus", {})
        languages = ", ".join(corpus.get("pretraining_languages", [])) or "stream's"
        tokenizer = ", ".join(corpus.get("tokenizer_languages", [])) or "stream's"
        # Older bases recorded one objective; newer ones a weighted mixture.
        objectives = made.get("objective") or ", ".join(f"{k} {v:g}" for k, v in made.get("objectives", {}).items())
        base_line += (f"; {made['recipe']}, {objectives} for {made['steps']} steps on the {languages} train "
                      f"split only; tokenizer trained on the {tokenizer} train splits)")
    else:
        base_line += ")"
    signature = evaluation["metrics"]["bleu"].get("signature") or "n/a"
    return [
        f"- Stream: {stream_line(results)}",
        *([f"- Orders: every method and seed runs each of {len(orders)} orders: "
           + "; ".join(" → ".join(order) for order in orders)
           + ". Summaries are over every (seed, order) run; matrices are kept per order"] if len(orders) > 1 else []),
        f"- Base model: {base_line}",
        *([f"- Base: {base_identity(base)}"] if base.get("weights_sha256") else []),
        *([f"- Corpus: {corpus_identity(results['corpus'])}"] if (results.get("corpus") or {}).get("corpus_sha256") else []),
        f"- Scored on the {evaluation['split']} split, n per task: "
        + ", ".join(f"{t} {counts[t]}" for t in task_names)
        + f"; decoding: {evaluation['decoding']}, at most {evaluation['max_new_tokens']} new tokens",
        f"- BLEU, three variants: {evaluation['metrics']['bleu']['variant']}, signature `{signature}`; "
        f"{evaluation['metrics'].get('bleu_codexglue_code', {}).get('variant', 'n/a')} (in the ranking: the one "
        "published code-generation tables report); and "
        f"{evaluation['metrics'].get('bleu_codexglue', {}).get('variant', 'n/a')} (CodeXGLUE's metric for docstrings)",
        *([f"- CodeBLEU: {evaluation['metrics']['codebleu']['unavailable']}"]
          if evaluation["metrics"].get("codebleu", {}).get("unavailable") else []),
        f"- Every summary is the mean ± the 95% t-interval half-width over the runs that finished (n = "
        f"{len(results['seeds'])} seeds" + (f" × {len(orders)} orders)" if len(orders) > 1 else ")"),
        f"- 'p vs best': a two-level bootstrap of average BLEU against the best method, resampling each method's "
        f"seeds and the test examples (paired) together ({evaluation.get('bootstrap', {}).get('resamples', 'n/a')} "
        f"resamples); * marks p < {SIGNIFICANCE}. The best method is chosen on the same data, so these p-values "
        "lean towards significance; with few seeds the seed level is coarse (3 seeds allow 10 distinct draws, and "
        "the bootstrap understates their variance by a factor (n-1)/n), and with one seed only the test examples vary",
        f"- Seeds: {', '.join(map(str, results['seeds']))}; device: {results['device']}; "
        f"git: {(results['git'] or {}).get('commit') or 'n/a'}",
        "- Forgetting (Chaudhry et al. 2018), BWT and FWT (Lopez-Paz & Ranzato 2017) are in BLEU points; "
        "the formulas are in `codecl.metrics`.",
    ]


def render(results: dict) -> str:
    task_names = [t["name"] for t in results["tasks"]]
    orders = results["config"].get("orders") or [task_names]
    counts = results["evaluation"]["examples_per_task"]
    out = [
        f"# codecl report: {results['config']['name']}",
        "",
        *overview(results),
        "",
        "## Ranking",
        "",
        ranking_table(results),
        "",
        *router_tables(results),
        *degeneration_table(results),
        *humaneval_table(results),
        "## Accuracy matrices",
    ]
    for name, entry in results["methods"].items():
        grouped = by_order([run for run in entry["runs"] if run["status"] == "ok"], task_names)
        if len(orders) > 1:
            for order, group in grouped.items():
                mean = mean_matrix([run["matrices"]["bleu"] for run in group])
                out += ["", f"### {name}, order {' → '.join(order)}: BLEU, mean over {len(group)} seeds", "",
                        matrix_table(mean, list(order), counts)]
        for run in entry["runs"]:
            order = run_order(run, task_names)
            out += ["", f"### {name}, seed {run['seed']}" + (f", order {' → '.join(order)}" if len(orders) > 1 else "")]
            for metric, matrix in run["matrices"].items():
                out += ["", f"{METRIC_TITLES.get(metric, metric)}:", "", matrix_table(matrix, order, counts)]
            for router, routed in (run.get("task_agnostic") or {}).items():
                out += ["", f"BLEU, task-agnostic ({router} router):", "", matrix_table(routed["matrices"]["bleu"], order, counts)]
            for kind, matrix in run.get("degeneration", {}).items():
                out += ["", f"{DEGENERATION_TITLES.get(kind, kind)}, a diagnostic:", "", matrix_table(matrix, order, counts)]
            eval_only = results.get("eval_only_tasks", [])
            for metric, matrix in run.get("eval_only_matrices", {}).items():
                names = [t["name"] for t in eval_only]
                out += ["", f"HumanEval {metric} (%), eval-only:", "",
                        matrix_table(matrix, names, {t["name"]: t["problems"] for t in eval_only}, order)]
    return "\n".join(out) + "\n"


def write_reports(results: dict, run_dir: Path) -> tuple[Path, Path]:
    """`report.md` and `report.html` of `run_dir` from `results`; each written whole or not at all."""
    # Here, not at the top: matplotlib loads when a report is written, not with every codecl module.
    from codecl.report_html import render_html

    markdown, page = run_dir / "report.md", run_dir / "report.html"
    write_text_atomically(markdown, render(results))
    write_text_atomically(page, render_html(results))
    return markdown, page


def rebuild_reports(run_dir: Path) -> tuple[Path, Path]:
    """`codecl report RUN_DIR`: render `report.md` and `report.html` again from `results.json`."""
    results = read_results(run_dir, "report")
    try:
        return write_reports(results, run_dir)
    except (KeyError, TypeError, IndexError, ValueError) as error:
        raise UserError(f"report {run_dir / 'results.json'}: missing or malformed field "
                        f"({type(error).__name__}: {error})") from None
