"""`full-ft`: sequential fine-tuning of every weight, task after task: the classic forgetting baseline."""

from pathlib import Path

from torch import nn

from codecl.methods.base import MethodConfig, register_method


class FullFineTuningConfig(MethodConfig):
    pass


class FullFineTuning:
    def __init__(self, config: FullFineTuningConfig):
        self.config = config

    def attach(self, model: nn.Module) -> nn.Module:
        return model

    def begin_task(self, model: nn.Module, task_index: int) -> list[nn.Parameter]:
        parameters = list(model.parameters())
        for parameter in parameters:
            parameter.requires_grad_(True)
        return parameters

    def extra_loss(self, model, batch):
        return None

    def end_task(self, model: nn.Module, task_index: int) -> None:
        pass

    def use_task(self, model: nn.Module, task_index: int) -> None:
        pass

    def save(self, model: nn.Module, directory: Path) -> None:
        model.save_pretrained(directory)


register_method(
    "full-ft", FullFineTuningConfig, FullFineTuning, "all weights trained on each task in turn"
)
