"""What a continual-learning method is to the runner: a small Protocol, a config and a registry entry.

A method never reaches into the training loop. The runner asks it, task by task, which parameters to
train and on which examples, what to add to each batch and to the loss, and before each evaluation which
task is being evaluated; everything else (optimiser, batches, mixed precision, the guard against
non-finite losses) belongs to the loop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from transformers import PreTrainedModel

if TYPE_CHECKING:  # codecl.data imports the config, which imports the methods
    from codecl.data.tasks import Example


class MethodConfig(BaseModel):
    """Fields every method accepts. Each method's own config adds its fields to these."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field("", description="registered method name; defaults to the entry's key in `methods`")
    learning_rate: float | None = Field(
        None, gt=0, description="this method's peak learning rate; overrides train.learning_rate"
    )


@dataclass(frozen=True)
class TaskData:
    """What a method may read of the task being trained: its position in the run's task order, its training
    examples, those of the tasks trained before it (in that order), and how to batch them on the model's
    device."""

    index: int
    examples: list[Example]
    earlier: list[list[Example]]
    pad_id: int
    device: torch.device


class ContinualMethod(Protocol):
    """One instance lives through one stream of tasks for one seed."""

    # True when `use_task` selects parameters that belong to one task (task-aware inference). Such a
    # method is also scored task-agnostic: a router picks the task for each input.
    per_task_parameters: bool

    def attach(self, model: nn.Module) -> nn.Module:
        """Wrap or change the base model once, before the first task; return the model to use."""

    def begin_task(self, model: nn.Module, task_index: int) -> list[nn.Parameter]:
        """Create what task `task_index` needs, set `requires_grad`, and return the parameters to
        train on it. An empty list means the task trains nothing and leaves the model unchanged."""

    def train_examples(self, task: TaskData) -> list[Example]:
        """The examples task `task.index` trains on: `task.examples` for most methods (multitask: the
        union with every earlier task's). Epochs and steps are counted over what this returns."""

    def mix_batch(self, examples: list[Example], rng: random.Random) -> list[Example]:
        """The examples of one training batch, given the batch the loop drew (replay adds remembered
        ones). `rng` is the loop's seeded generator."""

    def extra_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """A term added to the task loss (a regulariser), or None."""

    def end_task(self, model: nn.Module, task: TaskData) -> None:
        """Called after training task `task.index`, before it is evaluated (EWC estimates its Fisher here,
        replay fills its buffer)."""

    def use_task(self, model: nn.Module, task_index: int) -> None:
        """Select what evaluating task `task_index` should use (task-aware methods pick its parameters;
        a task not trained yet uses the most recently trained ones)."""

    def save(self, model: nn.Module, directory: Path, task_count: int) -> None:
        """Write what the method learned over `task_count` tasks, in a format its library loads back, and
        every piece of its own state a later task depends on (a Fisher and anchors, a replay memory, earlier
        adapters): a run is resumed from this folder after a crash. Draws no random numbers."""

    def load(self, model: nn.Module, directory: Path) -> None:
        """Restore into `attach`'s model, on a freshly built method, what `save` wrote: the same outputs for
        every task, and everything needed to go on training. With the torch and Python RNG states of the
        moment of saving restored after `load` (the runner keeps them), `begin_task`, training and `end_task`
        of the next tasks give bit for bit the model and state the run would have had without stopping
        (tests/test_methods.py checks it for every method)."""

    def export(self, model: nn.Module, task_index: int) -> PreTrainedModel:
        """A plain Hugging Face model computing what `model` computes for task `task_index`
        (raises UserError when no plain model can, saying why)."""


@dataclass(frozen=True)
class MethodEntry:
    name: str
    config_class: type[MethodConfig]
    build: Callable[[MethodConfig], ContinualMethod]
    summary: str


METHODS: dict[str, MethodEntry] = {}


def register_method(
    name: str,
    config_class: type[MethodConfig],
    build: Callable[[MethodConfig], ContinualMethod],
    summary: str,
) -> None:
    """Make a method available to configs under `name`. Called once, at the bottom of its file."""
    if name in METHODS:
        raise ValueError(f"method {name!r} is registered twice")
    METHODS[name] = MethodEntry(name, config_class, build, summary)


def freeze_all(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
