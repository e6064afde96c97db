"""What a job leaves in the run folder and reads back: where its files go, its record and the hashes that
let a resumed run keep it, its progress for the live view, and its resumable state."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy
import torch

from codecl.config import RESUMABLE_KEYS, ExperimentConfig
from codecl.evaluate.decode import Evaluation
from codecl.evaluate.functional import FunctionalEvaluation
from codecl.evaluate.router import RoutedRows
from codecl.methods.base import ContinualMethod
from codecl.results import TEMPORARY, file_digest, run_folder, save_torch_atomically, write_json_atomically


@dataclass(frozen=True)
class JobKey:
    method: str | None = None  # None: the base job
    seed: int = 0
    order: int = 0  # index into the run's task orders

    def folder(self, order_count: int) -> str:
        return "base" if self.method is None else f"{self.method}/{run_folder(self.seed, self.order, order_count)}"

    def label(self, order_count: int) -> str:
        if self.method is None:
            return "base model"
        return f"{self.method} seed {self.seed}" + (f" order {self.order}" if order_count > 1 else "")


@dataclass(frozen=True)
class JobFiles:
    """Where one job writes in the run folder."""

    run_dir: Path
    key: JobKey
    order_count: int

    @property
    def root(self) -> Path:
        return self.run_dir / "jobs" / self.key.folder(self.order_count)

    @property
    def record(self) -> Path:  # written last: the job is done when this holds its hashes
        return self.root / "record.json"

    @property
    def progress(self) -> Path:
        return self.root / "progress.json"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def predictions(self) -> Path:
        return self.run_dir / "predictions" / self.key.folder(self.order_count)

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / self.key.folder(self.order_count)

    @property
    def outputs(self) -> list[Path]:
        """What the job hands on: the base job's row and router; a method job's predictions and checkpoint."""
        if self.key.method is None:
            return [self.root / "start.pt", self.run_dir / "router"]
        return [self.predictions, self.checkpoint]


def fingerprint(config: ExperimentConfig, key: JobKey) -> str:
    """What a job's results are a function of: the config less how the run goes (`RESUMABLE_KEYS`) and
    less the other methods, and its key. A kept job's record must carry the current one."""
    tree = config.model_dump(mode="json")
    for dotted in RESUMABLE_KEYS:
        *parents, last = dotted.split(".")
        node = tree
        for part in parents:
            node = node[part]
        node.pop(last, None)
    tree["methods"] = {key.method: tree["methods"][key.method]} if key.method else {}
    text = json.dumps({"config": tree, "key": [key.method, key.seed, key.order]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def digests(files: JobFiles) -> dict[str, str]:
    """sha256 of every file the job handed on, by path relative to the run folder."""
    found = {}
    for output in files.outputs:
        paths = sorted(p for p in output.rglob("*") if p.is_file()) if output.is_dir() else [output]
        for path in filter(Path.is_file, paths):
            if not path.name.endswith(TEMPORARY):
                found[str(path.relative_to(files.run_dir))] = file_digest(path)
    return found


def finished_record(files: JobFiles, config: ExperimentConfig) -> dict | None:
    """The record of a job that finished (ok or failed) under this config with every file it wrote intact,
    else None: such a job runs (again)."""
    try:
        done = json.loads(files.record.read_text())
    except (OSError, ValueError):
        return None
    if done.get("fingerprint") != fingerprint(config, files.key):
        return None
    run_dir = files.run_dir
    if any(not (run_dir / path).is_file() or file_digest(run_dir / path) != digest for path, digest in done["files"].items()):
        return None
    return done["record"]


class JobProgress:
    """progress.json, which the orchestrator's live view reads: the task, the phase and the step."""

    def __init__(self, path: Path, tasks: int):
        self.path, self.state = path, {"state": "running", "task": None, "position": 0, "tasks": tasks,
                                       "phase": None, "step": 0, "steps": 0}

    def update(self, **changes) -> None:
        self.state.update(changes, updated=time.time())
        write_json_atomically(self.path, self.state)


def rng_states() -> dict:
    """Every generator a job draws from. CUDA's of the current device only: a job resumed by another
    executor may see another number of GPUs."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            "python": random.getstate(), "numpy": numpy.random.get_state()}


def restore_rng(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])
    random.setstate(states["python"])
    numpy.random.set_state(states["numpy"])


@dataclass
class JobState:
    """What a job has after finishing `done` tasks: saved at the end of every task (`state/taskK/`, with
    `method.save`'s files beside it), so that a restarted job goes on with the next one."""

    done: int
    record: dict
    rows: list[list[Evaluation]]
    eval_only_rows: list[list[FunctionalEvaluation]]
    routed: dict[str, RoutedRows]
    trainable: list[int] = field(default_factory=list)
    rng: dict = field(default_factory=rng_states)


def save_state(files: JobFiles, state: JobState, method: ContinualMethod, model) -> None:
    folder = files.state / f"task{state.done}"
    if folder.exists():
        shutil.rmtree(folder)
    method.save(model, folder / "method", state.done)
    save_torch_atomically(folder / "job.pt", state)  # last: a task folder without it is incomplete
    for older in files.state.glob("task*"):
        if older != folder:
            shutil.rmtree(older)
    (files.state / "step.pt").unlink(missing_ok=True)


def latest_state(files: JobFiles) -> tuple[Path, JobState] | None:
    complete = [f for f in files.state.glob("task*") if (f / "job.pt").is_file()]
    if not complete:
        return None
    folder = max(complete, key=lambda f: int(f.name.removeprefix("task")))
    return folder, torch.load(folder / "job.pt", weights_only=False)
