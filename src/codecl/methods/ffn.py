"""`ffn`: FFN-width expansion. Each selected T5 feed-forward layer gets `units` more hidden units.

The new units' output weights start at zero, so the model computes exactly what it computed before;
their input weights are drawn at the scale of the existing ones, so they learn at the same pace. The
new weights are fp32 master weights under bf16/fp16 autocast (the published run that trained them in
fp16 overflowed). Works for T5 v1.0 (`wi`, ReLU) and v1.1 gated-GELU (`wi_0`, `wi_1`) FFNs. Exported,
a model whose every FFN grew alike is a plain T5 with a larger `d_ff`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from codecl.errors import UserError
from codecl.methods.base import MethodConfig, freeze_all, register_method
from codecl.methods.growth import (
    SLOTS_ATTRIBUTE, TaskSlots, activate_for_task, normal_like, plain_state, plain_t5, rebuild_and_load,
    save_added, slot_key, t5_stacks, trainable_in,
)


class FfnConfig(MethodConfig):
    per_task: bool = Field(True, description="new units per task, chosen by task id at evaluation")
    units: int = Field(64, ge=1, description="hidden units added to each selected FFN")
    position: Literal["encoder", "decoder", "both"] = Field("both", description="the stacks whose FFNs grow")
    layers: list[int] | None = Field(None, description="block indices whose FFN grows; null: every block")


class ExtraUnits(nn.Module):
    """`units` hidden units beside an FFN's own: input rows (two when gated) and output columns."""

    def __init__(self, ffn: nn.Module, units: int):
        super().__init__()
        gated = hasattr(ffn, "wi_0")
        first = ffn.wi_0 if gated else ffn.wi
        self.wi = normal_like((units, first.in_features), first.weight)
        self.wi_1 = normal_like((units, first.in_features), ffn.wi_1.weight) if gated else None
        self.wo = nn.Parameter(torch.zeros(ffn.wo.out_features, units))

    def forward(self, hidden_states: torch.Tensor, act, dropout: nn.Module) -> torch.Tensor:
        hidden = act(F.linear(hidden_states, self.wi))
        if self.wi_1 is not None:
            hidden = hidden * F.linear(hidden_states, self.wi_1)
        return F.linear(dropout(hidden), self.wo)


class WidenedFFN(nn.Module):
    """A T5 FFN (`DenseReluDense`) plus the active task's extra units: out = ffn(x) + extra(x)."""

    def __init__(self, ffn: nn.Module):
        super().__init__()
        self.base = ffn
        setattr(self, SLOTS_ATTRIBUTE, TaskSlots())

    @property
    def slots(self) -> TaskSlots:
        return getattr(self, SLOTS_ATTRIBUTE)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        output = self.base(hidden_states)
        extra = self.slots.current
        if extra is not None:
            output = output + extra(hidden_states, self.base.act, self.base.dropout)
        return output


class FfnExpansion:
    def __init__(self, config: FfnConfig):
        self.config = config
        self.per_task_parameters = config.per_task
        self.widened: list[WidenedFFN] = []

    def attach(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        for _, stack in t5_stacks(model, self.config.position):
            for index, block in enumerate(stack.block):
                if self.config.layers is None or index in self.config.layers:
                    feed_forward = block.layer[-1]
                    feed_forward.DenseReluDense = WidenedFFN(feed_forward.DenseReluDense)
                    self.widened.append(feed_forward.DenseReluDense)
        if not self.widened:
            raise UserError(f"ffn: layers {self.config.layers} selects no block of the model")
        return model

    def begin_task(self, model: nn.Module, task_index: int) -> list[nn.Parameter]:
        key = slot_key(self.config.per_task, task_index)
        for ffn in self.widened:
            if key not in ffn.slots.slots:
                ffn.slots.add(key, ExtraUnits(ffn.base, self.config.units))
            ffn.slots.active = key
        return trainable_in([ffn.slots.current for ffn in self.widened])

    def train_examples(self, task):
        return task.examples

    def mix_batch(self, examples, rng):
        return examples

    def extra_loss(self, model, batch):
        return None

    def end_task(self, model: nn.Module, task) -> None:
        freeze_all(model)

    def use_task(self, model: nn.Module, task_index: int) -> None:
        activate_for_task(model, task_index)

    def save(self, model: nn.Module, directory: Path, task_count: int) -> None:
        save_added(model, directory, task_count)

    def load(self, model: nn.Module, directory: Path) -> None:
        rebuild_and_load(self, model, directory)

    def export(self, model: nn.Module, task_index: int):
        every_block = self.config.layers is None or all(
            set(self.config.layers) >= set(range(len(stack.block))) for _, stack in t5_stacks(model, "both")
        )
        if self.config.position != "both" or not every_block:
            raise UserError(
                f"ffn: cannot export: units were added to some FFNs only (position {self.config.position}, "
                f"layers {self.config.layers}), and a Hugging Face T5 has one d_ff for every layer"
            )
        model = copy.deepcopy(model)
        self.use_task(model, task_index)
        state = plain_state(model)
        for name, module in model.named_modules():
            if isinstance(module, WidenedFFN) and module.slots.current is not None:
                prefix, extra = name.removeprefix("base_model.model."), module.slots.current
                for weight, new_rows in (("wi", extra.wi), ("wi_0", extra.wi), ("wi_1", extra.wi_1)):
                    if f"{prefix}.{weight}.weight" in state and new_rows is not None:
                        state[f"{prefix}.{weight}.weight"] = torch.cat([state[f"{prefix}.{weight}.weight"], new_rows], 0)
                state[f"{prefix}.wo.weight"] = torch.cat([state[f"{prefix}.wo.weight"], extra.wo], 1)
        config = copy.deepcopy(model.config)
        config.d_ff = model.config.d_ff + self.config.units
        return plain_t5(config, state)


register_method("ffn", FfnConfig, FfnExpansion, "wider FFNs: new hidden units per task, zero-initialised outputs")
