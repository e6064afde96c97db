import math

import torch
from accelerate import Accelerator

from codecl.config import TrainConfig
from codecl.data.tasks import Example
from codecl.train import train_task, warmup_then_linear_decay


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
