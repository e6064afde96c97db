"""The report's figures, drawn by matplotlib from `results.json` alone.

Each function returns `Figure`s that keep the numbers they draw (`data`): the page shows them under the
image, and the tests check them against results.json. Conventions: every axis names its unit, every
title gives its n, colours come from the Okabe-Ito palette (safe for the common colour-vision
deficiencies), series beyond its eight colours differ by marker and line style too, and heatmaps use
viridis (perceptually uniform, readable in grey).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure as Canvas

from codecl.report import METRIC_TITLES, by_order, in_stream_columns, mean_matrix, router_confusions, scenario_rows
from codecl.statistics import t_interval

# Okabe & Ito (2008), "Color Universal Design"; yellow last, as it is faint on white.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
MARKERS = "osD^vP*X<>ph"
LINE_STYLES = ["-", "--", ":", "-."]
DPI = 100


@dataclass
class Figure:
    key: str  # the page's anchor
    title: str
    caption: str  # what is drawn, its n and units
    data: dict  # the numbers drawn, as plain JSON
    png: bytes


def style(index: int) -> dict:
    """Series `index`'s colour, marker and line style: no two of the first 48 series look alike."""
    return {"color": PALETTE[index % len(PALETTE)], "marker": MARKERS[index % len(MARKERS)],
            "linestyle": LINE_STYLES[(index // len(PALETTE)) % len(LINE_STYLES)]}


def rendered(canvas: Canvas) -> bytes:
    buffer = io.BytesIO()
    canvas.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def grid(count: int, columns: int, width: float, height: float, *, left: float = 1.1, right: float = 0.3,
         top: float = 0.8, bottom: float = 0.7, gap: float = 0.9, **options) -> tuple[Canvas, list]:
    """A canvas of `count` panels of `width` x `height` inches, `columns` wide, the unused ones hidden.
    Margins and gaps in inches, set by hand: matplotlib's constrained layout measures every label of
    every panel, which took most of the time of a 25-panel figure."""
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    total_width = left + right + columns * width + (columns - 1) * gap
    total_height = top + bottom + rows * height + (rows - 1) * gap
    canvas = Canvas(figsize=(total_width, total_height))
    canvas.subplots_adjust(left=left / total_width, right=1 - right / total_width, top=1 - top / total_height,
                           bottom=bottom / total_height, wspace=gap / width, hspace=gap / height)
    axes = canvas.subplots(rows, columns, squeeze=False, **options).ravel().tolist()
    for unused in axes[count:]:
        unused.set_visible(False)
    return canvas, axes[:count]


def label_inches(labels: list[str]) -> float:
    """About how wide the longest of `labels` is at 8 points (0.065 inch a character), margin included."""
    return 0.065 * max(map(len, labels), default=0) + 0.3


def slanted(names: list[str]) -> bool:
    """Whether task names are too long to stand side by side under a heatmap's columns."""
    return max(map(len, names), default=0) > 12


def colorbar(canvas: Canvas, image, label: str) -> None:
    """A colour bar in the canvas's right margin (`grid`'s `right`), as tall as the panels."""
    width, height = canvas.get_size_inches()
    bottom, top = canvas.subplotpars.bottom, canvas.subplotpars.top
    canvas.colorbar(image, cax=canvas.add_axes((1 - 1.1 / width, bottom, 0.15 / width, top - bottom)), label=label)


def task_names(results: dict) -> list[str]:
    return [t["name"] for t in results["tasks"]]


def seeds_phrase(results: dict) -> str:
    orders = results["config"].get("orders") or [task_names(results)]
    return f"{len(results['seeds'])} seeds" + (f" × {len(orders)} orders" if len(orders) > 1 else "")


def runs_phrase(counts: list[int]) -> str:
    """n of the runs behind each point: one number, or its range where some runs failed."""
    low, high = min(counts, default=0), max(counts, default=0)
    return f"n={low} runs" if low == high else f"n={low}-{high} runs (each label says)"


def examples_phrase(results: dict) -> str:
    counts = results["evaluation"]["examples_per_task"]
    return f"{results['evaluation']['split']} examples per task: " + ", ".join(f"{t} n={counts[t]}" for t in task_names(results))


def finished(entry: dict) -> list[dict]:
    return [run for run in entry["runs"] if run["status"] == "ok"]


def matrix_panels(results: dict, metric: str) -> list[dict]:
    """Per method, scenario (task-aware, then each router) and task order: the mean matrix over the runs
    that finished. Rows: after training nothing, then each task in the order trained; columns: stream order."""
    names = task_names(results)
    panels = []
    for method, entry in results["methods"].items():
        for router in [None, *(entry.get("summary_task_agnostic") or {})]:
            for order, group in by_order(finished(entry), names).items():
                matrices = [in_stream_columns(run["task_agnostic"][router]["matrices"][metric] if router
                                              else run["matrices"][metric], list(order), names) for run in group]
                panels.append({"method": method, "scenario": f"routed: {router}" if router else "task-aware",
                               "order": list(order), "runs": len(group), "matrix": mean_matrix(matrices)})
    return panels


def accuracy_heatmaps(results: dict, metrics: tuple[str, ...] = tuple(METRIC_TITLES)) -> list[Figure]:
    """Per metric, every method's (and scenario's) accuracy matrix as an annotated heatmap on one colour scale."""
    names = task_names(results)
    several_orders = len(results["config"].get("orders") or [names]) > 1
    figures = []
    for metric in metrics:
        title = METRIC_TITLES[metric]
        panels = matrix_panels(results, metric)
        if not panels:
            continue
        values = [v for p in panels for row in p["matrix"] for v in row if v is not None]
        if not values:  # the metric applies to no task of the stream
            continue
        low, high = min(values), max(values)
        label = label_inches(["+" + name for name in names])
        canvas, axes = grid(len(panels), 4, 0.75 * len(names) + 0.6, 0.4 * len(names) + 0.5, left=label + 0.5,
                            right=1.4, top=1.0, bottom=label if slanted(names) else 0.7, gap=max(1.0, label + 0.2))
        for ax, panel in zip(axes, panels):
            cells = np.ma.masked_invalid(np.array(panel["matrix"], dtype=float))  # None: not scored, left blank
            image = ax.imshow(cells, cmap="viridis", vmin=low, vmax=high if high > low else low + 1, aspect="auto")
            for i, row in enumerate(panel["matrix"]):
                for j, value in enumerate(row):
                    # Dark text on the light end of viridis, light text on the dark end.
                    shade = (value - low) / (high - low) if value is not None and high > low else 0.0
                    ax.text(j, i, "—" if value is None else f"{value:.1f}", ha="center", va="center", fontsize=8,
                            color="black" if shade > 0.6 or value is None else "white")
            ax.set_xticks(range(len(names)), names, fontsize=8, rotation=30 if slanted(names) else 0,
                          ha="right" if slanted(names) else "center")
            ax.set_yticks(range(len(names) + 1), ["base", *(f"+{t}" for t in panel["order"])], fontsize=8)
            ax.set_title(f"{panel['method']} · {panel['scenario']}"
                         + (f"\norder {'→'.join(panel['order'])}" if several_orders else "")
                         + f" (n={panel['runs']})", fontsize=9)
        canvas.supxlabel("task scored on")
        canvas.supylabel("after training (the base, then each task in the order trained)")
        canvas.suptitle(f"{title}: accuracy matrices, mean over the runs that finished (n runs per panel; "
                        f"{examples_phrase(results)})", fontsize=10)
        colorbar(canvas, image, title)
        figures.append(Figure(
            f"matrix-{metric}", title,
            f"Each panel: a method, scored with the task id (task-aware) or routed without it, its {title} on every "
            f"task (columns) after training nothing and then each task (rows); mean over n runs ({seeds_phrase(results)} "
            f"where all finished), one colour scale for all panels.",
            {"metric": metric, "panels": panels}, rendered(canvas),
        ))
    return figures


def interval(summary: dict, metric: str, key: str) -> tuple[float | None, float | None, int]:
    cell = (summary.get(metric) or {}).get(key) or {}
    return cell.get("mean"), cell.get("ci95"), cell.get("n", 0)


def pareto_front(points: list[dict], x: str) -> list[str]:
    """The methods no other beats on both counts: fewer or as many parameters and a higher or equal score,
    one of them strictly (ties on both keep both)."""
    return [p["method"] for p in points if not any(
        q[x] <= p[x] and q["score"] >= p["score"] and (q[x] < p[x] or q["score"] > p["score"]) for q in points)]


def score_versus_parameters(results: dict) -> list[Figure]:
    """Average BLEU against trainable parameters per task and against added parameters, the front marked."""
    points = []
    for method, _, summary, _ in scenario_rows(results):
        runs = [run for run in finished(results["methods"][method]) if "parameters" in run]
        mean, ci95, n = interval(summary, "bleu", "average")
        if runs and mean is not None and not any(p["method"] == method for p in points):
            parameters = runs[0]["parameters"]
            points.append({"method": method, "score": mean, "ci95": ci95, "n": n,
                           "trainable": max(parameters["trainable_per_task"], default=0), "added": parameters["added"]})
    if not points:
        return []
    canvas, axes = grid(2, 2, 5.0, 4.2, left=0.9, right=2.0, gap=0.3, sharey=True)
    fronts = {}
    for ax, (x, label) in zip(axes, (("trainable", "trainable parameters per task (count, symlog scale)"),
                                     ("added", "parameters added to the base (count, symlog scale)"))):
        fronts[x] = front = pareto_front(points, x)
        for index, point in enumerate(points):
            on_front = point["method"] in front
            ax.errorbar(point[x], point["score"], yerr=point["ci95"] or 0, capsize=3, linestyle="none",
                        color=style(index)["color"], marker=style(index)["marker"], markersize=8 if on_front else 6,
                        markerfacecolor=style(index)["color"] if on_front else "white",
                        label=f"{point['method']} (n={point['n']})")
            ax.annotate(point["method"], (point[x], point["score"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ordered = sorted((p for p in points if p["method"] in front), key=lambda p: p[x])
        ax.step([p[x] for p in ordered], [p["score"] for p in ordered], where="post", color="grey", linewidth=1,
                linestyle="--", label="Pareto front")
        # Frozen methods train nothing: a symlog axis keeps 0 on the chart beside millions (linear up to 10).
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(-2, 3 * max(max(p[x] for p in points), 10))
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("average BLEU after the last task (points, 0-100)")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), title="filled: on the front")
    canvas.suptitle(f"Score against parameters: mean ± 95% t-interval, {runs_phrase([p['n'] for p in points])} "
                    f"({seeds_phrase(results)}); {examples_phrase(results)}", fontsize=10)
    return [Figure(
        "pareto", "Score against parameters",
        "Average BLEU over the stream's tasks after the last task (task-aware), against the parameters trained per "
        "task and those added to the base. Filled markers and the dashed line: the Pareto front (no method scores "
        "higher with as few parameters), chosen on the means: a method off the front may still be within the "
        "intervals of one on it.",
        {"points": points, "front": fronts}, rendered(canvas),
    )]


def forgetting_bars(results: dict) -> list[Figure]:
    """Forgetting and backward transfer (BLEU) per method and scenario, with 95% intervals."""
    bars = []
    for method, task_id, summary, _ in scenario_rows(results):
        forgetting, forgetting_ci, n = interval(summary, "bleu", "forgetting")
        if forgetting is None:
            continue
        bwt, bwt_ci, _ = interval(summary, "bleu", "backward_transfer")
        bars.append({"row": f"{method} · {task_id} (n={n})", "forgetting": forgetting, "forgetting_ci95": forgetting_ci,
                     "backward_transfer": bwt, "backward_transfer_ci95": bwt_ci, "n": n})
    if not bars:
        return []
    canvas, axes = grid(2, 2, 4.0, 0.25 * len(bars) + 0.4, left=2.9, gap=0.3, sharey=True)
    positions = range(len(bars))
    for ax, (key, label, colour) in zip(axes, (
            ("forgetting", "forgetting (BLEU points; lower is better)", PALETTE[3]),
            ("backward_transfer", "backward transfer (BLEU points; higher is better)", PALETTE[0]))):
        ax.barh(positions, [b[key] for b in bars], xerr=[b[f"{key}_ci95"] or 0 for b in bars], color=colour,
                capsize=2, height=0.7)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(list(positions), [b["row"] for b in bars], fontsize=8)
    axes[0].invert_yaxis()
    canvas.suptitle(f"Forgetting and backward transfer: mean ± 95% t-interval, {runs_phrase([b['n'] for b in bars])} "
                    f"({seeds_phrase(results)})", fontsize=10)
    return [Figure(
        "forgetting", "Forgetting and backward transfer",
        "Forgetting (Chaudhry et al. 2018) and BWT (Lopez-Paz & Ranzato 2017) in BLEU points, per method and "
        "scenario (task id given, or routed without it), in the ranking's order.",
        {"bars": bars}, rendered(canvas),
    )]


def loss_curves(results: dict) -> list[Figure]:
    """Training loss against step for every method and task, one line per seed (and order): a row per method
    that trained, a column per task in stream order, an empty cell where no run has a curve."""
    names = task_names(results)
    rows = []
    for method, entry in results["methods"].items():
        cells = [{"method": method, "task": task, "lines": [
            {"seed": run["seed"], "order": run.get("order") or names,
             "step": [p["step"] for p in trained["curve"]], "loss": [p["loss"] for p in trained["curve"]]}
            for run in entry["runs"] for trained in run["train"] if trained["task"] == task and trained.get("curve")]}
            for task in names]
        if any(cell["lines"] for cell in cells):
            rows.append(cells)
    if not rows:
        return []
    panels = [cell for row in rows for cell in row]
    canvas, axes = grid(len(panels), len(names), 3.6, 2.0, left=0.9, top=1.1, gap=0.9)
    labels = sorted({(line["seed"], tuple(line["order"])) for p in panels for line in p["lines"]})
    several_orders = len({order for _, order in labels}) > 1
    for ax, panel in zip(axes, panels):
        if not panel["lines"]:
            ax.set_visible(False)
            continue
        for line in panel["lines"]:
            ax.plot(line["step"], line["loss"], linewidth=1.2, markersize=3, **style(labels.index((line["seed"], tuple(line["order"])))),
                    label=f"seed {line['seed']}" + (f", {'→'.join(line['order'])}" if several_orders else ""))
        ax.set_title(f"{panel['method']} · training on {panel['task']} (n={len(panel['lines'])} runs)", fontsize=9)
        ax.set_xlabel("optimiser step", fontsize=8)
        ax.set_ylabel("loss (nats/token\n+ method's term)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    every = results["config"]["train"]["log_every"]
    canvas.suptitle(f"Training loss: the mean of the steps since the previous point (every {every} steps)", fontsize=10)
    return [Figure(
        "loss", "Training loss",
        f"Per method and task, the training loss (token-level cross-entropy of the batch, plus the method's own term "
        f"where it has one, such as EWC's penalty) every {every} optimiser steps, one line per run.",
        {"panels": panels}, rendered(canvas),
    )]


def humaneval_over_stream(results: dict) -> list[Figure]:
    """HumanEval pass@1 after training nothing and then each task, per method (and order), mean ± 95% interval."""
    eval_only = results.get("eval_only_tasks") or []
    names = task_names(results)
    several_orders = len(results["config"].get("orders") or [names]) > 1
    panels = []
    for column, task in enumerate(eval_only):
        series = []
        for method, entry in results["methods"].items():
            runs = [run for run in finished(entry) if run.get("eval_only_matrices")]
            # Rows follow each run's order: with several orders, "after 1 task" is another task per order.
            for order, group in by_order(runs, names).items():
                rows = zip(*(run["eval_only_matrices"]["pass@1"] for run in group))
                series.append({"method": method, "order": list(order), "n": len(group),
                               "points": [t_interval([row[column] for row in row_group]).as_dict() for row_group in rows]})
        if series:
            panels.append({"task": task["name"], "problems": task["problems"], "series": series})
    if not panels:
        return []
    canvas, axes = grid(len(panels), 2, 4.6, 3.4, left=0.9, right=2.2 if several_orders else 1.8, gap=1.0)
    for ax, panel in zip(axes, panels):
        for index, line in enumerate(panel["series"]):
            label = line["method"] + (f" ({'→'.join(line['order'])})" if several_orders else "") + f" (n={line['n']})"
            ax.errorbar(range(len(line["points"])), [p["mean"] for p in line["points"]],
                        yerr=[p["ci95"] or 0 for p in line["points"]], capsize=2, linewidth=1.2, markersize=4,
                        label=label, **style(index))
        ticks = ["base", *(f"after {k}" for k in range(1, len(names) + 1))] if several_orders else \
            ["base", *(f"+{t}" for t in panel["series"][0]["order"])]
        ax.set_xticks(range(len(ticks)), ticks)
        ax.set_xlabel("after training (tasks in each line's order)" if several_orders else "after training")
        ax.set_ylabel("pass@1 (%)")
        highest = max((p["mean"] + (p["ci95"] or 0) for line in panel["series"] for p in line["points"]), default=0.0)
        top = max(5.0, 1.1 * highest)  # a rate, from 0, on a scale where one problem shows
        ax.set_ylim(-0.03 * top, top)  # a hair below 0, so that markers at 0 are whole
        if highest == 0:  # every line lies on the axis, one over the other
            ax.text(0.5, 0.5, "every method: 0 problems passed at every point", transform=ax.transAxes,
                    ha="center", fontsize=9)
        ax.set_title(f"{panel['task']} (n={panel['problems']} problems; {runs_phrase([s['n'] for s in panel['series']])})",
                     fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    canvas.suptitle(f"HumanEval pass@1 over the stream: mean ± 95% t-interval over {seeds_phrase(results)}", fontsize=10)
    return [Figure(
        "humaneval", "HumanEval pass@1 over the stream",
        "Greedy pass@1 of the sandboxed HumanEval problems, never trained on, after training nothing and then each task.",
        {"panels": panels}, rendered(canvas),
    )]


def router_confusion(results: dict) -> list[Figure]:
    """Per router (and method, where they route differently): where each task's inputs were sent."""
    tables = router_confusions(results)
    if not tables:
        return []
    names = task_names(results)
    panels = [{"router": router, "method": method, "runs": runs, "counts": counts}
              for router, by_method in tables.items() for method, (counts, runs) in by_method.items()]
    label = label_inches(names)
    canvas, axes = grid(len(panels), 4, 0.8 * len(names) + 0.4, 0.6 * len(names) + 0.4, left=label + 0.6, right=1.5,
                        top=1.1, bottom=label + 0.4 if slanted(names) else 0.8, gap=max(1.3, label + 0.5))
    for ax, panel in zip(axes, panels):
        shares = [[100.0 * c / max(1, sum(row)) for c in row] for row in panel["counts"]]
        image = ax.imshow(shares, cmap="viridis", vmin=0, vmax=100)
        for i, row in enumerate(panel["counts"]):
            for j, count in enumerate(row):
                ax.text(j, i, f"{shares[i][j]:.0f}%\n({count})", ha="center", va="center", fontsize=8,
                        color="black" if shares[i][j] > 60 else "white")
        ax.set_xticks(range(len(names)), names, fontsize=8, rotation=30 if slanted(names) else 0,
                      ha="right" if slanted(names) else "center")
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("routed to", fontsize=8)
        ax.set_ylabel("task scored on", fontsize=8)
        total = sum(map(sum, panel["counts"]))
        ax.set_title(f"{panel['router']} router · {panel['method']}\n(n={total} inputs over {panel['runs']} runs)", fontsize=9)
    colorbar(canvas, image, "share of the task's inputs (%)")
    canvas.suptitle("Task-agnostic routing after the last task", fontsize=10)
    return [Figure(
        "router", "The routers' confusion matrices",
        "Per router: the share (and count) of each task's evaluation inputs sent to each task's parameters after the "
        "last task, summed over the runs that finished. The diagonal is routed right.",
        {"panels": panels}, rendered(canvas),
    )]


def all_figures(results: dict) -> list[Figure]:
    return [*score_versus_parameters(results), *forgetting_bars(results), *accuracy_heatmaps(results),
            *loss_curves(results), *humaneval_over_stream(results), *router_confusion(results)]
