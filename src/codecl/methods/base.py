"""What a continual-learning method is to the runner: a small Protocol, a config and a registry entry.

A method never reaches into the training loop. The runner asks it, task by task, which parameters to
train, and before each evaluation which task is being evaluated; everything else (optimiser, batches,
mixed precision, the guard against non-finite losses) belongs to the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from transformers import PreTrainedModel


class MethodConfig(BaseModel):
    """Fields every method accepts. Each method's own config adds its fields to these."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field("", description="registered method name; defaults to the entry's key in `methods`")
    learning_rate: float | None = Field(
        None, gt=0, description="this method's peak learning rate; overrides train.learning_rate"
    )


class ContinualMethod(Protocol):
    """One instance lives through one stream of tasks for one seed."""

    def attach(self, model: nn.Module) -> nn.Module:
        """Wrap or change the base model once, before the first task; return the model to use."""

    def begin_task(self, model: nn.Module, task_index: int) -> list[nn.Parameter]:
        """Create what task `task_index` needs, set `requires_grad`, and return the parameters to
        train on it. An empty list means the task trains nothing and leaves the model unchanged."""

    def extra_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """A term added to the task loss (a regulariser), or None."""

    def end_task(self, model: nn.Module, task_index: int) -> None:
        """Called after training task `task_index`."""

    def use_task(self, model: nn.Module, task_index: int) -> None:
        """Select what evaluating task `task_index` should use (task-aware methods pick its parameters;
        a task not trained yet uses the most recently trained ones)."""

    def save(self, model: nn.Module, directory: Path, task_count: int) -> None:
        """Write what the method learned over `task_count` tasks, in a format its library loads back."""

    def load(self, model: nn.Module, directory: Path) -> None:
        """Restore into `attach`'s model what `save` wrote: the same outputs for every task."""

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
