"""`layers`: whole T5 blocks added on top of the encoder and/or decoder of a frozen base.

A T5 block is pre-norm residual: x + attn(norm(x)), then x + ffn(norm(x)). With its attention output
projections (self and, in the decoder, cross) and its FFN output projection at zero, an added block is
the identity, so the model computes exactly what it computed before. Its other weights start as a
copy of the base's top block, the scale that block's inputs already have. It uses the relative
position bias the stack's first block computes, as every T5 block after the first does, and a layer
index past the base's so the KV cache of `generate()` gives it its own entry. Exported, the added
blocks make a plain, deeper T5.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from transformers.models.t5.modeling_t5 import T5Attention

from codecl.methods.base import MethodConfig, freeze_all, register_method
from codecl.methods.growth import (
    SLOTS_ATTRIBUTE, TaskSlots, plain_state, plain_t5, rebuild_and_load, save_added, slot_key, t5_stacks,
    trainable_in,
)


class LayersConfig(MethodConfig):
    per_task: bool = Field(True, description="new blocks per task, chosen by task id at evaluation")
    num_layers: int = Field(1, ge=1, description="blocks added to each selected stack")
    position: Literal["encoder", "decoder", "both"] = Field("both", description="the stacks that grow")


def identity_block(template: nn.Module, layer_index: int) -> nn.Module:
    """A copy of `template` that adds nothing to the residual stream until it is trained."""
    block = copy.deepcopy(template).float()
    for attention in (m for m in block.modules() if isinstance(m, T5Attention)):
        attention.layer_idx = layer_index
        if attention.has_relative_attention_bias:  # only the first block owns the bias table
            attention.has_relative_attention_bias = False
            del attention.relative_attention_bias
    with torch.no_grad():
        for sublayer in block.layer[:-1]:
            attention = getattr(sublayer, "SelfAttention", None) or sublayer.EncDecAttention
            attention.o.weight.zero_()
        block.layer[-1].DenseReluDense.wo.weight.zero_()
    for parameter in block.parameters():
        parameter.requires_grad_(False)
    return block


class AddedLayers:
    """Also used by `hybrid`, which composes it with `lora`."""

    def __init__(self, config: LayersConfig):
        self.config = config
        self.per_task_parameters = config.per_task
        self.base_counts: dict[str, int] = {}
        self.templates: dict[str, nn.Module] = {}

    def stacks(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        return t5_stacks(model, self.config.position)

    def attach(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        for name, stack in self.stacks(model):
            self.base_counts[name] = len(stack.block)
            # Kept outside the model, so wrappers added later (LoRA in `hybrid`) are never copied.
            self.templates[name] = copy.deepcopy(stack.block[-1])
            setattr(stack, SLOTS_ATTRIBUTE, TaskSlots())
        return model

    def _assemble(self, model: nn.Module) -> None:
        """Run each stack's base blocks, then its active task's added blocks."""
        for name, stack in self.stacks(model):
            added = getattr(stack, SLOTS_ATTRIBUTE).current
            base = list(stack.block)[: self.base_counts[name]]
            stack.block = nn.ModuleList(base + (list(added) if added is not None else []))
            # The KV cache is sized from the config's layer count.
            stack.config.num_layers = len(stack.block)
            top = model.config
            setattr(top, "num_layers" if name == "encoder" else "num_decoder_layers", len(stack.block))

    def begin_task(self, model: nn.Module, task_index: int) -> list[nn.Parameter]:
        key = slot_key(self.config.per_task, task_index)
        added = []
        for name, stack in self.stacks(model):
            slots = getattr(stack, SLOTS_ATTRIBUTE)
            if key not in slots.slots:
                first = self.base_counts[name]
                slots.add(key, nn.ModuleList(
                    identity_block(self.templates[name], first + i) for i in range(self.config.num_layers)
                ))
            slots.active = key
            added.append(slots.current)
        self._assemble(model)
        return trainable_in(added)

    def train_examples(self, task):
        return task.examples

    def mix_batch(self, examples, rng):
        return examples

    def extra_loss(self, model, batch):
        return None

    def end_task(self, model: nn.Module, task) -> None:
        freeze_all(model)

    def use_task(self, model: nn.Module, task_index: int) -> None:
        for _, stack in self.stacks(model):
            getattr(stack, SLOTS_ATTRIBUTE).activate_for_task(task_index)
        self._assemble(model)

    def save(self, model: nn.Module, directory: Path, task_count: int) -> None:
        save_added(model, directory, task_count)

    def load(self, model: nn.Module, directory: Path) -> None:
        rebuild_and_load(self, model, directory)

    def export(self, model: nn.Module, task_index: int):
        model = copy.deepcopy(model)
        self.use_task(model, task_index)
        return plain_t5(copy.deepcopy(model.config), plain_state(model, keep_added=True))


register_method("layers", LayersConfig, AddedLayers, "whole T5 blocks added on top, zero-initialised outputs")
