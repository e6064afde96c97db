"""`heads`: attention-head expansion. Each selected T5 attention gets `heads` more heads per task.

Every new head has its own q, k and v projections, drawn at the scale of the existing ones, and
zero-initialised output columns, so the model computes exactly what it computed before and the base
heads stay bit-identical. HF's own `T5Attention.forward` still runs, so everything T5 passes it (the
mask, the shared position bias, the KV cache of `generate()`) is handled as for any T5: the wrapper
widens q/k/v/o for the active task and hands the attention a position bias for all its heads.

Relative position bias: T5 computes one bias table in each stack's first block and shares it with
every later block. New self-attention heads get their own trainable slice of that table, one per stack
and task, initialised to the mean of the existing heads' columns; cross-attention has no position bias
in T5, so there the new heads get none either. The bias passed on to the next block is the base heads'
alone, so blocks without new heads are untouched. Exported, a model whose every attention grew alike
is a plain T5 with more `num_heads`.
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
    save_added, slot_key, trainable_in,
)

ATTENTION_KINDS = {"encoder": ("encoder", "SelfAttention"), "decoder": ("decoder", "SelfAttention"), "cross": ("decoder", "EncDecAttention")}


class HeadsConfig(MethodConfig):
    per_task: bool = Field(True, description="new heads per task, chosen by task id at evaluation")
    heads: int = Field(2, ge=1, description="heads added to each selected attention")
    attentions: list[Literal["encoder", "decoder", "cross"]] = Field(
        ["encoder", "decoder", "cross"], min_length=1, description="encoder self, decoder self and/or cross attention"
    )
    layers: list[int] | None = Field(None, description="block indices whose attentions grow; null: every block")


class NewHeads(nn.Module):
    """One task's extra heads in one attention: q/k/v rows and output columns (zero)."""

    def __init__(self, attention: "ExpandedAttention", heads: int, bias: nn.Embedding | None):
        super().__init__()
        width, d_model = heads * attention.inner.key_value_proj_dim, attention.inner.d_model
        self.heads = heads
        for name in "qkv":
            setattr(self, name, normal_like((width, d_model), attention.base_projections[name].weight))
        self.o = nn.Parameter(torch.zeros(d_model, width))
        self.bias = bias  # shared by the stack's self-attentions; None for cross-attention


class WithNewRows(nn.Module):
    """q, k or v over all heads: the base projection's rows, then the new heads' rows."""

    def __init__(self, base: nn.Linear, new: NewHeads, which: str):
        super().__init__()
        self.base, self.new, self.which = base, new, which

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.base(hidden_states), F.linear(hidden_states, getattr(self.new, self.which))], dim=-1)


class WithNewColumns(nn.Module):
    """o over all heads: the base heads through the base projection, plus the new heads' columns."""

    def __init__(self, base: nn.Linear, new: NewHeads):
        super().__init__()
        self.base, self.new = base, new

    def forward(self, attended: torch.Tensor) -> torch.Tensor:
        split = self.base.in_features
        return self.base(attended[..., :split]) + F.linear(attended[..., split:], self.new.o)


class ExpandedAttention(nn.Module):
    """Wraps a `T5Attention`: same call, same returns, more heads when a task's heads are active."""

    def __init__(self, attention: nn.Module):
        super().__init__()
        self.inner = attention
        self.base_projections = {name: getattr(attention, name) for name in "qkvo"}  # plain dict: no re-registration
        self.base_heads = attention.n_heads
        setattr(self, SLOTS_ATTRIBUTE, TaskSlots())

    @property
    def slots(self) -> TaskSlots:
        return getattr(self, SLOTS_ATTRIBUTE)

    def install(self) -> None:
        """Point the attention's q/k/v/o and head count at the base plus the active task's heads."""
        new, inner = self.slots.current, self.inner
        for name in "qkv":
            base = self.base_projections[name]
            setattr(inner, name, base if new is None else WithNewRows(base, new, name))
        inner.o = self.base_projections["o"] if new is None else WithNewColumns(self.base_projections["o"], new)
        inner.n_heads = self.base_heads + (new.heads if new is not None else 0)
        inner.inner_dim = inner.n_heads * inner.key_value_proj_dim

    def _base_bias(self, hidden_states, key_value_states, cache) -> torch.Tensor:
        """The bias T5 would compute for the base heads (only the stack's first attention computes)."""
        inner, query_length = self.inner, hidden_states.shape[1]
        past = cache.get_seq_length(inner.layer_idx) if cache is not None and key_value_states is None else 0
        key_length = key_value_states.shape[1] if key_value_states is not None else query_length + past
        if inner.has_relative_attention_bias:
            return inner.compute_bias(query_length, key_length, device=hidden_states.device, past_seen_tokens=past)
        return torch.zeros((1, self.base_heads, query_length, key_length), device=hidden_states.device, dtype=hidden_states.dtype)

    def _new_bias(self, base_bias: torch.Tensor, new: NewHeads) -> torch.Tensor:
        query_length, key_length = base_bias.shape[-2:]
        if new.bias is None:
            return base_bias.new_zeros((1, new.heads, query_length, key_length))
        inner = self.inner
        # Queries are the last `query_length` positions of `key_length` (earlier ones are cached).
        context = torch.arange(query_length, device=base_bias.device)[:, None] + (key_length - query_length)
        memory = torch.arange(key_length, device=base_bias.device)[None, :]
        buckets = inner._relative_position_bucket(
            memory - context, bidirectional=not inner.is_decoder,
            num_buckets=inner.relative_attention_num_buckets, max_distance=inner.relative_attention_max_distance,
        )
        return new.bias(buckets).permute(2, 0, 1).unsqueeze(0).to(base_bias.dtype)

    def forward(self, hidden_states, mask=None, key_value_states=None, position_bias=None, cache=None, **kwargs):
        new = self.slots.current
        if new is None:
            return self.inner(hidden_states, mask=mask, key_value_states=key_value_states,
                              position_bias=position_bias, cache=cache, **kwargs)
        cache = cache if cache is not None else kwargs.pop("past_key_values", None)
        base_bias = position_bias if position_bias is not None else self._base_bias(hidden_states, key_value_states, cache)
        all_bias = torch.cat([base_bias, self._new_bias(base_bias, new)], dim=1)
        output, _, weights = self.inner(hidden_states, mask=mask, key_value_states=key_value_states,
                                        position_bias=all_bias, cache=cache, **kwargs)
        return output, base_bias, weights


