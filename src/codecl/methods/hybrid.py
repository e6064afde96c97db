"""`hybrid`: a LoRA adapter per task plus added T5 blocks, the published study's two variants.

- `shared_layer: false`: every task gets its own adapter and its own added blocks.
- `shared_layer: true`: every task gets its own adapter; the added blocks are trained on the first task
  only, then frozen and reused by every later task. The blocks then carry what the first task taught
  and cost their parameters once; the adapters alone adapt to later tasks.

Either way a task's parameters are never trained again after it, so earlier tasks cannot be forgotten.
Built by composing `lora` and `layers`: the adapters go on the base blocks only, never on added ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from torch import nn

from codecl.methods.base import MethodConfig, register_method
from codecl.methods.growth import rebuild_and_load
from codecl.methods.layers import AddedLayers, LayersConfig
from codecl.methods.lora import Lora, LoraMethodConfig


class HybridConfig(MethodConfig):
    shared_layer: bool = Field(False, description="one added layer trained on the first task, then frozen and reused")
    r: int = Field(8, ge=1, description="adapter rank")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] = Field(["q", "v"], min_length=1, description="linear layers that get adapters")
    num_layers: int = Field(1, ge=1, description="blocks added to each selected stack")
    position: Literal["encoder", "decoder", "both"] = Field("both", description="the stacks that grow")


class Hybrid:
    def __init__(self, config: HybridConfig):
        self.config = config
        self.per_task_parameters = True
        self.lora = Lora(LoraMethodConfig(
            method="lora", per_task=True, r=config.r, alpha=config.alpha, dropout=config.dropout,
            target_modules=config.target_modules,
        ))
        self.layers = AddedLayers(LayersConfig(
            method="layers", per_task=not config.shared_layer, num_layers=config.num_layers, position=config.position,
        ))

    def attach(self, model: nn.Module) -> nn.Module:
        self.layers.attach(model)  # first, so the adapters see only the base blocks
        return self.lora.attach(model)

    def begin_task(self, model, task_index: int) -> list[nn.Parameter]:
        parameters = self.lora.begin_task(model, task_index)
        if self.config.shared_layer and task_index > 0:
            self.layers.use_task(model.get_base_model(), task_index)  # reused, frozen
            return parameters
        return parameters + self.layers.begin_task(model.get_base_model(), task_index)

    def train_examples(self, task):
        return task.examples

    def mix_batch(self, examples, rng):
        return examples

    def extra_loss(self, model, batch):
        return None

    def end_task(self, model: nn.Module, task) -> None:
        self.layers.end_task(model, task)

    def use_task(self, model, task_index: int) -> None:
        self.lora.use_task(model, task_index)
        self.layers.use_task(model.get_base_model(), task_index)

    def save(self, model, directory: Path, task_count: int) -> None:
        self.lora.save(model, directory / "lora", task_count)
        self.layers.save(model.get_base_model(), directory / "layers", task_count if not self.config.shared_layer else 1)

    def load(self, model, directory: Path) -> None:
        self.lora.load(model, directory / "lora")
        rebuild_and_load(self.layers, model.get_base_model(), directory / "layers")
        self.use_task(model, 0)

    def export(self, model, task_index: int):
        return self.layers.export(self.lora.export(model, task_index), task_index)


register_method("hybrid", HybridConfig, Hybrid, "a LoRA adapter per task plus added blocks (per task or shared)")
