"""What the methods that grow a frozen T5 share: per-task slots, initialisation, saving and export.

A growing method adds modules next to the frozen base. With `per_task: true` every task gets its own
copy (task-aware: the task's id selects it for evaluation); with `per_task: false` the modules are
created once, at the first task, and trained on. New parameters are created in fp32 and stay there:
under bf16/fp16 autocast they are master weights, which is what keeps the expansions finite in fp16.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, T5Config, T5ForConditionalGeneration

from codecl.errors import UserError
from codecl.methods.base import freeze_all

SLOTS_ATTRIBUTE = "codecl_slots"
STATE_FILE = "added.safetensors"


def slot_key(per_task: bool, task_index: int) -> str:
    return f"task{task_index}" if per_task else "stream"


class TaskSlots(nn.Module):
    """Per-task versions of an added module, one active at a time; `active` None means none is used."""

    def __init__(self) -> None:
        super().__init__()
        self.slots = nn.ModuleDict()
        self.active: str | None = None

    def add(self, key: str, module: nn.Module) -> nn.Module:
        self.slots[key] = module
        self.active = key
        return module

    def activate_for_task(self, task_index: int) -> None:
        """The slot of `task_index`, else the most recent one (a task not trained yet)."""
        key = f"task{task_index}"
        self.active = key if key in self.slots else (list(self.slots)[-1] if self.slots else None)

    @property
    def current(self) -> nn.Module | None:
        return self.slots[self.active] if self.active is not None else None


def all_slots(model: nn.Module) -> Iterator[TaskSlots]:
    return (m for m in model.modules() if isinstance(m, TaskSlots))


def activate_for_task(model: nn.Module, task_index: int) -> None:
    for slots in all_slots(model):
        slots.activate_for_task(task_index)


def trainable_in(modules: list[nn.Module]) -> list[nn.Parameter]:
    """Unfreeze the given modules and return their parameters (each once)."""
    parameters = list({id(p): p for m in modules for p in m.parameters()}.values())
    for parameter in parameters:
        parameter.requires_grad_(True)
    return parameters


def normal_like(shape: tuple[int, ...], reference: torch.Tensor) -> nn.Parameter:
    """A new fp32 weight drawn at the scale of an existing one: N(0, std(reference)^2)."""
    std = float(reference.detach().float().std())
    return nn.Parameter(torch.randn(shape) * (std if math.isfinite(std) and std > 0 else 0.02))


def t5_stacks(model: PreTrainedModel, position: str) -> list[tuple[str, nn.Module]]:
    """('encoder', stack) and/or ('decoder', stack), by `position`: encoder, decoder or both."""
    names = {"encoder": ["encoder"], "decoder": ["decoder"], "both": ["encoder", "decoder"]}[position]
    return [(name, getattr(model, name)) for name in names]


def added_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every added parameter once, by its name under a TaskSlots (a module may be reachable twice:
    an added block sits both in its slot and in the stack it runs in)."""
    chosen: dict[int, tuple[str, nn.Parameter]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if f".{SLOTS_ATTRIBUTE}." in f".{name}" and id(parameter) not in chosen:
            chosen[id(parameter)] = (name, parameter)
    return dict(chosen.values())


def save_added(model: nn.Module, directory: Path, task_count: int) -> None:
    """Every added tensor in one safetensors file, and how many tasks made them."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().contiguous().cpu() for name, p in added_parameters(model).items()}
    save_file(tensors, str(directory / STATE_FILE))
    (directory / "codecl_method.json").write_text(json.dumps({"task_count": task_count}))


def load_added(model: nn.Module, directory: Path) -> None:
    """Load what `save_added` wrote into a model whose slots were already rebuilt."""
    path = directory / STATE_FILE
    if not path.is_file():
        raise UserError(f"checkpoint {directory}: no {STATE_FILE} in it")
    tensors = load_file(str(path))
    parameters = added_parameters(model)
    if set(tensors) != set(parameters):
        missing, unexpected = sorted(set(parameters) - set(tensors)), sorted(set(tensors) - set(parameters))
        raise UserError(f"checkpoint {path}: does not match the method's modules (missing {missing[:2]}, unexpected {unexpected[:2]})")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(tensors[name])


def rebuild_and_load(method, model: nn.Module, directory: Path) -> None:
    """Recreate the slots of every saved task (as training did), then load their weights. The model is
    left as `end_task` leaves it, so the next task goes on from it: nothing trainable, and every slot on
    the base weights' device (`begin_task` makes them on the CPU and training moves them; a loaded model
    may be evaluated before it trains again)."""
    device = next(model.parameters()).device
    for task_index in range(saved_task_count(directory)):
        method.begin_task(model, task_index)
    load_added(model, directory)
    for slots in all_slots(model):
        slots.to(device)  # in place: a module shared by two slots or by a slot and a stack stays shared
    freeze_all(model)
    method.use_task(model, 0)


def base_name(name: str) -> str:
    """A parameter's name in the plain model, whatever codecl or PEFT wrapped around it."""
    name = name.removeprefix("base_model.model.")
    for wrapper in (".inner.", ".base.", ".base_layer."):
        name = name.replace(wrapper, ".")
    return name


def plain_state(model: nn.Module, keep_added: bool = False) -> dict[str, torch.Tensor]:
    """The model's tensors under their plain names. Added tensors are left out (they are merged into
    the plain weights by the method), unless `keep_added`: added blocks are plain weights as they are."""
    added = {p.data_ptr() for p in added_parameters(model).values()}
    return {
        base_name(name): tensor for name, tensor in model.state_dict().items()
        if f".{SLOTS_ATTRIBUTE}." not in f".{name}" and "lora_" not in name
        and (keep_added or tensor.data_ptr() not in added)
    }


def saved_task_count(directory: Path) -> int:
    path = directory / "codecl_method.json"
    if not path.is_file():
        raise UserError(f"checkpoint {directory}: no codecl_method.json in it")
    return int(json.loads(path.read_text())["task_count"])


def plain_t5(config: T5Config, state: dict[str, torch.Tensor]) -> T5ForConditionalGeneration:
    """A stock Hugging Face T5 with this config and these weights, every key accounted for."""
    model = T5ForConditionalGeneration(config)
    state = {name: tensor.detach().clone() for name, tensor in state.items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
        state.pop("encoder.embed_tokens.weight", None)
        state.pop("decoder.embed_tokens.weight", None)
    problems = model.load_state_dict(state, strict=False)
    allowed = {"lm_head.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    if set(problems.missing_keys) - allowed or problems.unexpected_keys:
        raise RuntimeError(f"export left weights unset {problems.missing_keys[:3]} or unused {problems.unexpected_keys[:3]}")
    return model.eval()
