"""`tracking: [tensorboard, mlflow]`: each job's curves and scores, read back with each tool's own reader."""

import importlib.util
import json
from pathlib import Path

import pytest

from codecl.config import load_config
from codecl.errors import UserError
from codecl.runner import Run
from codecl.tracking import check_trackers, mlflow_uri

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def tracked_run(mined_corpus, tmp_path_factory) -> Path:
    pytest.importorskip("tensorboard", reason="the tensorboard extra: pip install 'codecl[tensorboard]'")
    pytest.importorskip("mlflow", reason="the mlflow extra: pip install 'codecl[mlflow]'")
    smoke = load_config(SMOKE, [f"data.path={mined_corpus}", "seeds=[0]", "eval.humaneval=[python]",
                                "eval.routers=[prototype]", "tracking=[tensorboard,mlflow]"])
    config = smoke.model_copy(update={"methods": {"lora": smoke.methods["lora"]}})
    out = tmp_path_factory.mktemp("tracked") / "run"
    Run(config, out, log=lambda line: None).execute()
    return out


def expected_series(run_dir: Path) -> tuple[dict, dict]:
    """From results.json: the loss at each step of the job's axis (the tasks' planned steps, one after the
    other), and each stream task's BLEU, HumanEval pass@1 and routed BLEU at the step its training ended."""
    results = json.loads((run_dir / "results.json").read_text())
    run = results["methods"]["lora"]["runs"][0]
    losses, scores, offset = {}, {}, 0
    for row, trained in enumerate(run["train"], 1):
        losses |= {offset + point["step"]: point["loss"] for point in trained["curve"]}
        offset += trained["planned_steps"]
        for column, task in enumerate(run["order"]):
            scores[f"eval/bleu/{task}", offset] = run["matrices"]["bleu"][row][column]
            scores[f"eval_task_agnostic/prototype/bleu/{task}", offset] = \
                run["task_agnostic"]["prototype"]["matrices"]["bleu"][row][column]
        scores["eval/pass_at_1/humaneval-python", offset] = run["eval_only_matrices"]["pass@1"][row][0]
    return losses, scores


def test_tensorboard_holds_the_loss_series_and_the_scores(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    losses, scores = expected_series(tracked_run)
    # 32 examples in batches of 8, logged every 2 steps; the second task's steps follow the first's 4.
    assert sorted(losses) == [2, 4, 6, 8] and {step for _, step in scores} == {4, 8}
    events = EventAccumulator(str(tracked_run / "tracking" / "tensorboard" / "lora seed 0"))
    events.Reload()
    read = {e.step: e.value for e in events.Scalars("train/loss")}
    assert read.keys() == losses.keys() and all(read[s] == pytest.approx(losses[s], rel=1e-6) for s in losses)
    for (tag, step), value in scores.items():
        (event,) = [e for e in events.Scalars(tag) if e.step == step]
        assert event.value == pytest.approx(value, rel=1e-6, abs=1e-6), tag


def test_mlflow_holds_the_same_loss_series(tracked_run):
    from mlflow.tracking import MlflowClient

    losses, _ = expected_series(tracked_run)
    client = MlflowClient(tracking_uri=mlflow_uri(tracked_run))
    (run,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert run.info.run_name == "lora seed 0" and run.data.params["methods.lora.r"] == "4"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    assert history == pytest.approx(losses)


def test_a_tracker_that_is_not_installed_is_refused_before_anything_runs(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"tracking: mlflow is not installed \(expected `pip install 'codecl\[mlflow\]'`\)"):
        check_trackers(["mlflow"])


class Failing:
    """A tracker whose `log` fails, as a locked database would."""

    name = "tensorboard"

    def __init__(self):
        self.finished = 0

    def start(self):
        pass

    def store_init_configuration(self, values):
        pass

    def log(self, values, step):
        raise OSError("database is locked")

    def finish(self):
        self.finished += 1


def test_a_failing_tracker_is_reported_once_and_turned_off(monkeypatch, tmp_path):
    from codecl import tracking

    failing = Failing()
    monkeypatch.setattr(tracking, "_tracker", lambda *args: failing)
    warnings = []
    trackers = tracking.JobTrackers(["tensorboard"], tmp_path, "lora seed 0", "smoke", {}, warn=warnings.append,
                                    state=tmp_path / "state")
    trackers.log({"train/loss": 1.0}, 2)
    trackers.log({"train/loss": 0.5}, 4)  # off by now: not tried again
    trackers.finish(failed=False)
    assert warnings == ["tracking is off for the rest of this job: OSError: database is locked"]
    assert failing.finished == 1
