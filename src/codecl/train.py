"""The one training loop. It knows nothing of methods: it trains the parameters it is given.

AdamW, linear warmup then linear decay, gradient clipping, mixed precision and device placement
through `accelerate`, and a guard against steps that update nothing: a non-finite loss, a non-finite
gradient norm, or (fp16) a step the gradient scaler dropped for overflow. Such a step is skipped and
counted by cause, and `max_bad_steps` of them in a row stop the task with a failure that names the
step and the cause, so a method that overflows on every step fails instead of "finishing" as the
untouched base model. A failure is returned, never turned into a score.

The schedule advances on every planned step, skipped or not, so it always spans the planned steps and
ends at zero: skips shorten training, they never stretch the schedule past the data.

Every `checkpoint_every` planned steps the loop hands its whole state (`LoopState`) to `save_state`, and
`resume_from` such a state goes on from that step with the result the uninterrupted run would have
given, bit for bit: a run killed mid-task loses at most `checkpoint_every` steps, not the task.
"""

from __future__ import annotations

import copy
import math
import random
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
from accelerate import Accelerator
from torch import nn

from codecl.config import TrainConfig
from codecl.data.batching import collate, length_grouped_batches
from codecl.data.tasks import Example

ExtraLoss = Callable[[nn.Module, dict[str, torch.Tensor]], "torch.Tensor | None"]
MixBatch = Callable[[list[Example], random.Random], list[Example]]


def keep_batch(examples: list[Example], rng: random.Random) -> list[Example]:
    return examples


SKIP_CAUSES = ("non_finite_loss", "non_finite_gradient", "scaler_overflow")


@dataclass
class LogPoint:
    """One log line's numbers: the mean loss of the steps since the last line, the learning rate after
    planned step `step`, and tokens/s over those steps."""

    step: int  # planned steps done
    steps: int  # planned steps in the task
    loss: float
    learning_rate: float
    tokens_per_second: float


@dataclass
class TrainResult:
    steps: int  # optimiser updates that happened
    skipped_steps: int  # planned steps that updated nothing, all causes
    tokens: int
    seconds: float
    final_loss: float | None
    failure: str | None = None
    skipped_by_cause: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_CAUSES, 0))
    final_learning_rate: float | None = None  # where the schedule ended: 0 when every planned step ran
    curve: list[LogPoint] = field(default_factory=list)  # every `log_every` steps, and the last
    planned_steps: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class LoopState:
    """Everything `train_task` needs to go on after planned step `step` as if it had never stopped.
    Tensors are CPU copies, so a state stays what it was while training goes on; `torch.save` writes one
    (`torch.load(..., weights_only=False)` reads it back: it holds this class and `TrainResult`)."""

    step: int  # planned steps done: the index of the next step
    total_steps: int  # the plan it belongs to; resuming under another plan is refused
    rng_state: tuple  # the loop's random.Random: batch order and `mix_batch` (replay) draw from it
    batches: list[list[int]]  # what is left of the current epoch's batches
    result: TrainResult  # so far; `seconds` included, and it goes on counting after a resume
    bad_in_a_row: int
    recent_losses: list[float]  # losses since the last log line
    tokens_at_log: int
    seconds_at_log: float
    optimizer_state: dict
    scheduler_state: dict
    scaler_state: dict | None  # fp16's gradient scaler, None without one
    parameter_values: list[torch.Tensor]  # in the order of `train_task`'s `parameters`
    torch_rng_state: torch.Tensor  # dropout draws from torch's generators
    cuda_rng_state: torch.Tensor | None  # the current device's: a resumed job may see another number of GPUs


