"""Each job's numbers, live, in the experiment trackers people already use: TensorBoard and MLflow, through
accelerate's tracker classes (`accelerate.tracking`), to a folder inside the run (`tracking/<tracker>/`).

Off by default (`tracking: []`). `prepare_trackers` runs before the jobs; then one tracker run per job, named
by the job (`lora seed 0`). Its step axis counts the job's planned optimiser steps across the stream, so the
tasks follow one another on one axis:
- `train/loss`, `train/learning_rate`, `train/tokens_per_second` at every `train.log_every` steps;
- `eval/<metric>/<task>` (every stream task's scores after each task trained), `eval/pass_at_1/<HumanEval task>`
  and `eval_task_agnostic/<router>/<metric>/<task>`, at the step where that task's training ended.
results.json keeps the same training numbers (`train[].curve`), so nothing here is needed for the report.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

from codecl.errors import UserError

# tracker -> (the module it imports, the extra that installs it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}
MLFLOW_RUN_ID = "mlflow-run-id.txt"  # in the job's state/: the run a resumed job goes on in


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
    if "mlflow" in names:
        import mlflow

        tracking_folder(run_dir, "mlflow").mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(mlflow_uri(run_dir))
        if mlflow.get_experiment_by_name(experiment) is None:
            artifacts = (tracking_folder(run_dir, "mlflow") / "artifacts").resolve().as_uri()
            mlflow.create_experiment(experiment, artifact_location=artifacts)


def _tracker(name: str, run_dir: Path, run_name: str, experiment: str, state: Path, resume_step: int | None):
    from accelerate.tracking import MLflowTracker, TensorBoardTracker

    if name == "tensorboard":
        # A resumed job logs again from its checkpoint: TensorBoard hides what the killed attempt logged after it.
        return TensorBoardTracker(run_name, tracking_folder(run_dir, name), purge_step=resume_step)
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri(run_dir))
    # A resumed job goes on in the run its killed attempt opened.
    run_id = (state / MLFLOW_RUN_ID).read_text() if resume_step is not None and (state / MLFLOW_RUN_ID).is_file() else None
    return MLflowTracker(experiment, run_name=run_name, run_id=run_id)



class JobTrackers:
    """The trackers of one job. `log` takes `{name: number}` at a step of the job's axis; `finish` closes
    them. With no trackers configured every call does nothing.

    A tracker that fails (a locked database, a full disk) is reported once through `warn` and turned
    off for the rest of the job: losing a curve must not lose the job's result."""

    def __init__(self, names: list[str], run_dir: Path, run_name: str, experiment: str, config: dict, *,
                 warn: Callable[[str], None], state: Path, resume_step: int | None = None) -> None:
        self.trackers, self.warn = [], warn
        try:
            for name in names:
                tracker = _tracker(name, run_dir, run_name, experiment, state, resume_step)
                tracker.start()
                self.trackers.append(tracker)
                if name == "mlflow":
                    state.mkdir(parents=True, exist_ok=True)
                    (state / MLFLOW_RUN_ID).write_text(tracker.active_run.info.run_id)
                if resume_step is None:  # a resumed job's run has them already
                    tracker.store_init_configuration(flat_config(config))
        except Exception as error:  # noqa: BLE001 - any tracker failure, see the class docstring
            self.give_up(error)

    def give_up(self, error: Exception) -> None:
        self.warn(f"tracking is off for the rest of this job: {type(error).__name__}: {error}".splitlines()[0])
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            try:
                tracker.finish()
            except Exception:  # noqa: BLE001 - already reported
                pass

    def log(self, values: dict[str, float | None], step: int) -> None:
        values = {k: v for k, v in values.items() if v is not None}
        try:
            for tracker in self.trackers:
                tracker.log(values, step=step)
        except Exception as error:  # noqa: BLE001
            self.give_up(error)

    def finish(self, failed: bool) -> None:
        try:
            for tracker in self.trackers:
                if failed and tracker.name == "mlflow":
                    import mlflow

                    mlflow.end_run(status="FAILED")  # accelerate's finish would end it as FINISHED
                tracker.finish()
        except Exception as error:  # noqa: BLE001
            self.give_up(error)
        self.trackers = []
