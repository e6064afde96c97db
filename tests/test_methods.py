"""The method matrix: every registered method against the promises it makes."""

import copy
from dataclasses import dataclass, field

import pytest
import torch
from accelerate import Accelerator
from peft import PeftModel
from transformers import T5ForConditionalGeneration

from codecl.config import TrainConfig
from codecl.data.tasks import Example
from codecl.methods import METHODS
from codecl.train import train_task


@dataclass
class Case:
    method: str
    options: dict = field(default_factory=dict)
    trains: bool = True
    freezes_base: bool = True
    isolates_tasks: bool = False  # task-aware: training a later task cannot change an earlier one


CASES = {
    "frozen": Case("frozen", trains=False),
    "full-ft": Case("full-ft", freezes_base=False),
    "lora-per-task": Case("lora", {"per_task": True, "r": 4}, isolates_tasks=True),
    "lora-stream": Case("lora", {"per_task": False, "r": 4}),
}


def build(case: Case):
    entry = METHODS[case.method]
    return entry.build(entry.config_class(method=case.method, **case.options))


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def base_tensors(model) -> dict[str, torch.Tensor]:
    """Base weights by their names in the plain model, whatever wraps them (PEFT adds prefixes)."""
    tensors = {}
    for name, tensor in model.state_dict().items():
        if "lora_" in name:
            continue
        name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        tensors[name] = tensor
    return tensors


def examples_from(batch, tokenizer) -> list[Example]:
    rows = []
    for source, labels in zip(batch["input_ids"], batch["labels"]):
        source_ids = [i for i in source.tolist() if i != tokenizer.pad_token_id]
        target_ids = [i for i in labels.tolist() if i != -100]
        rows.append(Example("s", "t", source_ids, target_ids))
    return rows * 4


def train(model, method, task_index, batch, tokenizer):
    parameters = method.begin_task(model, task_index)
    if parameters:
        result = train_task(
            model, parameters, examples_from(batch, tokenizer), TrainConfig(epochs=3, batch_size=2, log_every=100),
            learning_rate=1e-2, accelerator=Accelerator(cpu=True), pad_id=tokenizer.pad_token_id, seed=0,
            extra_loss=method.extra_loss, log=lambda line: None,
        )
        assert result.failure is None and result.steps > 0
    method.end_task(model, task_index)
    return parameters


def test_every_registered_method_has_a_case():
    assert set(METHODS) <= {case.method for case in CASES.values()}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_outputs_unchanged_at_initialisation(case, tiny_base, tiny_batch):
    base, _ = tiny_base
    method = build(case)
    model = method.attach(copy.deepcopy(base))
    method.begin_task(model, 0)
    assert torch.allclose(logits(model, tiny_batch), logits(base, tiny_batch), atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_training_changes_what_it_promises_and_nothing_else(case, tiny_base, tiny_batch):
    base, tokenizer = tiny_base
    method = build(case)
    model = method.attach(copy.deepcopy(base))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    trained = [train(model, method, task, tiny_batch, tokenizer) for task in (0, 1)]
    assert bool(trained[0]) == case.trains
    changed = [
        name for name, tensor in model.state_dict().items() if name not in before or not torch.equal(tensor, before[name])
    ]
    assert bool(changed) == case.trains
    if case.freezes_base:
        original = base.state_dict()
        after = base_tensors(model)
        assert after.keys() == original.keys()
        assert all(torch.equal(after[name], original[name]) for name in original)


@pytest.mark.parametrize("case", [c for c in CASES.values() if c.isolates_tasks], ids=lambda c: str(c.options))
def test_later_tasks_leave_earlier_tasks_bit_identical(case, tiny_base, tiny_batch):
    base, tokenizer = tiny_base
    method = build(case)
    model = method.attach(copy.deepcopy(base))
    train(model, method, 0, tiny_batch, tokenizer)
    method.use_task(model, 0)
    after_first = logits(model, tiny_batch)
    train(model, method, 1, tiny_batch, tokenizer)
    method.use_task(model, 1)
    assert not torch.equal(logits(model, tiny_batch), after_first)
    method.use_task(model, 0)
    assert torch.equal(logits(model, tiny_batch), after_first)


@pytest.mark.parametrize("per_task", [True, False])
def test_lora_saves_in_peft_format(per_task, tiny_base, tiny_batch, tmp_path):
    base, tokenizer = tiny_base
    method = build(Case("lora", {"per_task": per_task, "r": 4}))
    model = method.attach(copy.deepcopy(base))
    for task in (0, 1):
        train(model, method, task, tiny_batch, tokenizer)
    method.save(model, tmp_path)
    for task, adapter in enumerate(method.adapters):
        method.use_task(model, task)
        loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / adapter)
        assert torch.equal(logits(loaded, tiny_batch), logits(model, tiny_batch))


def test_full_fine_tuning_saves_a_plain_checkpoint(tiny_base, tiny_batch, tmp_path):
    base, tokenizer = tiny_base
    method = build(CASES["full-ft"])
    model = method.attach(copy.deepcopy(base))
    train(model, method, 0, tiny_batch, tokenizer)
    method.save(model, tmp_path)
    loaded = T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(logits(loaded, tiny_batch), logits(model, tiny_batch))
