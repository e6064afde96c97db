"""Every training method, long enough to diverge if it would: a hundred optimiser steps over two tasks in
fp32, under bf16 autocast, and (on CUDA) under fp16 autocast with a gradient scaler.

Growth methods promise fp32 master weights for what they add, whatever the precision; the base keeps its
dtype. The published run that trained its expansions in fp16 overflowed, which is what this guards.
"""

import copy
import math

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from codecl.config import TrainConfig
from codecl.data.tasks import Example
from codecl.methods.growth import base_name
from codecl.methods.base import TaskData
from codecl.job import train_method_on_task
from test_methods import CASES, build

STEPS_PER_TASK = 50  # 100 optimiser steps per precision per method: the file stays near a minute on 2 CPU cores
BATCH_SIZE = 4
EXAMPLES_PER_TASK = 8
LEARNING_RATE = 1e-3
# frozen trains nothing; multitask, replay and EWC on full fine-tuning train full-ft's weights with full-ft's
# loss on other batches: no numerics of their own to test (EWC's and O-LoRA's penalties on adapters stay in).
SAME_NUMERICS = {"multitask", "replay-full", "replay-lora-balanced", "ewc-full"}
TRAINING_CASES = [name for name, case in CASES.items() if case.trains and name not in SAME_NUMERICS]
GROWTH_CASES = [name for name in TRAINING_CASES if CASES[name].freezes_base]  # add weights beside a frozen base


@pytest.fixture
def make_accelerator():
    """An Accelerator at a given precision. accelerate keeps one process-wide state that refuses a second
    precision, and a later plain `Accelerator(cpu=True)` would silently inherit this one: reset both ways."""
    def make(mixed_precision: str, cpu: bool = True) -> Accelerator:
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(cpu=cpu, mixed_precision=mixed_precision)

    yield make
    AcceleratorState._reset_state(reset_partial_state=True)


def task_examples(tokenizer, task: int) -> list[Example]:
    """Two different tasks of 8 examples of different lengths: Python additions, then JavaScript products."""
    if task == 0:
        pairs = [(f"add {i} to x", f"def f(x):\n    return x + {i}") for i in range(EXAMPLES_PER_TASK)]
    else:
        pairs = [(f"multiply a by {i}" + " twice" * (i % 3), f"function g(a) {{ return a * {i}; }}")
                 for i in range(EXAMPLES_PER_TASK)]
    return [Example(s, t, tokenizer(s)["input_ids"], tokenizer(t)["input_ids"]) for s, t in pairs]


def train_two_tasks(name, base, tokenizer, accelerator, steps_per_task=STEPS_PER_TASK):
    """Attach the case's method to a copy of `base` and train tasks 0 and 1: (model, [(parameters, result)])."""
    method = build(CASES[name])
    model = method.attach(copy.deepcopy(base))
    epochs = steps_per_task / math.ceil(EXAMPLES_PER_TASK / BATCH_SIZE)
    trained = []
    seen = []
    for task in (0, 1):
        examples = task_examples(tokenizer, task)
        parameters, result = train_method_on_task(
            method, model, TaskData(task, examples, list(seen), tokenizer.pad_token_id, accelerator.device),
            TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, log_every=10**6),
            learning_rate=LEARNING_RATE, accelerator=accelerator, seed=task, log=lambda line: None,
        )
        seen.append(examples)
        # Multitask trains on the union of the tasks so far: as many more steps as it has more examples.
        result.planned_steps = steps_per_task * len(method.train_examples(TaskData(task, examples, seen[:-1], 0, "cpu"))) // EXAMPLES_PER_TASK
        trained.append((parameters, result))
    return model, trained


def assert_stable(trained, scaler_skips_allowed=0) -> None:
    for task, (parameters, result) in enumerate(trained):
        assert result.failure is None, f"task {task}: {result.failure}"
        skips = result.skipped_by_cause
        assert skips["non_finite_loss"] == skips["non_finite_gradient"] == 0, f"task {task}: {skips}"
        assert skips["scaler_overflow"] <= scaler_skips_allowed, f"task {task}: {skips}"
        assert result.steps + result.skipped_steps == result.planned_steps
        assert result.final_loss is not None and math.isfinite(result.final_loss)
        assert all(torch.isfinite(p).all() for p in parameters)


def assert_dtypes(name, model, base, trained, new_dtype=torch.float32) -> None:
    """Base weights keep their dtype; what a growth method added (everything it trains) is fp32."""
    after = {base_name(n): t for n, t in model.state_dict().items()}
    assert all(after[n].dtype == t.dtype for n, t in base.state_dict().items())
    if name in GROWTH_CASES:
        assert all(p.dtype == new_dtype for parameters, _ in trained for p in parameters)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", TRAINING_CASES)
def test_a_hundred_steps_over_two_tasks_stay_finite(name, precision, tiny_base, make_accelerator):
    base, tokenizer = tiny_base
    accelerator = make_accelerator({"fp32": "no", "bf16": "bf16"}[precision])
    model, trained = train_two_tasks(name, base, tokenizer, accelerator)
    assert_stable(trained)
    assert_dtypes(name, model, base, trained)


@pytest.mark.parametrize("name", GROWTH_CASES)
def test_added_weights_are_fp32_master_weights_on_a_bf16_base(name, tiny_base, make_accelerator):
    """On an fp32 base, fp32 new weights prove little; on a bf16 base they must be created fp32 on purpose."""
    base, tokenizer = tiny_base
    base = copy.deepcopy(base).to(torch.bfloat16)
    model, trained = train_two_tasks(name, base, tokenizer, make_accelerator("bf16"), steps_per_task=10)
    assert_stable(trained)
    assert all(t.dtype == torch.bfloat16 for t in base.state_dict().values())
    assert_dtypes(name, model, base, trained)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast with a gradient scaler needs CUDA")
@pytest.mark.parametrize("name", TRAINING_CASES)
def test_fp16_with_a_gradient_scaler_stays_finite(name, tiny_base, make_accelerator):
    base, tokenizer = tiny_base
    accelerator = make_accelerator("fp16", cpu=False)
    assert accelerator.scaler is not None
    model, trained = train_two_tasks(name, base, tokenizer, accelerator)
    # The scaler drops a step on overflow and halves its scale (from 2^16, growing only every 2000
    # clean steps): a few drops while it finds its scale are normal, more than 16 leave a scale under 1.
    assert_stable(trained, scaler_skips_allowed=16)
    assert_dtypes(name, model, base, trained)
    assert accelerator.scaler.get_scale() >= 1.0
