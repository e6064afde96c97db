"""`olora`: the O-LoRA penalties by hand, frozen earlier adapters, and the sum of every adapter at inference."""

import copy
import math

import pytest
import torch
from accelerate import Accelerator
from peft.tuners.lora import LoraLayer

from codecl.config import TrainConfig
from codecl.data.tasks import Example
from codecl.methods import METHODS
from codecl.methods.base import TaskData
from codecl.methods.growth import base_name
from codecl.job import train_method_on_task

# The tiny T5 (tests/conftest.py) has q and v in 2 encoder self-attentions and in 2 decoder self- and
# 2 cross-attentions: 12 adapted layers of 32 inputs and 32 outputs.
LAYERS, WIDTH = 12, 32


def build(**options):
    entry = METHODS["olora"]
    return entry.build(entry.config_class(method="olora", **options))


def with_adapters(tiny_base, count: int, **options):
    """A method attached to a copy of the tiny base, with adapters task0..task{count-1} begun."""
    method = build(**options)
    model = method.attach(copy.deepcopy(tiny_base[0]))
    for task in range(count):
        method.begin_task(model, task)
    return method, model


def lora_layers(model) -> dict[str, LoraLayer]:
    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def set_adapter_weights(model, adapter: str, a_rows=None, b_value: float = 0.0, only_layer: int | None = None):
    """Every layer's A of `adapter` to `a_rows` (zero-padded to the layer's width), or zero outside `only_layer`."""
    with torch.no_grad():
        for index, layer in enumerate(lora_layers(model).values()):
            a = layer.lora_A[adapter].weight
            a.zero_()
            if a_rows is not None and only_layer in (None, index):
                rows = torch.tensor(a_rows, dtype=a.dtype)
                a[: rows.shape[0], : rows.shape[1]] = rows
            layer.lora_B[adapter].weight.fill_(b_value)


def examples_from(batch, tokenizer) -> list[Example]:
    rows = []
    for source, labels in zip(batch["input_ids"], batch["labels"]):
        rows.append(Example("s", "t", [i for i in source.tolist() if i != tokenizer.pad_token_id],
                            [i for i in labels.tolist() if i != -100]))
    return rows * 4


def train(method, model, task_index: int, tiny_base, tiny_batch):
    tokenizer = tiny_base[1]
    examples = examples_from(tiny_batch, tokenizer)
    task = TaskData(task_index, examples, [examples] * task_index, tokenizer.pad_token_id, torch.device("cpu"))
    parameters, result = train_method_on_task(
        method, model, task, TrainConfig(epochs=3, batch_size=2, log_every=100), learning_rate=1e-2,
        accelerator=Accelerator(cpu=True), seed=task_index, log=lambda line: None,
    )
    assert parameters and result.failure is None and result.steps > 0


def test_the_tiny_model_has_the_layers_the_hand_values_assume(tiny_base):
    _, model = with_adapters(tiny_base, 1, r=1)
    layers = lora_layers(model).values()
    assert len(layers) == LAYERS and all(layer.lora_A["task0"].weight.shape == (1, WIDTH) for layer in layers)


def test_no_penalty_on_the_first_task_with_the_authors_defaults(tiny_base):
    method, model = with_adapters(tiny_base, 1)
    assert method.extra_loss(model, {}) is None


def test_orthogonal_subspaces_cost_nothing_and_overlapping_ones_do(tiny_base):
    method, model = with_adapters(tiny_base, 2, r=2)
    set_adapter_weights(model, "task0", [[1, 0, 0, 0], [0, 1, 0, 0]])  # rows of the identity...
    set_adapter_weights(model, "task1", [[0, 0, 1, 0], [0, 0, 0, 1]])  # ...and disjoint ones
    assert method.extra_loss(model, {}).item() == 0.0
    set_adapter_weights(model, "task1", [[0, 0, 1, 0], [0, 1, 0, 1]])  # one shared direction, every layer
    assert method.extra_loss(model, {}).item() == pytest.approx(0.5 * 1 * LAYERS)


