"""`lora`: low-rank adapters on a frozen base, through PEFT (Hu et al. 2021, arXiv:2106.09685).

With `per_task: true` every task gets its own adapter, and evaluating a task activates that task's
adapter (task-aware); an earlier adapter is never trained again, so earlier tasks cannot be forgotten.
With `per_task: false` one adapter is trained on through the whole stream.
Adapters are saved in PEFT's own format: `PeftModel.from_pretrained(base, DIR/<adapter>)` loads one.
"""

from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from pydantic import Field
from torch import nn

from codecl.methods.base import MethodConfig, freeze_all, register_method


class LoraMethodConfig(MethodConfig):
    per_task: bool = Field(True, description="a new adapter per task, chosen by task id at evaluation")
    r: int = Field(8, ge=1, description="adapter rank")
    alpha: float = Field(16.0, gt=0, description="scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] = Field(
        ["q", "v"], min_length=1, description="names of the linear layers that get adapters (T5: q k v o wi wo)"
    )


class Lora:
    def __init__(self, config: LoraMethodConfig):
        self.config = config
        self.adapters: list[str] = []

    def _peft_config(self) -> LoraConfig:
        return LoraConfig(
            task_type="SEQ_2_SEQ_LM",
            r=self.config.r,
            lora_alpha=self.config.alpha,
            lora_dropout=self.config.dropout,
            target_modules=list(self.config.target_modules),
        )

    def attach(self, model: nn.Module) -> nn.Module:
        self.adapters = ["task0" if self.config.per_task else "stream"]
        peft_model = get_peft_model(model, self._peft_config(), adapter_name=self.adapters[0])
        freeze_all(peft_model)
        return peft_model

    def begin_task(self, model: PeftModel, task_index: int) -> list[nn.Parameter]:
        if self.config.per_task and task_index > 0:
            self.adapters.append(f"task{task_index}")
            model.add_adapter(self.adapters[-1], self._peft_config())
        adapter = self.adapters[-1]
        model.set_adapter(adapter)
        freeze_all(model)
        # Match PEFT's own parameter names exactly: a bare ".{adapter}." would also hit base weights
        # whose names happen to contain it.
        markers = (f"lora_A.{adapter}.", f"lora_B.{adapter}.")
        trainable = [p for name, p in model.named_parameters() if any(m in name for m in markers)]
        for parameter in trainable:
            parameter.requires_grad_(True)
        return trainable

    def extra_loss(self, model, batch):
        return None

    def end_task(self, model: nn.Module, task_index: int) -> None:
        pass

    def use_task(self, model: PeftModel, task_index: int) -> None:
        model.set_adapter(self.adapters[min(task_index, len(self.adapters) - 1)])
        freeze_all(model)

    def save(self, model: PeftModel, directory: Path) -> None:
        model.save_pretrained(directory, selected_adapters=list(self.adapters))


register_method("lora", LoraMethodConfig, Lora, "LoRA adapters (PEFT), one per task or one shared")
