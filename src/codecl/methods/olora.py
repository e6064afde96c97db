"""`olora`: O-LoRA, one LoRA adapter per task kept in orthogonal subspaces (Wang et al., "Orthogonal Subspace
Learning for Language Model Continual Learning", Findings of EMNLP 2023, arXiv:2310.14152).

Task t adds a LoRA adapter (A_t ∈ R^{r×d_in}, B_t ∈ R^{d_out×r}) on the frozen base. The earlier adapters
are frozen but stay in the forward pass, in training and at inference, so every adapted layer computes

    h = W x + Σ_{i ≤ t} (alpha / r) · B_i A_i x

and no task id is needed at inference. Task t trains A_t and B_t only, on

    L = L_task + λ1 · Σ_layers Σ_{i < t} Σ_{j,k} |(A_i A_tᵀ)_{jk}|
               + λ2 · Σ_layers (‖A_t‖_F + ‖B_t‖_F)

The rows of A_i span the input directions adapter i reads; pushing every entry of A_i A_tᵀ (r × r) to zero
makes the new adapter read directions orthogonal to the old ones', so its update leaves what the earlier
adapters computed on their subspaces in place. The λ2 term follows the authors' released code
(github.com/cmnfriend/O-LoRA, `src/uie_trainer_lora.py`): the Frobenius norm of each new tensor, not
squared, summed over tensors. λ1 = 0.5 and λ2 = 0 are the values of the authors' scripts. Their T5 runs
use r = 8 on q and v with alpha = 32 and dropout 0.1; alpha and dropout here default to `lora`'s, so the
two methods compare at equal settings.

Not PEFT's `init_lora_weights="olora"`, which is an orthonormal initialisation of a single adapter.
Adapters are saved in PEFT's format, one folder per task; the export merges every adapter into the base.
"""

import copy
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, load_peft_weights, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from pydantic import Field
from torch import nn

from codecl.errors import UserError
from codecl.methods.base import MethodConfig, freeze_all, register_method
from codecl.methods.lora import base_blocks_pattern, train_only


class OLoraConfig(MethodConfig):
    r: int = Field(8, ge=1, description="rank of each task's adapter")
    alpha: float = Field(16.0, gt=0, description="scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] = Field(
        ["q", "v"], min_length=1, description="names of the linear layers that get adapters (the authors: q v)"
    )
    lambda_orthogonal: float = Field(
        0.5, ge=0, description="λ1: weight of Σ|A_old A_newᵀ|, the penalty on overlap with earlier adapters"
    )
    lambda_norm: float = Field(0.0, ge=0, description="λ2: weight of Σ‖W‖_F over the new adapter's A and B")


class OLora:
    def __init__(self, config: OLoraConfig):
        self.config = config
        # Every adapter is summed at inference: one model serves every task.
        self.per_task_parameters = False
        self.adapters: list[str] = []
        self.target_pattern = ""
        self.training_index = 0  # the adapter `begin_task` made trainable; `extra_loss` penalises it

    def _peft_config(self) -> LoraConfig:
        return LoraConfig(
            task_type="SEQ_2_SEQ_LM",
            r=self.config.r,
            lora_alpha=self.config.alpha,
            lora_dropout=self.config.dropout,
            target_modules=self.target_pattern,
        )

    def _activate(self, model: PeftModel, count: int) -> None:
        """Adapters 0..count-1 active (their outputs summed on every LoRA layer), all frozen."""
        # PeftModel.set_adapter takes one name; the LoRA model under it takes a list. inference_mode=True
        # because PEFT otherwise marks every active adapter trainable.
        model.base_model.set_adapter(self.adapters[:count], inference_mode=True)
        freeze_all(model)

    def attach(self, model: nn.Module) -> nn.Module:
        self.target_pattern = base_blocks_pattern(model, self.config.target_modules)
        self.adapters = ["task0"]
        try:
            peft_model = get_peft_model(model, self._peft_config(), adapter_name="task0")
        except ValueError as error:
            reason = str(error).splitlines()[0]
            raise UserError(f"olora: target_modules {self.config.target_modules}: {reason}") from None
        freeze_all(peft_model)
        return peft_model

    def begin_task(self, model: PeftModel, task_index: int) -> list[nn.Parameter]:
        if task_index >= len(self.adapters):
            self.adapters.append(f"task{task_index}")
            model.add_adapter(self.adapters[-1], self._peft_config())
        self.training_index = min(task_index, len(self.adapters) - 1)
        # The forward sees the sum of the earlier adapters and the new one, as in the paper.
        self._activate(model, self.training_index + 1)
        return train_only(model, self.adapters[self.training_index])

    def train_examples(self, task):
        return task.examples

    def mix_batch(self, examples, rng):
        return examples

    def extra_loss(self, model: PeftModel, batch) -> torch.Tensor | None:
        """λ1 Σ_layers Σ_{i<t} Σ|A_i A_tᵀ| + λ2 Σ‖W‖_F over A_t, B_t; None when both terms are absent."""
        orthogonal = self.config.lambda_orthogonal > 0 and self.training_index > 0
        norm = self.config.lambda_norm > 0
        if not (orthogonal or norm):
            return None
        new, old = self.adapters[self.training_index], self.adapters[: self.training_index]
        layers = [m for m in model.modules() if isinstance(m, LoraLayer) and new in m.lora_A]
        device = layers[0].lora_A[new].weight.device
        # In float32 whatever the loop's autocast: it costs one r×r product per layer, and bf16 inputs
        # would keep only 8 bits of each entry of A in the penalty and its gradient.
        with torch.autocast(device_type=device.type, enabled=False):
            total = torch.zeros((), device=device)
            for layer in layers:
                a_new = layer.lora_A[new].weight.float()
                if orthogonal:
                    # All earlier A's stacked: one (r·t × d_in)(d_in × r) product per layer.
                    a_old = torch.cat([layer.lora_A[name].weight for name in old]).float()
                    total = total + self.config.lambda_orthogonal * (a_old @ a_new.T).abs().sum()
                if norm:
                    b_new = layer.lora_B[new].weight.float()
                    total = total + self.config.lambda_norm * (torch.linalg.norm(a_new) + torch.linalg.norm(b_new))
        return total

    def end_task(self, model: nn.Module, task) -> None:
        pass

    def use_task(self, model: PeftModel, task_index: int) -> None:
        # Whatever the task: every adapter trained so far, summed (the method's inference needs no task id).
        self._activate(model, len(self.adapters))

    def save(self, model: PeftModel, directory: Path, task_count: int) -> None:
        model.save_pretrained(directory, selected_adapters=list(self.adapters))

    def load(self, model: PeftModel, directory: Path) -> None:
        names = [p.name for p in directory.glob("task*") if (p / "adapter_config.json").is_file()]
        if not names:
            raise UserError(f"checkpoint {directory}: no PEFT adapter folders task0, task1, ... in it")
        names.sort(key=lambda name: int(name.removeprefix("task")))
        for name in names:
            if name not in model.peft_config:
                model.add_adapter(name, self._peft_config())
            set_peft_model_state_dict(model, load_peft_weights(str(directory / name)), adapter_name=name)
        self.adapters = names
        self.training_index = len(names) - 1
        self._activate(model, len(names))

    def export(self, model: PeftModel, task_index: int):
        # W + Σ_i (alpha/r) B_i A_i in the base weights: the same function for every task.
        return copy.deepcopy(model).merge_and_unload(adapter_names=list(self.adapters))


register_method(
    "olora", OLoraConfig, OLora,
    "O-LoRA: a LoRA adapter per task, orthogonal to the earlier ones, all summed at inference",
)
