"""`report.html`: the run as one self-contained page, written next to `report.md`.

One file with its figures inside (PNG data URIs), its style inline and no script: it makes no network
request, opens offline and can be mailed. It holds the ranking table, the figures of `codecl.figures`
(each with the numbers it draws, under it), the accuracy matrices with the metric chosen on the page
(radio buttons and CSS alone), and the run's provenance in collapsible sections.
"""

from __future__ import annotations

import base64
import json
import re
from html import escape

from codecl.figures import Figure, all_figures
from codecl.report import METRIC_TITLES, overview, ranking_rows

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1500px;
       padding: 0 24px 48px; color: #1a1a1a; }
h1 { margin: 24px 0 8px; } h2 { margin-top: 40px; border-bottom: 1px solid #ccc; padding-bottom: 4px; }
nav a { margin-right: 14px; } code, pre { font: 13px ui-monospace, Menlo, Consolas, monospace; }
pre { background: #f6f6f6; padding: 10px; overflow: auto; max-height: 480px; white-space: pre-wrap; }
.overview li { margin: 2px 0; }
.table { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
tr:hover td { background: #f7f9fc; }
figure { margin: 16px 0 32px; } figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #444; max-width: 1000px; margin: 6px 0; }
details { margin: 6px 0; } summary { cursor: pointer; color: #0b5cad; }
.tabs > input { position: absolute; opacity: 0; }
.tabs > label { display: inline-block; padding: 6px 12px; border: 1px solid #bbb; border-radius: 4px 4px 0 0;
                margin-right: 4px; cursor: pointer; background: #f3f3f3; }
.tabs > .panel { display: none; border-top: 1px solid #bbb; padding-top: 8px; }
"""


def markdown_inline(text: str) -> str:
    """The little Markdown the overview uses: `code` spans; everything else escaped."""
    parts = re.split(r"`([^`]*)`", text)
    return "".join(f"<code>{escape(part)}</code>" if i % 2 else escape(part) for i, part in enumerate(parts))


def figure_html(figure: Figure) -> str:
    image = base64.b64encode(figure.png).decode()
    numbers = escape(json.dumps(figure.data, indent=1, default=str))
    return (f'<figure id="{figure.key}"><img src="data:image/png;base64,{image}" alt="{escape(figure.title)}">'
            f"<figcaption>{escape(figure.caption)}</figcaption>"
            f"<details><summary>The numbers drawn (JSON, from results.json)</summary><pre>{numbers}</pre></details>"
            "</figure>")


def ranking_html(results: dict) -> str:
    header, rows = ranking_rows(results)
    text = {"method", "task id", "status"}
    cells = lambda row, tag: "".join(  # noqa: E731
        f'<{tag}{" class=text" if name in text else ""}>{escape(cell)}</{tag}>' for name, cell in zip(header, row))
    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    return f'<div class="table"><table><thead><tr>{cells(header, "th")}</tr></thead><tbody>{body}</tbody></table></div>'


def tab_rules(figures: list[Figure]) -> str:
    """The CSS that shows the checked metric's panel and marks its label."""
    return " ".join(f"#tab-{f.key}:checked ~ #panel-{f.key} {{ display: block; }} "
                    f"#tab-{f.key}:checked + label {{ background: #fff; border-bottom-color: #fff; font-weight: 600; }}"
                    for f in figures)


def metric_tabs(figures: list[Figure]) -> str:
    """The accuracy-matrix figures, one per metric, behind radio buttons (`tab_rules` shows the checked one)."""
    inputs, panels = [], []
    for index, figure in enumerate(figures):
        tab = f"tab-{figure.key}"
        inputs.append(f'<input type="radio" name="metric" id="{tab}"{" checked" if index == 0 else ""}>'
                      f'<label for="{tab}">{escape(figure.title)}</label>')
        panels.append(f'<div class="panel" id="panel-{figure.key}">{figure_html(figure)}</div>')
    return f'<div class="tabs">{"".join(inputs)}{"".join(panels)}</div>'


def provenance_html(results: dict) -> str:
    """What made the run, collapsed: config, versions, git, device, base and corpus, metrics, sandbox, sessions."""
    sandbox = {t["name"]: t.get("sandbox", "n/a") for t in results.get("eval_only_tasks") or []}
    sections = [
        ("Config (validated, as run)", results["config"]),
        ("Package versions", results.get("packages")),
        ("Git", results.get("git")),
        ("Device", {"device": results.get("device"), "executor sessions": results.get("sessions")}),
        ("Base model", results.get("base_model")),
        ("Corpus", results.get("corpus")),
        ("Evaluation: metrics, routers, bootstrap", results.get("evaluation")),
        ("HumanEval sandbox guards", sandbox or "no eval-only tasks"),
    ]
    return "".join(f"<details><summary>{escape(title)}</summary><pre>{escape(json.dumps(value, indent=1, default=str))}</pre>"
                   "</details>" for title, value in sections)


def render_html(results: dict) -> str:
    figures = all_figures(results)
    matrices = [f for f in figures if f.key.startswith("matrix-")]
    by_key = {f.key: f for f in figures}
    sections = [("ranking", "Ranking", ranking_html(results))]
    for key, title in (("pareto", "Score against parameters"), ("forgetting", "Forgetting and backward transfer")):
        if key in by_key:
            sections.append((key, title, figure_html(by_key[key])))
    if matrices:
        sections.append(("matrices", "Accuracy matrices",
                         f"<p>Choose a metric ({len(matrices)} of {len(METRIC_TITLES)}).</p>{metric_tabs(matrices)}"))
    for key, title in (("loss", "Training loss"), ("humaneval", "HumanEval over the stream"), ("router", "Routers")):
        if key in by_key:
            sections.append((key, title, figure_html(by_key[key])))
    if "loss" not in by_key:
        sections.append(("loss", "Training loss", "<p>No training curves in this results.json (written before codecl "
                                                   "kept them, or no method trained).</p>"))
    sections.append(("provenance", "Provenance", provenance_html(results)))
    name = escape(results["config"]["name"])
    nav = "".join(f'<a href="#section-{key}">{escape(title)}</a>' for key, title, _ in sections)
    items = "".join(f"<li>{markdown_inline(line.removeprefix('- '))}</li>" for line in overview(results))
    body = "".join(f'<h2 id="section-{key}">{escape(title)}</h2>{content}' for key, title, content in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>codecl report: {name}</title><style>{STYLE}{tab_rules(matrices)}</style></head><body>"
            f"<h1>codecl report: {name}</h1><nav>{nav}</nav><ul class=overview>{items}</ul>{body}"
            f"<p><small>Written by codecl {escape(str(results.get('codecl_version', '')))} from results.json; "
            "report.md holds the same numbers as tables.</small></p></body></html>\n")