def test_orthogonal_penalty_by_hand(tiny_base):
    # One layer, r = 1: A_old = [1, 0], A_new = [1, 1]; |A_old A_newᵀ| = 1, times λ1 = 0.5.
    method, model = with_adapters(tiny_base, 2, r=1)
    set_adapter_weights(model, "task0", [[1, 0]], only_layer=3)
    set_adapter_weights(model, "task1", [[1, 1]], only_layer=3)
    assert method.extra_loss(model, {}).item() == pytest.approx(0.5)
    # Task 2 pays for its overlap with every earlier adapter, whatever its sign: |[1,0]·[-1,-1]| + |[0,1]·[-1,-1]|
    # = 2, times 0.5.
    method.begin_task(model, 2)
    set_adapter_weights(model, "task1", [[0, 1]], only_layer=3)
    set_adapter_weights(model, "task2", [[-1, -1]], only_layer=3)
    assert method.extra_loss(model, {}).item() == pytest.approx(1.0)


def test_norm_penalty_by_hand(tiny_base):
    # The authors' form: λ2 Σ ‖W‖_F over the new A and B of every layer. A all 0.5 (1×32), B all 2 (32×1):
    # per layer 0.5·√32 + 2·√32.
    method, model = with_adapters(tiny_base, 1, r=1, lambda_orthogonal=0.0, lambda_norm=0.1)
    set_adapter_weights(model, "task0", [[0.5] * WIDTH], b_value=2.0)
    assert method.extra_loss(model, {}).item() == pytest.approx(0.1 * LAYERS * 2.5 * math.sqrt(WIDTH), rel=1e-6)


def test_every_adapter_is_active_in_training_and_only_the_newest_trains(tiny_base):
    method, model = with_adapters(tiny_base, 2, r=2)
    assert model.base_model.active_adapters == ["task0", "task1"]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".task1." in name for name in trainable)
    assert len(trainable) == 2 * LAYERS


def test_earlier_adapter_is_bit_identical_after_a_later_task(tiny_base, tiny_batch):
    method, model = with_adapters(tiny_base, 0, r=4)
    train(method, model, 0, tiny_base, tiny_batch)
    first = {n: t.clone() for n, t in model.state_dict().items() if ".task0." in n}
    assert any(t.abs().max() > 0 for n, t in first.items() if "lora_B" in n)  # task 0 did train
    train(method, model, 1, tiny_base, tiny_batch)
    after = model.state_dict()
    assert all(torch.equal(after[n], t) for n, t in first.items())
    assert any(t.abs().max() > 0 for n, t in after.items() if "lora_B.task1." in n)  # task 1 did train


def test_inference_is_the_base_plus_every_adapter(tiny_base, tiny_batch):
    base = tiny_base[0]
    method, model = with_adapters(tiny_base, 0, r=4)
    for task in (0, 1):
        train(method, model, task, tiny_base, tiny_batch)

    def merged(adapters):
        """The base with Σ (alpha/r) B A of `adapters` added by hand, without PEFT's merge."""
        plain = copy.deepcopy(base)
        with torch.no_grad():
            for name, layer in lora_layers(model).items():
                weight = plain.get_submodule(base_name(name)).weight
                for adapter in adapters:
                    weight += layer.scaling[adapter] * layer.lora_B[adapter].weight @ layer.lora_A[adapter].weight
        return plain

    with torch.no_grad():
        both = merged(["task0", "task1"])(**tiny_batch).logits
        only_newest = merged(["task1"])(**tiny_batch).logits
        for task in (0, 1):  # no task id: every task sees the sum
            method.use_task(model, task)
            assert not any(p.requires_grad for p in model.parameters())
            got = model(**tiny_batch).logits
            assert (got - both).abs().max() <= 1e-5
            assert (got - only_newest).abs().max() > 1e-3
