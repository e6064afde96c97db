"""`frozen`: the base model, never trained. The reference row every method is compared with."""

import copy
from pathlib import Path

from torch import nn

from codecl.methods.base import MethodConfig, freeze_all, register_method


class FrozenConfig(MethodConfig):
    pass


class Frozen:
    def __init__(self, config: FrozenConfig):
        self.config = config
        self.per_task_parameters = False

    def attach(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        return model

    def begin_task(self, model: nn.Module, task_index: int) -> list[nn.Parameter]:
        return []

    def train_examples(self, task):
        return task.examples

    def mix_batch(self, examples, rng):
        return examples

    def extra_loss(self, model, batch):
        return None

    def end_task(self, model: nn.Module, task) -> None:
        pass

    def use_task(self, model: nn.Module, task_index: int) -> None:
        pass

    def save(self, model: nn.Module, directory: Path, task_count: int) -> None:
        pass  # nothing was learned: the base model's own folder is the state

    def load(self, model: nn.Module, directory: Path) -> None:
        pass

    def export(self, model: nn.Module, task_index: int):
        return copy.deepcopy(model)


register_method("frozen", FrozenConfig, Frozen, "no training: the base model as the reference row")
