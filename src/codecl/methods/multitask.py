"""`multitask`: joint training on every task seen so far, from the base model: the upper reference.

Continual-learning papers report it as the bound a sequential method tries to reach without keeping
the data (e.g. the "MTL" row of O-LoRA's results, Wang et al. 2023, arXiv:2310.14152). It is not a
continual method: at task i it reads every earlier task's training data, and it retrains from
scratch on

    D_0 ∪ D_1 ∪ ... ∪ D_i,   from θ_base,

so after the last task it is one model trained jointly on the whole stream, and after task i the
model does not depend on what tasks 0..i-1 trained (each step starts again from θ_base). Epochs and
steps count over the union, so its training time grows with the stream and is part of its cost.

Memory: `attach` keeps a copy of the base weights on the model's device to reset to, which doubles
the weights' memory (the runner's peak-memory reading includes it; `added` parameters do not).
One model serves every task: no task id is needed. Saved, loaded and exported as `full-ft` does.
"""

import torch
from torch import nn

from codecl.methods.base import MethodConfig, register_method
from codecl.methods.full_ft import FullFineTuning, FullFineTuningConfig


class MultitaskConfig(MethodConfig):
    pass


class Multitask:
    def __init__(self, config: MultitaskConfig):
        self.config = config
        self.per_task_parameters = False
        # Saving, loading and exporting a whole model is exactly full-ft's; delegate rather than copy.
        self.full_model = FullFineTuning(FullFineTuningConfig(method="full-ft"))
        self.base_state: dict[str, torch.Tensor] = {}

    def attach(self, model: nn.Module) -> nn.Module:
        # A copy, not a reference: the state dict's tensors share storage with the parameters we train.
        self.base_state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        return model

    def begin_task(self, model: nn.Module, task_index: int) -> list[nn.Parameter]:
        # Back to θ_base in place (load_state_dict copies into the existing tensors), so that the
        # parameters returned are the model's own and nothing earlier training did survives.
        with torch.no_grad():
            model.load_state_dict(self.base_state)
        parameters = list(model.parameters())
        for parameter in parameters:
            parameter.requires_grad_(True)
        return parameters

    def train_examples(self, task):
        return [example for examples in task.earlier for example in examples] + list(task.examples)

    def mix_batch(self, examples, rng):
        return examples

    def extra_loss(self, model, batch):
        return None

    def end_task(self, model: nn.Module, task) -> None:
        pass

    def use_task(self, model: nn.Module, task_index: int) -> None:
        pass

    def save(self, model: nn.Module, directory, task_count: int) -> None:
        self.full_model.save(model, directory, task_count)

    def load(self, model: nn.Module, directory) -> None:
        self.full_model.load(model, directory)

    def export(self, model: nn.Module, task_index: int):
        return self.full_model.export(model, task_index)


register_method(
    "multitask", MultitaskConfig, Multitask,
    "joint training from the base on the union of every task so far (upper reference, not continual)",
)
