"""`full-ft`: sequential fine-tuning of every weight, task after task: the classic forgetting baseline."""

import copy
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from codecl.errors import UserError
from codecl.methods.base import MethodConfig, register_method

WEIGHTS = "model.safetensors"


class FullFineTuningConfig(MethodConfig):
    pass


class FullFineTuning:
    def __init__(self, config: FullFineTuningConfig):
        self.config = config
        self.per_task_parameters = False

    def attach(self, model: nn.Module) -> nn.Module:
        return model

    def begin_task(self, model: nn.Module, task_index: int) -> list[nn.Parameter]:
        parameters = list(model.parameters())
        for parameter in parameters:
            parameter.requires_grad_(True)
        return parameters

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
        # One model serves every task: the weights after the last task are the whole state.
        model.save_pretrained(directory)

    def load(self, model: nn.Module, directory: Path) -> None:
        if not (directory / WEIGHTS).is_file():
            raise UserError(f"checkpoint {directory}: no {WEIGHTS} in it")
        unexpected = model.load_state_dict(load_file(str(directory / WEIGHTS)), strict=False).unexpected_keys
        if unexpected:
            raise UserError(f"checkpoint {directory}: weights this model does not have, e.g. {unexpected[0]}")

    def export(self, model: nn.Module, task_index: int):
        return copy.deepcopy(model)


register_method(
    "full-ft", FullFineTuningConfig, FullFineTuning, "all weights trained on each task in turn"
)
