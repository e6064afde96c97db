import copy
import dataclasses
import io
import math
import re
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from codecl.config import TrainConfig
from codecl.data.tasks import Example
from codecl.train import fused_adamw, keep_batch, train_task, warmup_then_linear_decay


def examples(tokenizer, n=8):
    source = tokenizer("add one")["input_ids"]
    target = tokenizer("def f(x):\n    return x + 1")["input_ids"]
    return [Example("add one", "def f", source, target)] * n


def run(model, tokenizer, extra_loss, **config):
    return train_task(
        model, list(model.parameters()), examples(tokenizer), TrainConfig(batch_size=2, log_every=1000, **config),
        learning_rate=1e-3, accelerator=Accelerator(cpu=True), pad_id=tokenizer.pad_token_id, seed=0,
        extra_loss=extra_loss, log=lambda line: None,
    )


def test_schedule_warms_up_then_decays_to_zero():
    factor = warmup_then_linear_decay(total_steps=10, warmup_steps=2)
    assert [factor(s) for s in (0, 1)] == [0.5, 1.0]
    assert factor(2) == 1.0 and factor(6) == 0.5 and factor(10) == 0.0


def test_loss_goes_down_on_one_repeated_example(tiny_base):
    import copy

    base, tokenizer = tiny_base
    model = copy.deepcopy(base)
    result = run(model, tokenizer, lambda m, b: None, epochs=10)
    assert result.failure is None and result.skipped_steps == 0 and result.steps == 40
    with torch.no_grad():
        batch = {k: torch.tensor([v]) for k, v in zip(("input_ids", "labels"), (examples(tokenizer)[0].source_ids, examples(tokenizer)[0].target_ids))}
        assert model(**batch).loss < base(**batch).loss


def test_non_finite_losses_are_skipped_then_fail_the_task_without_touching_weights(tiny_base):
    import copy

    base, tokenizer = tiny_base
    model = copy.deepcopy(base)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    result = run(model, tokenizer, lambda m, b: torch.tensor(math.nan), epochs=10, max_bad_steps=3)
    assert result.steps == 0 and result.skipped_steps == 3
    assert result.failure == "step 3: non-finite loss (nan), 3 steps in a row"
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())


def test_isolated_bad_steps_are_counted_and_training_goes_on(tiny_base):
    import copy

    base, tokenizer = tiny_base
    calls = []

    def every_third_is_infinite(model, batch):
        calls.append(1)
        return torch.tensor(math.inf) if len(calls) % 3 == 0 else None

    result = run(copy.deepcopy(base), tokenizer, every_third_is_infinite, epochs=3, max_bad_steps=2)
    assert result.failure is None
    assert result.skipped_steps == 4 and result.steps == 8


def test_skips_do_not_stretch_the_schedule(tiny_base):
    """The schedule spans the planned steps: it ends at 0 even when steps were skipped on the way."""
    import copy

    base, tokenizer = tiny_base
    calls, lines = [], []

    def first_of_every_three_is_infinite(model, batch):
        calls.append(1)
        return torch.tensor(math.inf) if len(calls) % 3 == 1 else None

    model = copy.deepcopy(base)
    result = train_task(
        model, list(model.parameters()), examples(tokenizer), TrainConfig(batch_size=2, log_every=1, epochs=3),
        learning_rate=1e-3, accelerator=Accelerator(cpu=True), pad_id=tokenizer.pad_token_id, seed=0,
        extra_loss=first_of_every_three_is_infinite, log=lines.append,
    )
    # 12 planned steps, steps 1, 4, 7 and 10 skipped: 8 updates, and the last one logs the end of the decay.
    assert result.steps == 8 and result.skipped_by_cause["non_finite_loss"] == 4
    assert lines[-1].startswith("step 12/12 ") and " lr 0.00e+00 " in lines[-1]
    assert result.final_learning_rate == 0.0