class HeadExpansion:
    def __init__(self, config: HeadsConfig):
        self.config = config
        self.per_task_parameters = config.per_task
        self.expanded: list[tuple[str, ExpandedAttention]] = []  # (kind, attention)
        self.bias_slots: dict[str, TaskSlots] = {}  # stack -> the new heads' bias slices, per task

    def attach(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        for kind in self.config.attentions:
            stack_name, attribute = ATTENTION_KINDS[kind]
            stack = getattr(model, stack_name)
            if kind != "cross" and stack_name not in self.bias_slots:
                self.bias_slots[stack_name] = TaskSlots()
                setattr(stack, SLOTS_ATTRIBUTE, self.bias_slots[stack_name])
            for index, block in enumerate(stack.block):
                if self.config.layers is None or index in self.config.layers:
                    sublayer = block.layer[1 if kind == "cross" else 0]
                    wrapped = ExpandedAttention(getattr(sublayer, attribute))
                    setattr(sublayer, attribute, wrapped)
                    self.expanded.append((kind, wrapped))
        if not self.expanded:
            raise UserError(f"heads: layers {self.config.layers} selects no block of the model")
        return model

    def _bias_table(self, model: nn.Module, stack_name: str) -> nn.Embedding:
        """The stack's relative-position table for new heads: each column the mean of the base heads'."""
        first = getattr(model, stack_name).block[0].layer[0].SelfAttention
        table = (first.inner if isinstance(first, ExpandedAttention) else first).relative_attention_bias.weight
        bias = nn.Embedding(table.shape[0], self.config.heads)
        with torch.no_grad():
            bias.weight.copy_(table.detach().float().mean(dim=1, keepdim=True).expand(-1, self.config.heads))
        return bias

    def begin_task(self, model: nn.Module, task_index: int) -> list[nn.Parameter]:
        key = slot_key(self.config.per_task, task_index)
        for stack_name, slots in self.bias_slots.items():
            if key not in slots.slots:
                slots.add(key, self._bias_table(model, stack_name))
            slots.active = key
        for kind, attention in self.expanded:
            if key not in attention.slots.slots:
                bias = None if kind == "cross" else self.bias_slots[ATTENTION_KINDS[kind][0]].current
                attention.slots.add(key, NewHeads(attention, self.config.heads, bias))
            attention.slots.active = key
            attention.install()
        return trainable_in([attention.slots.current for _, attention in self.expanded])

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
        for module in model.modules():
            if isinstance(module, ExpandedAttention):
                module.install()

    def save(self, model: nn.Module, directory: Path, task_count: int) -> None:
        save_added(model, directory, task_count)

    def load(self, model: nn.Module, directory: Path) -> None:
        rebuild_and_load(self, model, directory)

    def export(self, model: nn.Module, task_index: int):
        deepest = max(len(model.encoder.block), len(model.decoder.block))
        every_block = self.config.layers is None or set(self.config.layers) >= set(range(deepest))
        if set(self.config.attentions) != set(ATTENTION_KINDS) or not every_block:
            raise UserError(
                f"heads: cannot export: heads were added to some attentions only (attentions {self.config.attentions}, "
                f"layers {self.config.layers}), and a Hugging Face T5 has one num_heads for every attention"
            )
        model = copy.deepcopy(model)
        self.use_task(model, task_index)
        state = plain_state(model)
        for name, module in model.named_modules():
            if isinstance(module, ExpandedAttention):
                prefix, new = f"{name}.", module.slots.current
                for which in "qkv":
                    state[f"{prefix}{which}.weight"] = torch.cat([state[f"{prefix}{which}.weight"], getattr(new, which)], 0)
                state[f"{prefix}o.weight"] = torch.cat([state[f"{prefix}o.weight"], new.o], 1)
                if module.inner.has_relative_attention_bias:
                    key = f"{prefix}relative_attention_bias.weight"
                    state[key] = torch.cat([state[key], new.bias.weight], 1)
        config = copy.deepcopy(model.config)
        config.num_heads = model.config.num_heads + self.config.heads
        return plain_t5(config, state)


register_method("heads", HeadsConfig, HeadExpansion, "more attention heads per task, own position-bias slice")
