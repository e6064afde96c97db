"""`ewc`: elastic weight consolidation (Kirkpatrick et al. 2017, PNAS, arXiv:1612.00796), online
(Schwarz et al. 2018, "Progress & Compress", arXiv:1805.06370), on full fine-tuning or one shared LoRA.

After task i, with θ the parameters the inner method trains (every weight, or the shared adapter):

    F_i = mean over S sampled training examples (x, y) of (∂ℓ(x, y)/∂θ)²    (diagonal empirical Fisher)
    F̃  ← γ·F̃ + F_i,    θ* ← θ                                            (online accumulation)

and every later training step adds  ½·λ·Σ F̃·(θ − θ*)²  to the task loss.

ℓ(x, y) is the mean per-token log-likelihood of the target: the task loss's own normalisation, so
the penalty is in units of the task loss and the Fisher does not grow with target length. Choosing λ:
the literature's λ of 0.1 to 400 comes from classification, where an example is one prediction. Here
an example is T token predictions whose gradients are nearly uncorrelated, so the square of their mean
is about 1/T of the per-token Fisher that approximates the task loss's curvature (measured on the
shipped tiny base, 20 Python examples of 77 tokens on average: a ratio of 53). λ here thus stands for
about λ/50 in the literature's units, and the default λ = 1000 for about 20, inside its range; the
lead tunes it on the demo. Measured on the shipped tiny base after one epoch of its first task (1,000
Python examples), the mean Fisher entry is 3.5e-6 over 1.4M weights (median 4e-8, sum 5.1) for `full`
and 4.5e-6 (sum 0.40) for `lora` (r 8, all six projections): at λ = 1000, moving every weight by 0.01
costs ½·1000·5.1·1e-4 ≈ 0.26 of loss, against a task loss near 3.5.

Schwarz et al. also multiply F̃ by γ inside the penalty; that is a constant factor, folded into λ here.
γ = 1 is plain accumulation: one penalty, the summed Fisher anchored at the latest θ*, Huszár's (2018,
PNAS) correction of Kirkpatrick's one penalty per task. F̃ and θ* are plain tensors held by
the method, not model buffers, and `save` writes them to `ewc.safetensors` beside the inner method's
files, so a loaded method continues identically.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from pydantic import Field
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from codecl.data.batching import collate
from codecl.errors import UserError
from codecl.methods.base import register_method
from codecl.methods.on_base import OnBaseConfig, build_base

STATE = "ewc.safetensors"
FISHER_SEED = 1612_00796  # the sample of a task's examples depends on the task index only, never on the run


class EwcConfig(OnBaseConfig):
    ewc_lambda: float = Field(1000.0, ge=0, description="λ: weight of the penalty ½·λ·Σ F̃·(θ − θ*)²")
    gamma: float = Field(1.0, ge=0, le=1, description="online decay γ of earlier tasks' Fisher (1: plain sum)")
    fisher_examples: int = Field(200, ge=1, description="training examples per task the Fisher is estimated on")


def diagonal_fisher(
    model: nn.Module, parameters: dict[str, nn.Parameter], examples: list, pad_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Mean over `examples` of the squared gradient of each example's mean per-token log-likelihood.

    One example per forward and backward: the empirical Fisher needs per-example gradients, and the
    square of a batch's mean gradient is not the mean of the squares. Dropout is off (eval mode), so
    the Fisher is that of the model being anchored; every module's train/eval mode is restored after.
    A parameter the loss does not reach gets exactly 0."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    sums = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in parameters.items()}
    try:
        with torch.enable_grad():
            for example in examples:
                batch = collate([example.source_ids], [example.target_ids], pad_id)
                # HF's loss is the mean per-token negative log-likelihood: −ℓ, whose square is ℓ's.
                loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
                grads = torch.autograd.grad(loss, list(parameters.values()), allow_unused=True)
                for total, grad in zip(sums.values(), grads):
                    if grad is not None:
                        total.add_(grad.float().square())
    finally:
        for module, training in modes.items():
            module.train(training)
    # A task with no examples gives no evidence: a zero Fisher, not a division by zero.
    return {name: total / max(len(examples), 1) for name, total in sums.items()}


class Ewc:
    def __init__(self, config: EwcConfig):
        self.config = config
        self.per_task_parameters = False
        self.inner = build_base(config)
        self.trained_names: list[str] = []
        self.fisher: dict[str, torch.Tensor] = {}  # F̃, by parameter name
        self.anchor: dict[str, torch.Tensor] = {}  # θ*, by parameter name
        self.tasks_seen = 0
        self.terms: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []  # (θ, F̃, θ*) bound to a model
        self.bound_to: int | None = None  # id of the model `terms` point into

    def attach(self, model: nn.Module) -> nn.Module:
        return self.inner.attach(model)

    def begin_task(self, model: nn.Module, task_index: int) -> list[nn.Parameter]:
        parameters = self.inner.begin_task(model, task_index)
        chosen = {id(p) for p in parameters}
        self.trained_names = [name for name, p in model.named_parameters() if id(p) in chosen]
        return parameters

    def train_examples(self, task):
        return self.inner.train_examples(task)

    def mix_batch(self, examples, rng):
        return examples

    def _bind(self, model: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]]:
        """(θ, F̃, θ*) triples for `model`, on θ's device: resolved by name once per model, not per step."""
        if self.bound_to != id(model) or (self.terms and self.terms[0][1].device != self.terms[0][0].device):
            named = dict(model.named_parameters())
            missing = [name for name in self.fisher if name not in named]
            if missing:
                raise UserError(f"ewc: the model has no parameter {missing[0]} that the Fisher was estimated for")
            for name in self.fisher:
                self.fisher[name] = self.fisher[name].to(named[name].device)
                self.anchor[name] = self.anchor[name].to(named[name].device)
            # In the model's order, not the dict's: a loaded F̃ comes back sorted by name, and the sum's
            # order decides its last bit.
            self.terms = [(p, self.fisher[name], self.anchor[name]) for name, p in named.items() if name in self.fisher]
            self.bound_to = id(model)
        return self.terms

    def extra_loss(self, model: nn.Module, batch) -> torch.Tensor | None:
        """½·λ·Σ F̃·(θ − θ*)²; None until a task has ended (nothing to anchor to yet)."""
        terms = self._bind(model)
        if not terms:
            return None
        penalty = sum((fisher * (parameter - anchor).square()).sum() for parameter, fisher, anchor in terms)
        return 0.5 * self.config.ewc_lambda * penalty

    def end_task(self, model: nn.Module, task) -> None:
        self.inner.end_task(model, task)
        named = dict(model.named_parameters())
        rng = random.Random(FISHER_SEED + task.index)
        sample = rng.sample(task.examples, min(self.config.fisher_examples, len(task.examples)))
        fisher = diagonal_fisher(model, {n: named[n] for n in self.trained_names}, sample, task.pad_id, task.device)
        for name, value in fisher.items():
            previous = self.fisher.get(name)
            self.fisher[name] = value if previous is None else self.config.gamma * previous.to(value.device) + value
        # Every penalised parameter is anchored where it is now; one not trained on this task has not moved.
        self.anchor = {name: named[name].detach().clone() for name in self.fisher}
        self.tasks_seen += 1
        self.bound_to = None

    def use_task(self, model: nn.Module, task_index: int) -> None:
        self.inner.use_task(model, task_index)

    def save(self, model: nn.Module, directory: Path, task_count: int) -> None:
        self.inner.save(model, directory, task_count)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"fisher/{n}": t.detach().cpu().contiguous() for n, t in self.fisher.items()}
        tensors |= {f"anchor/{n}": t.detach().cpu().contiguous() for n, t in self.anchor.items()}
        save_file(tensors, str(directory / STATE), metadata={"tasks_seen": str(self.tasks_seen)})

    def load(self, model: nn.Module, directory: Path) -> None:
        self.inner.load(model, directory)
        if not (directory / STATE).is_file():
            raise UserError(f"checkpoint {directory}: no {STATE} in it (EWC's Fisher and anchor)")
        with safe_open(str(directory / STATE), framework="pt") as state:
            tensors = {key: state.get_tensor(key) for key in state.keys()}
            self.tasks_seen = int((state.metadata() or {}).get("tasks_seen", 0))
        self.fisher = {k.removeprefix("fisher/"): t for k, t in tensors.items() if k.startswith("fisher/")}
        self.anchor = {k.removeprefix("anchor/"): t for k, t in tensors.items() if k.startswith("anchor/")}
        self.bound_to = None

    def export(self, model: nn.Module, task_index: int):
        return self.inner.export(model, task_index)


register_method("ewc", EwcConfig, Ewc, "elastic weight consolidation (online) on full fine-tuning or one LoRA")