class DroppedStep:
    """An optimiser whose every step the fp16 gradient scaler drops: no update, `step_was_skipped` set."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.step_was_skipped = False

    def step(self):
        self.step_was_skipped = True

    def zero_grad(self, set_to_none=True):
        self.optimizer.zero_grad(set_to_none=set_to_none)


class OverflowingScaler:
    """An fp16 accelerator whose gradient scaler drops every step, as one does when every step overflows.

    CUDA is not needed to exercise the loop's side of the contract: `scaler` is set and the prepared
    optimiser reports each step as skipped, which is all the loop reads."""

    def __init__(self):
        self._accelerator = Accelerator(cpu=True)
        self.scaler = object()

    def prepare(self, model, optimizer):
        model, optimizer = self._accelerator.prepare(model, optimizer)
        return model, DroppedStep(optimizer)

    def __getattr__(self, name):
        return getattr(self._accelerator, name)


def test_steps_the_scaler_drops_count_toward_the_guard(tiny_base):
    import copy

    base, tokenizer = tiny_base
    model = copy.deepcopy(base)
    result = train_task(
        model, list(model.parameters()), examples(tokenizer), TrainConfig(batch_size=2, log_every=1000, epochs=10, max_bad_steps=4),
        learning_rate=1e-3, accelerator=OverflowingScaler(), pad_id=tokenizer.pad_token_id, seed=0,
        extra_loss=lambda m, b: None, log=lambda line: None,
    )
    assert result.steps == 0 and result.skipped_steps == 4
    assert result.skipped_by_cause == {"non_finite_loss": 0, "non_finite_gradient": 0, "scaler_overflow": 4}
    assert result.failure == "step 4: the fp16 gradient scaler dropped the step (overflow), 4 steps in a row"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))


def test_a_method_that_raises_leaves_nothing_prepared_in_the_shared_accelerator(tiny_base):
    """A crash is a reported result and the run goes on with the same accelerator: it must not keep the
    crashed method's model and optimiser (their memory, under fp16 their scaler state)."""
    import copy

    import pytest

    base, tokenizer = tiny_base
    accelerator = Accelerator(cpu=True)

    def crash(model, batch):
        raise TypeError("forward() got an unexpected keyword argument 'mask'")

    model = copy.deepcopy(base)
    with pytest.raises(TypeError):
        train_task(
            model, list(model.parameters()), examples(tokenizer), TrainConfig(batch_size=2),
            learning_rate=1e-3, accelerator=accelerator, pad_id=tokenizer.pad_token_id, seed=0,
            extra_loss=crash, log=lambda line: None,
        )
    assert accelerator._models == [] and accelerator._optimizers == []


def test_fused_adamw_only_where_no_gradient_scaler_must_see_dropped_steps():
    assert fused_adamw(SimpleNamespace(device=torch.device("cpu"), scaler=None))
    assert fused_adamw(SimpleNamespace(device=torch.device("cuda"), scaler=None))
    # Under fp16 a fused AdamW would skip an overflowing step inside its kernel, unseen by the guard.
    assert not fused_adamw(SimpleNamespace(device=torch.device("cuda"), scaler=object()))
    assert not fused_adamw(SimpleNamespace(device=torch.device("mps"), scaler=None))


def distinct_examples(tokenizer, n):
    """Examples of different contents and lengths, so that batch order and replay draws change the weights."""
    return [
        Example(f"add {i}", f"def f{i}", tokenizer(f"add {i} to x" + " twice" * (i % 4))["input_ids"],
                tokenizer(f"def f{i}(x):\n    return x + {i}" + " + 1" * (i % 3))["input_ids"])
        for i in range(n)
    ]


def with_dropout(base, p=0.1):
    """A copy of `base` with dropout on: the tiny preset has none, and a resume must restore torch's RNG."""
    model = copy.deepcopy(base)
    dropouts = [module for module in model.modules() if isinstance(module, nn.Dropout)]
    assert dropouts
    for module in dropouts:
        module.p = p
    return model


def train_ten_steps(model, tokenizer, lines, mix_batch=keep_batch, accelerator=None, **checkpointing):
    """10 examples in batches of 3 for 2.5 epochs: 10 planned steps, epochs of 4 steps, a log line every 4."""
    return train_task(
        model, list(model.parameters()), distinct_examples(tokenizer, 10),
        TrainConfig(batch_size=3, epochs=2.5, log_every=4, warmup_fraction=0.2),
        learning_rate=1e-3, accelerator=accelerator or Accelerator(cpu=True), pad_id=tokenizer.pad_token_id, seed=0,
        extra_loss=lambda m, b: None, log=lines.append, mix_batch=mix_batch, **checkpointing,
    )


class Killed(Exception):
    """The run killed right after a checkpoint was written."""


def timeless(result):
    """A result less what the clock measured."""
    return dataclasses.replace(result, seconds=0.0, curve=[dataclasses.replace(p, tokens_per_second=0.0) for p in result.curve])


def without_tokens_per_second(lines):
    return [re.sub(r" [\d,.]+ tok/s$", "", line) for line in lines]


