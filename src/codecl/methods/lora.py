"""`lora`: low-rank adapters on a frozen base, through PEFT (Hu et al. 2021, arXiv:2106.09685).

With `per_task: true` every task gets its own adapter, and evaluating a task activates that task's
adapter (task-aware); an earlier adapter is never trained again, so earlier tasks cannot be forgotten.
With `per_task: false` one adapter is trained on through the whole stream.
Adapters are saved in PEFT's own format: `PeftModel.from_pretrained(base, DIR/<adapter>)` loads one.
Adapters go on the blocks the model has when it is attached, never on blocks another method adds later.
"""

import copy
import re
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model, load_peft_weights, set_peft_model_state_dict
from pydantic import Field
from torch import nn

from codecl.errors import UserError
from codecl.methods.base import MethodConfig, freeze_all, register_method


class LoraMethodConfig(MethodConfig):
    per_task: bool = Field(True, description="a new adapter per task, chosen by task id at evaluation")
    r: int = Field(8, ge=1, description="adapter rank")
    alpha: float = Field(16.0, gt=0, description="scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] = Field(
        ["q", "v"], min_length=1, description="names of the linear layers that get adapters (T5: q k v o wi wo)"
    )


def base_blocks_pattern(model: nn.Module, targets: list[str]) -> str:
    """A PEFT target regex for `targets` inside the encoder and decoder blocks that exist now."""
    stacks = []
    for name in ("encoder", "decoder"):
        stack = getattr(model, name, None)
        if stack is not None and hasattr(stack, "block"):
            indices = "|".join(str(i) for i in range(len(stack.block)))
            stacks.append(rf"{name}\.block\.({indices})")
    names = "|".join(re.escape(t) for t in targets)
    return rf"(.*\.)?({'|'.join(stacks)})\..*\.({names})"


def train_only(model: PeftModel, adapter: str) -> list[nn.Parameter]:
    """Freeze everything but `adapter`'s A and B matrices, and return those."""
    freeze_all(model)
    # Match PEFT's own parameter names exactly: a bare ".{adapter}." could also hit base weights.
    markers = (f"lora_A.{adapter}.", f"lora_B.{adapter}.")
    trainable = [p for name, p in model.named_parameters() if any(m in name for m in markers)]
    for parameter in trainable:
        parameter.requires_grad_(True)
    return trainable


class Lora:
    def __init__(self, config: LoraMethodConfig):
        self.config = config
        self.per_task_parameters = config.per_task
        self.adapters: list[str] = []
        self.target_pattern = ""

    def _peft_config(self) -> LoraConfig:
        return LoraConfig(
            task_type="SEQ_2_SEQ_LM",
            r=self.config.r,
            lora_alpha=self.config.alpha,
            lora_dropout=self.config.dropout,
            target_modules=self.target_pattern,
        )

    def attach(self, model: nn.Module) -> nn.Module:
        self.target_pattern = base_blocks_pattern(model, self.config.target_modules)
        self.adapters = ["task0" if self.config.per_task else "stream"]
        try:
            peft_model = get_peft_model(model, self._peft_config(), adapter_name=self.adapters[0])
        except ValueError as error:
            raise UserError(f"lora: target_modules {self.config.target_modules}: {str(error).splitlines()[0]}") from None
        freeze_all(peft_model)
        return peft_model

    def begin_task(self, model: PeftModel, task_index: int) -> list[nn.Parameter]:
        if self.config.per_task and task_index >= len(self.adapters):
            self.adapters.append(f"task{task_index}")
            model.add_adapter(self.adapters[-1], self._peft_config())
        adapter = self.adapters[min(task_index, len(self.adapters) - 1)]
        model.set_adapter(adapter)
        return train_only(model, adapter)

    def train_examples(self, task):
        return task.examples

    def mix_batch(self, examples, rng):
        return examples

    def extra_loss(self, model, batch):
        return None

    def end_task(self, model: nn.Module, task) -> None:
        pass

    def use_task(self, model: PeftModel, task_index: int) -> None:
        model.set_adapter(self.adapters[min(task_index, len(self.adapters) - 1)])
        freeze_all(model)

    def save(self, model: PeftModel, directory: Path, task_count: int) -> None:
        model.save_pretrained(directory, selected_adapters=list(self.adapters))

    def load(self, model: PeftModel, directory: Path) -> None:
        names = [p.name for p in sorted(directory.glob("*")) if (p / "adapter_config.json").is_file()]
        if not names:
            raise UserError(f"checkpoint {directory}: no PEFT adapter folders in it")
        if self.config.per_task:
            names.sort(key=lambda name: int(name.removeprefix("task")))
        for name in names:
            if name not in model.peft_config:
                model.add_adapter(name, self._peft_config())
            set_peft_model_state_dict(model, load_peft_weights(str(directory / name)), adapter_name=name)
        self.adapters = names
        model.set_adapter(names[0])
        freeze_all(model)

    def export(self, model: PeftModel, task_index: int):
        adapter = self.adapters[min(task_index, len(self.adapters) - 1)]
        merged = copy.deepcopy(model)
        merged.set_adapter(adapter)
        return merged.merge_and_unload(adapter_names=[adapter])


register_method("lora", LoraMethodConfig, Lora, "LoRA adapters (PEFT), one per task or one shared")

