"""Each job's numbers, live, in the experiment trackers people already use: TensorBoard and MLflow, through
accelerate's tracker classes (`accelerate.tracking`), to a folder inside the run (`tracking/<tracker>/`).

Off by default (`tracking: []`); `prepare_trackers` before the jobs, then one tracker run per job, named by the job (`lora/seed0`). Its step axis
counts the job's planned optimiser steps across the stream, so the tasks follow one another on one axis:
- `train/loss`, `train/learning_rate`, `train/tokens_per_second` at every `train.log_every` steps;
- `eval/<metric>/<task>` (every stream task's scores after each task trained), `eval/pass_at_1/<HumanEval task>`
  and `eval_task_agnostic/<router>/<metric>/<task>`, at the step where that task's training ended.
results.json keeps the same training numbers (`train[].curve`), so nothing here is needed for the report.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from codecl.errors import UserError

# tracker -> (the module it imports, the extra that installs it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


def tracking_folder(run_dir: Path, tracker: str) -> Path:
    return run_dir / "tracking" / tracker


def check_trackers(names: list[str]) -> None:
    """Refuse, before any job starts, a tracker whose package is not installed."""
    for name in names:
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"tracking: {name} is not installed (expected `pip install 'codecl[{extra}]'`)")


def flat_config(config: dict, prefix: str = "") -> dict[str, Any]:
    """`{"train": {"epochs": 3}}` -> `{"train.epochs": 3}`; lists and None as text, which every tracker takes."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def mlflow_uri(run_dir: Path) -> str:
    """MLflow's store inside the run, a SQLite file: `mlflow ui --backend-store-uri sqlite:///RUN/tracking/mlflow/mlflow.db`
    shows it. (MLflow 3 keeps its file store in maintenance mode and refuses it by default.)"""
    return f"sqlite:///{(tracking_folder(run_dir, 'mlflow') / 'mlflow.db').resolve()}"


def prepare_trackers(names: list[str], run_dir: Path, experiment: str) -> None:
    """What the jobs share, made once before they start together on several workers: MLflow's database
    and the run's experiment (two processes creating either at once would collide)."""
    check_trackers(names)
    if "mlflow" in names:
        import mlflow

        tracking_folder(run_dir, "mlflow").mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(mlflow_uri(run_dir))
        if mlflow.get_experiment_by_name(experiment) is None:
            artifacts = (tracking_folder(run_dir, "mlflow") / "artifacts").resolve().as_uri()
            mlflow.create_experiment(experiment, artifact_location=artifacts)


def _tracker(name: str, run_dir: Path, run_name: str, experiment: str):
    from accelerate.tracking import MLflowTracker, TensorBoardTracker

    if name == "tensorboard":
        return TensorBoardTracker(run_name, tracking_folder(run_dir, name))
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri(run_dir))
    return MLflowTracker(experiment, run_name=run_name)


class JobTrackers:
    """The trackers of one job. `log` takes `{name: number}` at a step of the job's axis; `finish` closes
    them. With no trackers configured every call does nothing."""

    def __init__(self, names: list[str], run_dir: Path, run_name: str, experiment: str, config: dict) -> None:
        self.trackers = [_tracker(name, run_dir, run_name, experiment) for name in names]
        hyperparameters = flat_config(config)
        for tracker in self.trackers:
            tracker.start()
            tracker.store_init_configuration(hyperparameters)

    def log(self, values: dict[str, float], step: int) -> None:
        values = {k: v for k, v in values.items() if v is not None}
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []
