"""The runner in-process: a method that fails is a reported result, never a score."""

import json
from pathlib import Path

import torch

from codecl.config import load_config
from codecl.methods import METHODS
from codecl.methods.base import MethodEntry
from codecl.methods.full_ft import FullFineTuning, FullFineTuningConfig
from codecl.runner import Run

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


class ExplodingLoss(FullFineTuning):
    """Full fine-tuning whose regulariser is always NaN: every step is non-finite."""

    def extra_loss(self, model, batch):
        return torch.tensor(float("nan"))


class CrashingMethod(FullFineTuning):
    def begin_task(self, model, task_index):
        raise TypeError("forward() got an unexpected keyword argument 'mask'")


def test_failed_methods_are_recorded_with_their_cause_and_no_score(monkeypatch, mined_corpus, tmp_path):
    monkeypatch.setitem(METHODS, "exploding", MethodEntry("exploding", FullFineTuningConfig, ExplodingLoss, "test"))
    monkeypatch.setitem(METHODS, "crashing", MethodEntry("crashing", FullFineTuningConfig, CrashingMethod, "test"))
    smoke = load_config(SMOKE, [f"data.path={mined_corpus}", "train.max_bad_steps=2"])
    config = smoke.model_copy(update={"methods": {
        "exploding": FullFineTuningConfig(method="exploding"),
        "crashing": FullFineTuningConfig(method="crashing"),
        "frozen": smoke.methods["frozen"],
    }})
    Run(config, tmp_path / "run", log=lambda line: None).execute()

    results = json.loads((tmp_path / "run" / "results.json").read_text())
    exploding = results["methods"]["exploding"]["runs"][0]
    assert exploding["status"] == "failed"
    assert exploding["error"] == "task python: step 2: non-finite loss (nan), 2 steps in a row"
    assert exploding["summary"] is None and len(exploding["matrices"]["bleu"]) == 1  # row 0 only
    crashing = results["methods"]["crashing"]["runs"][0]
    assert crashing["status"] == "failed"
    assert crashing["error"] == "TypeError: forward() got an unexpected keyword argument 'mask'"
    assert "Traceback" in (tmp_path / "run" / "errors" / "crashing-seed0.txt").read_text()
    assert results["methods"]["frozen"]["status"] == "ok"

    report = (tmp_path / "run" / "report.md").read_text()
    ranking = report.split("## Ranking")[1].split("## Accuracy")[0]
    rows = [line for line in ranking.splitlines() if line.startswith("| ") and "rank" not in line]
    assert rows[0].split("|")[2].strip() == "frozen"
    failed = {line.split("|")[2].strip(): line for line in rows[1:]}
    assert "failed: task python: step 2" in failed["exploding"] and "| — |" in failed["exploding"]
    assert "0.00" not in failed["exploding"].split("|")[3]


def test_every_order_trains_its_own_sequence_and_is_scored_and_exported_in_it(mined_corpus, tmp_path):
    from codecl.export import export_run

    smoke = load_config(SMOKE, [
        f"data.path={mined_corpus}", "seeds=[0]", "eval.humaneval=[]", "eval.routers=[prototype]",
        "orders=[[python, javascript], [javascript, python]]",
    ])
    config = smoke.model_copy(update={"methods": {name: smoke.methods[name] for name in ("frozen", "lora")}})
    run = Run(config, tmp_path / "run", log=lambda line: None)
    results = run.execute()

    frozen = results["methods"]["frozen"]["runs"]
    assert [r["order"] for r in frozen] == [["python", "javascript"], ["javascript", "python"]]
    # The base model's row, in each run's own column order.
    start = frozen[0]["matrices"]["bleu"][0]
    assert frozen[1]["matrices"]["bleu"][0] == start[::-1]
    # Kept for the bootstrap back in stream order: the untrained model's final rows pair up exactly.
    first, second = run.final_predictions["frozen"]
    assert first == second

    lora = results["methods"]["lora"]["runs"]
    assert [[t["task"] for t in r["train"]] for r in lora] == [["python", "javascript"], ["javascript", "python"]]
    assert len(lora[1]["task_agnostic"]["prototype"]["confusion"]) == 2
    assert results["methods"]["lora"]["summary"]["bleu"]["average"]["n"] == 2  # one seed x two orders
    for folder in ("seed0-order0", "seed0-order1"):
        assert (tmp_path / "run" / "checkpoints" / "lora" / folder).is_dir()
        last = "python" if folder.endswith("order1") else "javascript"
        assert (tmp_path / "run" / "predictions" / "lora" / folder / f"after2-{last}").is_dir()

    # The second order's adapters, by task name: the export reproduces that run's own predictions.
    line = export_run(tmp_path / "run", "lora", "python", tmp_path / "exported", check=True, order=1)
    assert "equal the run's predictions" in line
