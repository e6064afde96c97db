"""What every job of a run reads and none changes: the base model, the task stream, the eval-only tasks and
how to score a model on them. A process builds it once per config and every job it runs shares it."""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from typing import Callable

import torch
from accelerate import Accelerator

from codecl.config import ExperimentConfig
from codecl.data.tasks import Task, build_stream
from codecl.errors import UserError
from codecl.evaluate.decode import Evaluation, evaluate_task
from codecl.evaluate.functional import FunctionalEvaluation, FunctionalTask, build_humaneval_tasks, pass_at_1
from codecl.models.load import BaseModel, load_pretrained
from codecl.models.store import ensure_tiny_model, log_to_stderr, tiny_model_identity, tiny_model_request

Log = Callable[[str], None]


def load_base(config: ExperimentConfig, log: Log = log_to_stderr) -> BaseModel:
    if config.model.name != "tiny":
        return load_pretrained(config.model.name)
    directory = ensure_tiny_model(*tiny_model_request(config), log)
    base = load_pretrained(directory)
    base.provenance.update(tiny_model_identity(directory))  # where it came from and its checksums, easy to find
    return base


def make_accelerator(precision: str) -> Accelerator:
    if precision == "fp16" and not torch.cuda.is_available():
        raise UserError("model.precision: fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
    return Accelerator(mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision])


@dataclass
class Setting:
    config: ExperimentConfig
    accelerator: Accelerator
    base: BaseModel
    tasks: list[Task]  # the stream, in its own order
    orders: list[list[int]]  # each task order of the run, as stream indices
    eval_only: list[FunctionalTask]  # HumanEval, scored after every task but never trained on

    @classmethod
    def build(cls, config: ExperimentConfig, log: Log = log_to_stderr) -> Setting:
        accelerator = make_accelerator(config.model.precision)
        base = load_base(config, log)
        base.model.to(accelerator.device)
        return cls(
            config, accelerator, base, build_stream(config.data, base.tokenizer, config.eval.split),
            config.stream_orders(),
            build_humaneval_tasks(config.eval, base.tokenizer, config.data.max_source_tokens, config.data.input_prefix),
        )

    def evaluate_all(self, model, tasks: list[Task], use_task: Callable[[int], None]) -> list[Evaluation]:
        """Every task of `tasks`, each with the parameters `use_task` selects for its position."""
        row = []
        for position, task in enumerate(tasks):
            use_task(position)
            row.append(evaluate_task(model, self.base.tokenizer, task.splits[self.config.eval.split],
                                     task.target_language, self.config.eval, self.accelerator))
        return row

    def evaluate_eval_only(self, model, tasks: list[Task], use_task: Callable[[int], None]) -> list[FunctionalEvaluation]:
        """pass@1 of every HumanEval task, with the parameters of the first of `tasks` that writes code in
        its language (the last task's where none does)."""
        evaluations = []
        languages = [t.target_language for t in tasks]
        for task in self.eval_only:
            use_task(languages.index(task.language) if task.language in languages else len(languages) - 1)
            evaluations.append(pass_at_1(model, self.base.tokenizer, task, self.config.eval, self.accelerator))
        return evaluations

    def eval_only_trained_at(self, tasks: list[Task]) -> list[int | None]:
        """Per eval-only task, the row after which its language was trained: the first task that writes
        code in it (a code -> docstring task in that language does not)."""
        languages = [t.target_language for t in tasks]
        return [languages.index(t.language) + 1 if t.language in languages else None for t in self.eval_only]


_BUILT: dict[str, Setting] = {}


def setting_for(config: ExperimentConfig, log: Log = log_to_stderr) -> Setting:
    """The process's Setting for `config`, built on first use: a worker loads the base and tokenises the
    stream once for all the jobs it runs. How the jobs run (`run`) does not change it."""
    key = json.dumps(config.model_dump(mode="json", exclude={"run"}), sort_keys=True)
    if key not in _BUILT:
        _BUILT.clear()  # one config per process at a time; a test running several keeps only the latest
        _BUILT[key] = Setting.build(config, log)
        # What exists now (the libraries, the base, the data) lives as long as the process. Out of the
        # collector's sight, it no longer costs each `gc.collect()` (accelerate's `free_memory` runs one
        # after every task) a walk over some 400,000 objects: 0.2 s a task on the tiny model.
        gc.freeze()
    return _BUILT[key]
