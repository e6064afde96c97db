"""`multitask`: after task i it is the base model trained once on the union of tasks 0..i."""

import copy

import torch
from accelerate import Accelerator

from codecl.config import TrainConfig
from codecl.data.tasks import Example
from codecl.methods import METHODS
from codecl.methods.base import TaskData
from codecl.job import train_method_on_task
from codecl.train import train_task

CONFIG = TrainConfig(epochs=2, batch_size=2, log_every=100)
LEARNING_RATE = 1e-2
# The method and the reference run the same loop on the same examples in the same order from the same
# weights with the same seed: the same float operations. Only a BLAS kernel's blocking (which may follow
# buffer alignment) could reassociate a sum, ~1e-7 relative per operation (on this CPU the difference
# is exactly 0). 1e-5 on the weights is far below what training moves them by (checked below to be over
# 1e-2), so a model that kept task 0's training, or trained on task 1's examples alone, cannot pass.
TOLERANCE = 1e-5


def examples_from(batch, tokenizer, reverse=False) -> list[Example]:
    rows = []
    for source, labels in zip(batch["input_ids"], batch["labels"]):
        source_ids = [i for i in source.tolist() if i != tokenizer.pad_token_id]
        target_ids = [i for i in labels.tolist() if i != -100]
        if reverse:  # another task: the same tokens, the other way round
            source_ids, target_ids = target_ids, source_ids
        rows.append(Example("s", "t", source_ids, target_ids))
    return rows * 4


def run_task(method, model, task: TaskData, seed: int):
    parameters, result = train_method_on_task(
        method, model, task, CONFIG, learning_rate=LEARNING_RATE, accelerator=Accelerator(cpu=True), seed=seed,
        log=lambda line: None,
    )
    assert parameters and result.failure is None and result.steps > 0


def stream(tiny_base, task0_examples, task1: TaskData):
    """Task 0 trained on `task0_examples`, then `task1`: the model after task 1."""
    base, tokenizer = tiny_base
    entry = METHODS["multitask"]
    method = entry.build(entry.config_class(method="multitask"))
    model = method.attach(copy.deepcopy(base))
    run_task(method, model, TaskData(0, task0_examples, [], tokenizer.pad_token_id, torch.device("cpu")), seed=0)
    after_task0 = copy.deepcopy(model.state_dict())
    run_task(method, model, task1, seed=1)
    return model, after_task0


def largest_difference(a: dict, b: dict) -> float:
    return max((a[name] - b[name]).abs().max().item() for name in a)


def test_train_examples_are_the_union_in_stream_order():
    a, b, c = ([Example(name, name, [i], [i]) for i in range(2)] for name in "abc")
    method = METHODS["multitask"].build(METHODS["multitask"].config_class(method="multitask"))
    assert method.train_examples(TaskData(2, c, [a, b], 0, torch.device("cpu"))) == a + b + c


def test_after_task_1_it_is_the_base_trained_once_on_the_union(tiny_base, tiny_batch):
    base, tokenizer = tiny_base
    examples = examples_from(tiny_batch, tokenizer)
    task1 = TaskData(1, examples, [examples], tokenizer.pad_token_id, torch.device("cpu"))
    model, _ = stream(tiny_base, examples, task1)

    reference = copy.deepcopy(base)
    parameters = list(reference.parameters())
    for parameter in parameters:
        parameter.requires_grad_(True)
    result = train_task(
        reference, parameters, examples + examples, CONFIG, learning_rate=LEARNING_RATE,
        accelerator=Accelerator(cpu=True), pad_id=tokenizer.pad_token_id, seed=1, extra_loss=lambda m, b: None,
        log=lambda line: None,
    )
    assert result.failure is None
    assert largest_difference(model.state_dict(), reference.state_dict()) <= TOLERANCE
    assert largest_difference(model.state_dict(), base.state_dict()) > 1e-2
    with torch.no_grad():
        assert (model(**tiny_batch).logits - reference(**tiny_batch).logits).abs().max() <= 1e-4


def test_after_task_1_nothing_of_what_task_0_trained_remains(tiny_base, tiny_batch):
    _, tokenizer = tiny_base
    examples = examples_from(tiny_batch, tokenizer)
    # Task 1 reads the same data either way; only what task 0 actually trained on differs.
    task1 = TaskData(1, examples, [examples], tokenizer.pad_token_id, torch.device("cpu"))
    first, first_after_task0 = stream(tiny_base, examples, task1)
    second, second_after_task0 = stream(tiny_base, examples_from(tiny_batch, tokenizer, reverse=True), task1)
    assert largest_difference(first_after_task0, second_after_task0) > 1e-2
    assert largest_difference(first.state_dict(), second.state_dict()) <= TOLERANCE