def cpu_copy(value):
    """`value` with every tensor in it (nested in dicts, lists and tuples) copied to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(v) for v in value)
    return value


def restore_tensors(state: LoopState, parameters: list[nn.Parameter], optimizer, scheduler, scaler) -> None:
    """Load the tensor side of `state` into the prepared optimiser and the rest; the RNGs last, so that
    nothing between here and the first resumed step draws from them."""
    with torch.no_grad():
        for parameter, value in zip(parameters, state.parameter_values, strict=True):
            parameter.copy_(value)
    optimizer.load_state_dict(state.optimizer_state)
    scheduler.load_state_dict(state.scheduler_state)
    if state.scaler_state is not None:
        scaler.load_state_dict(state.scaler_state)
    torch.set_rng_state(state.torch_rng_state)
    if state.cuda_rng_state is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state.cuda_rng_state)


def warmup_then_linear_decay(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: (s+1)/warmup while warming up, then linear down to 0 at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def useful_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Non-pad input tokens plus the label tokens the loss sees: what tokens/s counts."""
    return int(batch["attention_mask"].sum() + (batch["labels"] != -100).sum())


def fused_adamw(accelerator: Accelerator) -> bool:
    """AdamW's fused kernel updates every tensor in one pass instead of a dozen small ops per tensor (on
    the tiny model, 3 ms of optimiser time per step instead of 10, profiled). Not under fp16's gradient
    scaler: a fused AdamW skips an overflowing step inside the kernel, where `step_was_skipped` cannot
    see it, and the guard below would miss every dropped step."""
    return accelerator.device.type in ("cpu", "cuda") and accelerator.scaler is None


@contextmanager
def prepared(accelerator: Accelerator, model: nn.Module, optimizer: torch.optim.Optimizer):
    """accelerate's wrappers of one task's model and optimiser, released afterwards even when a method
    raises: the accelerator serves every method of a run, and what it still holds would count in the
    next method's memory."""
    train_model, optimizer = accelerator.prepare(model, optimizer)
    try:
        yield train_model, optimizer
    finally:
        accelerator.unwrap_model(train_model, keep_fp32_wrapper=False).eval()
        accelerator.free_memory()


