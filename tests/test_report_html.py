"""report.html: the smoke run's page in headless Chromium, and every figure's numbers traced to results.json."""

import copy
import io
import json
import shutil

import pytest

from codecl import figures
from codecl.report import METRIC_TITLES

FIGURE_KEYS = {"pareto", "forgetting", "loss", "humaneval", "router", *(f"matrix-{m}" for m in METRIC_TITLES)}


def chromium() -> str:
    """The system's Chromium (Debian's package; `make test` installs it), driven through playwright."""
    pytest.importorskip("playwright", reason="playwright is a dev dependency: pip install -e '.[dev]'")
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no chromium on PATH (make test installs Debian's chromium package)")
    return found


def pixels(png: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def coloured_share(png: bytes) -> float:
    """The share of pixels in colour: text, axes and grids are grey; every series and heatmap is coloured."""
    rgb = pixels(png)
    return float(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).mean())


COUNTS = {"n", "runs", "seed", "problems"}  # they label a figure's numbers; they are not drawn


def numbers(value) -> list[float]:
    """The numbers a figure's data holds, less the counts that label them."""
    if isinstance(value, dict):
        return [n for k, v in value.items() if k not in COUNTS for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


@pytest.mark.slow
def test_the_page_renders_offline_without_errors_and_no_figure_is_blank(smoke_run):
    from playwright.sync_api import sync_playwright

    page_path = smoke_run / "report.html"
    problems, requests = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda message: problems.append(message.text) if message.type in ("error", "warning") else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(page_path.as_uri(), wait_until="load")
            shown = {}
            for figure in page.locator("figure").all():
                key = figure.get_attribute("id")
                tab = page.locator(f'label[for="tab-{key}"]')
                if tab.count():  # the accuracy matrices: one metric at a time, chosen on the page
                    tab.click()
                image = figure.locator("img")
                assert image.evaluate("img => img.complete && img.naturalWidth > 0"), key
                drawn = json.loads(figure.locator("details pre").text_content())
                shown[key] = image.screenshot(), numbers(drawn)
        finally:
            browser.close()
    assert problems == []
    assert requests == [page_path.as_uri()]  # the page itself, nothing else: no script, font or image fetched
    assert set(shown) == FIGURE_KEYS
    for key, (png, drawn) in shown.items():
        rgb = pixels(png)
        assert (rgb != rgb[0, 0]).any(), f"{key}: every pixel is one colour"
        assert drawn, f"{key}: no numbers under the figure"
        # Where it draws anything but zeros (zero-width bars are right), it shows in colour.
        if any(drawn_number != 0 for drawn_number in drawn):
            assert coloured_share(png) > 0.001, f"{key} draws numbers but nothing in colour"


@pytest.fixture(scope="module")
def smoke_results(smoke_run) -> dict:
    return json.loads((smoke_run / "results.json").read_text())


def changed(results: dict, edit) -> dict:
    edited = copy.deepcopy(results)
    edit(edited)
    return edited


def test_a_heatmap_panel_is_the_mean_of_the_runs_matrices_and_follows_them(smoke_results):
    def panel(results):
        (figure,) = figures.accuracy_heatmaps(results, ("bleu",))
        (lora,) = [p for p in figure.data["panels"] if p["method"] == "lora" and p["scenario"] == "task-aware"]
        return figure, lora

    runs = smoke_results["methods"]["lora"]["runs"]
    before, lora = panel(smoke_results)
    assert lora["runs"] == 2 and lora["matrix"][1][0] == pytest.approx(
        (runs[0]["matrices"]["bleu"][1][0] + runs[1]["matrices"]["bleu"][1][0]) / 2)

    def edit(results):
        results["methods"]["lora"]["runs"][0]["matrices"]["bleu"][1][0] += 40.0
    after, lora_after = panel(changed(smoke_results, edit))
    assert lora_after["matrix"][1][0] == pytest.approx(lora["matrix"][1][0] + 20.0)
    assert after.png != before.png


@pytest.mark.parametrize("draw, edit, read", [
    (figures.score_versus_parameters,
     lambda r: r["methods"]["lora"]["summary"]["bleu"]["average"].update(mean=37.5),
     lambda data: next(p["score"] for p in data["points"] if p["method"] == "lora") == 37.5),
    (figures.forgetting_bars,
     lambda r: r["methods"]["full-ft"]["summary"]["bleu"]["forgetting"].update(mean=-4.25),
     lambda data: next(b["forgetting"] for b in data["bars"] if b["row"].startswith("full-ft")) == -4.25),
    (figures.loss_curves,
     lambda r: r["methods"]["hybrid"]["runs"][1]["train"][0]["curve"][0].update(loss=9.5),
     lambda data: next(line["loss"][0] for p in data["panels"] if p["method"] == "hybrid" and p["task"] == "python"
                       for line in p["lines"] if line["seed"] == 1) == 9.5),
    (figures.humaneval_over_stream,
     lambda r: [run["eval_only_matrices"]["pass@1"][2].__setitem__(0, 50.0) for run in r["methods"]["lora"]["runs"]],
     lambda data: next(s["points"][2]["mean"] for s in data["panels"][0]["series"] if s["method"] == "lora") == 50.0),
    (figures.router_confusion,
     lambda r: [run["task_agnostic"]["loss"]["confusion"][0].__setitem__(1, 7) for run in r["methods"]["ffn"]["runs"]],
     lambda data: next((p["counts"][0][1] for p in data["panels"] if p["router"] == "loss" and p["method"] == "ffn"),
                       None) == 14),
], ids=["pareto", "forgetting", "loss", "humaneval", "router"])
def test_a_changed_number_in_results_json_changes_the_figure(smoke_results, draw, edit, read):
    (before,) = draw(smoke_results)
    assert not read(before.data)  # the value is not there already
    (after,) = draw(changed(smoke_results, edit))
    assert read(after.data) and after.png != before.png


def test_heatmap_rows_follow_each_runs_order_and_columns_the_streams(smoke_results):
    def edit(results):  # lora's second run trained javascript first: its matrix's columns are in that order
        results["config"]["orders"] = [["python", "javascript"], ["javascript", "python"]]
        run = results["methods"]["lora"]["runs"][1]
        run["order"] = ["javascript", "python"]
        run["matrices"]["bleu"] = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    (figure,) = figures.accuracy_heatmaps(changed(smoke_results, edit), ("bleu",))
    panels = [p for p in figure.data["panels"] if p["method"] == "lora" and p["scenario"] == "task-aware"]
    assert [p["order"] for p in panels] == [["python", "javascript"], ["javascript", "python"]]
    assert [p["runs"] for p in panels] == [1, 1]
    # Rows: the base, after javascript, after python; columns: python, javascript.
    assert panels[1]["matrix"] == [[2.0, 1.0], [4.0, 3.0], [6.0, 5.0]]


def test_a_metric_a_task_has_no_score_for_is_left_blank(smoke_results):
    def edit(results):  # as for a code-to-docstring task: no CodeBLEU on javascript, in any run
        for entry in results["methods"].values():
            for run in entry["runs"]:
                for matrix in [run["matrices"].get("codebleu"), *(r["matrices"]["codebleu"] for r in (run.get("task_agnostic") or {}).values())]:
                    for row in matrix or []:
                        row[1] = None
    (figure,) = figures.accuracy_heatmaps(changed(smoke_results, edit), ("codebleu",))
    assert all(row[1] is None and row[0] is not None for p in figure.data["panels"] for row in p["matrix"])


def test_the_pareto_front_by_hand():
    points = [{"method": "a", "score": 1.0, "trainable": 0}, {"method": "b", "score": 3.0, "trainable": 100},
              {"method": "c", "score": 2.0, "trainable": 200},  # b has fewer parameters and scores higher
              {"method": "d", "score": 3.0, "trainable": 100},  # ties b on both: both stay
              {"method": "e", "score": 4.0, "trainable": 5000}]
    assert figures.pareto_front(points, "trainable") == ["a", "b", "d", "e"]


def test_series_styles_differ_beyond_the_palette():
    styles = [tuple(sorted(figures.style(i).items())) for i in range(48)]
    assert len(set(styles)) == 48


def test_results_without_training_curves_still_render(smoke_results):
    from codecl.report_html import render_html

    def edit(results):  # one method, as results.json was before it kept curves
        results["methods"] = {"lora": results["methods"]["lora"]}
        for run in results["methods"]["lora"]["runs"]:
            for trained in run["train"]:
                trained.pop("curve")
    page = render_html(changed(smoke_results, edit))
    assert "No training curves in this results.json" in page and 'id="loss"' not in page