def test_a_run_resumed_from_a_step_checkpoint_ends_as_the_uninterrupted_run(tiny_base):
    """Killed after step 6 of 10 (mid-epoch, mid-log-window), resumed from the saved state in a fresh
    model: the same weights, result and log lines, with dropout on and replay drawing from the loop's rng."""
    base, tokenizer = tiny_base
    replay_pool = distinct_examples(tokenizer, 16)[10:]

    def replay_one(chosen, rng):
        return chosen + rng.sample(replay_pool, 1)

    model = with_dropout(base)
    model.train()
    batch = {"input_ids": torch.tensor([replay_pool[0].source_ids]), "labels": torch.tensor([replay_pool[0].target_ids])}
    assert not torch.equal(model(**batch).logits, model(**batch).logits)  # dropout does draw from torch's RNG

    torch.manual_seed(0)
    straight_lines = []
    straight = train_ten_steps(model, tokenizer, straight_lines, replay_one)

    states, killed_lines = [], []

    def save_then_die_at_step_6(state):
        states.append(state)
        if state.step == 6:
            raise Killed

    torch.manual_seed(0)
    with pytest.raises(Killed):
        train_ten_steps(with_dropout(base), tokenizer, killed_lines, replay_one,
                        checkpoint_every=3, save_state=save_then_die_at_step_6)
    assert [s.step for s in states] == [3, 6]
    assert states[-1].batches and states[-1].recent_losses  # neither an epoch's nor a log window's end
    assert len(straight_lines) == 3 and len(killed_lines) == 1  # steps 4, 8 and 10; 4
    # The curve keeps each log line's numbers: the steps it was written at, the loss and rate it printed.
    assert [(p.step, p.steps) for p in straight.curve] == [(4, 10), (8, 10), (10, 10)]
    assert [(f"{p.loss:.3f}", f"{p.learning_rate:.2e}") for p in straight.curve] == [
        re.search(r"loss (\S+) lr (\S+)", line).groups() for line in straight_lines]
    assert straight.curve[-1].learning_rate == 0.0 and straight.planned_steps == 10

    # The step-3 state too: what was saved stays as it was while training went on.
    for state, lines_before in zip(states, ([], killed_lines)):
        written = io.BytesIO()
        torch.save(state, written)
        written.seek(0)
        saved = torch.load(written, weights_only=False)
        torch.manual_seed(1)  # the resume restores torch's RNG itself
        resumed_lines = []
        resumed_model = with_dropout(base)
        resumed = train_ten_steps(resumed_model, tokenizer, resumed_lines, replay_one, resume_from=saved)

        assert all(torch.equal(a, b) for a, b in zip(resumed_model.state_dict().values(), model.state_dict().values()))
        assert timeless(resumed) == timeless(straight)
        assert straight.steps == 10 and resumed.seconds > saved.result.seconds > 0
        assert without_tokens_per_second(lines_before + resumed_lines) == without_tokens_per_second(straight_lines)


def test_state_is_saved_every_n_planned_steps_but_not_after_the_last(tiny_base):
    base, tokenizer = tiny_base
    for every, saved_after in ((0, []), (3, [3, 6, 9]), (5, [5])):
        states = []
        train_ten_steps(copy.deepcopy(base), tokenizer, [], checkpoint_every=every, save_state=states.append)
        assert [s.step for s in states] == saved_after, every


def cpu_accelerator_with_a_gradient_scaler():
    """accelerate gives no gradient scaler on the CPU; torch's CPU one stands in for fp16's, doubling its
    scale every step so that its state changes from step to step."""
    accelerator = Accelerator(cpu=True)
    accelerator.scaler = torch.amp.GradScaler("cpu", growth_interval=1)
    return accelerator


def test_a_resume_restores_the_gradient_scaler(tiny_base):
    base, tokenizer = tiny_base
    straight_model, straight = copy.deepcopy(base), cpu_accelerator_with_a_gradient_scaler()
    train_ten_steps(straight_model, tokenizer, [], accelerator=straight)
    states = []
    train_ten_steps(copy.deepcopy(base), tokenizer, [], accelerator=cpu_accelerator_with_a_gradient_scaler(),
                    checkpoint_every=6, save_state=states.append)
    resumed_model, resumed = copy.deepcopy(base), cpu_accelerator_with_a_gradient_scaler()
    train_ten_steps(resumed_model, tokenizer, [], accelerator=resumed, resume_from=states[0])
    assert states[0].scaler_state["scale"] < straight.scaler.get_scale()  # it grew after the checkpoint
    assert resumed.scaler.state_dict() == straight.scaler.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(resumed_model.state_dict().values(), straight_model.state_dict().values()))