def train_task(
    model: nn.Module,
    parameters: list[nn.Parameter],
    examples: list[Example],
    config: TrainConfig,
    *,
    learning_rate: float,
    accelerator: Accelerator,
    pad_id: int,
    seed: int,
    extra_loss: ExtraLoss,
    log: Callable[[str], None],
    mix_batch: MixBatch = keep_batch,
    checkpoint_every: int = 0,
    save_state: Callable[[LoopState], None] | None = None,
    resume_from: LoopState | None = None,
    on_log: Callable[[LogPoint], None] | None = None,
) -> TrainResult:
    """Train `parameters` of `model` on `examples` for `config.epochs` epochs; `mix_batch` may add
    examples to each batch the loop draws (replay), `extra_loss` a term to each loss (a regulariser).

    `save_state` gets the loop's state after every `checkpoint_every`-th planned step but the last (0:
    never); `resume_from` one such state goes on from its step, given the same model as at the task's
    start and the same arguments. `on_log` hears every log line's numbers, which the result's `curve` keeps."""
    rng = random.Random(seed)
    lengths = [(len(e.target_ids), len(e.source_ids)) for e in examples]
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total_steps = max(1, math.ceil(config.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(
        parameters, lr=learning_rate, weight_decay=config.weight_decay, fused=fused_adamw(accelerator)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_then_linear_decay(total_steps, int(config.warmup_fraction * total_steps))
    )
    with prepared(accelerator, model, optimizer) as (train_model, optimizer):
        train_model.train()

        first_step, batches, result = 0, [], TrainResult(0, 0, 0, 0.0, None, planned_steps=total_steps)
        bad_in_a_row, recent_losses, tokens_at_log, seconds_at_log = 0, [], 0, 0.0
        if resume_from is not None:
            if resume_from.total_steps != total_steps:
                raise ValueError(f"a state of {resume_from.total_steps} planned steps resumed under {total_steps}")
            first_step, batches = resume_from.step, [list(b) for b in resume_from.batches]
            result, recent_losses = copy.deepcopy(resume_from.result), list(resume_from.recent_losses)
            bad_in_a_row, tokens_at_log, seconds_at_log = (
                resume_from.bad_in_a_row, resume_from.tokens_at_log, resume_from.seconds_at_log
            )
            rng.setstate(resume_from.rng_state)
            restore_tensors(resume_from, parameters, optimizer, scheduler, accelerator.scaler)
        # Seconds count from the task's start, across a resume.
        started = time.perf_counter() - result.seconds

        def state_after(step: int) -> LoopState:
            so_far = copy.deepcopy(result)
            so_far.seconds = time.perf_counter() - started
            return LoopState(
                step + 1, total_steps, rng.getstate(), [list(b) for b in batches], so_far,
                bad_in_a_row, list(recent_losses), tokens_at_log, seconds_at_log,
                cpu_copy(optimizer.state_dict()), cpu_copy(scheduler.state_dict()),
                cpu_copy(accelerator.scaler.state_dict()) if accelerator.scaler is not None else None,
                cpu_copy(parameters), torch.get_rng_state(),
                torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            )

        for step in range(first_step, total_steps):
            if not batches:
                batches = length_grouped_batches(lengths, config.batch_size, rng)
            chosen = mix_batch([examples[i] for i in batches.pop()], rng)
            batch = collate([e.source_ids for e in chosen], [e.target_ids for e in chosen], pad_id)
            # Counted on the host copy: on a GPU, counting the device copy would wait for the device.
            result.tokens += useful_tokens(batch)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.autocast():
                loss = train_model(**batch).loss
                extra = extra_loss(model, batch)
                if extra is not None:
                    loss = loss + extra
            cause = None if torch.isfinite(loss) else ("non_finite_loss", f"non-finite loss ({loss.item()})")
            if cause is None:
                accelerator.backward(loss)
                norm = accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
                # Under fp16 the gradient scaler expects and handles overflowing gradients itself.
                if accelerator.scaler is None and norm is not None and not torch.isfinite(norm):
                    cause = ("non_finite_gradient", f"non-finite gradient norm ({norm.item()})")
            if cause is None:
                optimizer.step()
                if optimizer.step_was_skipped:
                    # The fp16 gradient scaler found an overflow and lowered its scale: no update happened.
                    cause = ("scaler_overflow", "the fp16 gradient scaler dropped the step (overflow)")
            optimizer.zero_grad(set_to_none=True)
            with warnings.catch_warnings():
                # A skipped first step reaches the scheduler before any optimiser step did; that is intended.
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
                scheduler.step()
            if cause is not None:
                result.skipped_steps += 1
                result.skipped_by_cause[cause[0]] += 1
                bad_in_a_row += 1
                if bad_in_a_row >= config.max_bad_steps:
                    result.failure = f"step {step + 1}: {cause[1]}, {bad_in_a_row} steps in a row"
                    break
            else:
                bad_in_a_row = 0
                result.steps += 1
                recent_losses.append(loss.item())
                if (step + 1) % config.log_every == 0 or step + 1 == total_steps:
                    seconds = time.perf_counter() - started
                    point = LogPoint(step + 1, total_steps, sum(recent_losses) / len(recent_losses),
                                     scheduler.get_last_lr()[0],
                                     (result.tokens - tokens_at_log) / (seconds - seconds_at_log))
                    log(f"step {point.step}/{total_steps} loss {point.loss:.3f} lr {point.learning_rate:.2e} "
                        f"{point.tokens_per_second:,.0f} tok/s")
                    result.curve.append(point)
                    result.final_loss = point.loss
                    recent_losses, tokens_at_log, seconds_at_log = [], result.tokens, seconds
                    if on_log:
                        on_log(point)
            # The task's end has its own checkpoint: none after the last step.
            if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < total_steps and save_state:
                save_state(state_after(step))

        if recent_losses:
            result.final_loss = sum(recent_losses) / len(recent_losses)
        result.final_learning_rate = scheduler.get_last_lr()[0]
        result.seconds = time.perf_counter() - started
    return result
