"""EWC against references written here: the Fisher from a hand-written per-example loop, the penalty's
gradient in closed form, the online decay, and a checkpoint that continues identically."""

import copy

import pytest
import torch
from torch import nn

from codecl.data.tasks import Example
from codecl.methods import METHODS
from codecl.methods.base import TaskData


def build(**options):
    entry = METHODS["ewc"]
    return entry.build(entry.config_class(method="ewc", **options))


def hand_made(tokenizer, texts) -> list[Example]:
    """Examples of different target lengths, so that a per-token mean and a per-example sum differ."""
    return [Example(s, t, tokenizer(s)["input_ids"], tokenizer(t)["input_ids"]) for s, t in texts]


TASK0 = [("add one to x", "def f(x):\n    return x + 1"), ("double a", "function g(a) { return a * 2; }"),
         ("zero", "def z():\n    return 0")]
TASK1 = [("add two", "def f2(x):\n    return x + 2"), ("name", "def f3(x):\n    return x")]


def task_data(index, examples, tokenizer) -> TaskData:
    return TaskData(index, examples, [], tokenizer.pad_token_id, torch.device("cpu"))


def reference_fisher(model, names, examples) -> dict[str, torch.Tensor]:
    """Mean over examples of (∂ℓ/∂θ)², ℓ = mean over target tokens of log p(y_t | x, y_<t), by hand."""
    model.eval()
    named = dict(model.named_parameters())
    parameters = [named[n] for n in names]
    total = [torch.zeros_like(p) for p in parameters]
    for example in examples:
        labels = torch.tensor([example.target_ids])
        logits = model(input_ids=torch.tensor([example.source_ids]), labels=labels).logits[0]
        log_likelihood = logits.log_softmax(-1).gather(1, labels[0][:, None]).mean()
        for t, grad in zip(total, torch.autograd.grad(log_likelihood, parameters, allow_unused=True)):
            if grad is not None:
                t += grad.square()
    return {n: t / len(examples) for n, t in zip(names, total)}


def with_dropout(model: nn.Module) -> nn.Module:
    """Dropout at 0.5 everywhere: a Fisher taken in train mode would then be noise, not the reference."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.5
    return model


@pytest.mark.parametrize("options", [{}, {"base": "lora", "r": 4}])
def test_fisher_equals_a_hand_written_per_example_reference(options, tiny_base):
    base, tokenizer = tiny_base
    method = build(fisher_examples=3, **options)
    model = with_dropout(method.attach(copy.deepcopy(base)))
    trained = method.begin_task(model, 0)
    examples = hand_made(tokenizer, TASK0)
    model.train()
    method.end_task(model, task_data(0, examples, tokenizer))
    assert all(module.training for module in model.modules())  # the mode is given back
    assert {id(dict(model.named_parameters())[n]) for n in method.fisher} == {id(p) for p in trained}
    expected = reference_fisher(model, list(method.fisher), examples)
    for name, value in expected.items():
        torch.testing.assert_close(method.fisher[name], value, rtol=1e-4, atol=1e-12)
    assert sum(v.sum() for v in expected.values()) > 0


def test_a_parameter_outside_the_forward_path_has_exactly_zero_fisher(tiny_base):
    base, tokenizer = tiny_base
    method = build(fisher_examples=3)
    model = method.attach(copy.deepcopy(base))
    model.register_parameter("unused", nn.Parameter(torch.ones(5)))
    method.begin_task(model, 0)
    method.end_task(model, task_data(0, hand_made(tokenizer, TASK0), tokenizer))
    assert torch.equal(method.fisher["unused"], torch.zeros(5))


def test_online_decay_sums_gamma_times_the_old_fisher_and_the_new_one(tiny_base):
    base, tokenizer = tiny_base
    method = build(fisher_examples=3, gamma=0.5)
    model = method.attach(copy.deepcopy(base))
    first, second = hand_made(tokenizer, TASK0), hand_made(tokenizer, TASK1)
    method.begin_task(model, 0)
    fisher_0 = reference_fisher(model, [n for n, _ in model.named_parameters()], first)
    method.end_task(model, task_data(0, first, tokenizer))
    torch.manual_seed(1)
    with torch.no_grad():  # stands in for training on the second task
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    method.begin_task(model, 1)
    fisher_1 = reference_fisher(model, list(fisher_0), second)
    method.end_task(model, task_data(1, second, tokenizer))
    for name in fisher_0:
        torch.testing.assert_close(method.fisher[name], 0.5 * fisher_0[name] + fisher_1[name], rtol=1e-4, atol=1e-12)
    named = dict(model.named_parameters())
    assert all(torch.equal(method.anchor[n], named[n]) for n in fisher_0)  # θ* is θ after the last task


@pytest.mark.parametrize("options", [{}, {"base": "lora", "r": 4}])
def test_penalty_is_zero_at_the_anchor_and_its_gradient_is_the_closed_form(options, tiny_base, tiny_batch):
    base, tokenizer = tiny_base
    method = build(fisher_examples=3, ewc_lambda=250.0, **options)
    model = method.attach(copy.deepcopy(base))
    trained = method.begin_task(model, 0)
    assert method.extra_loss(model, tiny_batch) is None  # nothing to hold on to before a task ends
    method.end_task(model, task_data(0, hand_made(tokenizer, TASK0), tokenizer))
    assert method.extra_loss(model, tiny_batch).item() == 0.0

    torch.manual_seed(2)
    named = dict(model.named_parameters())
    for name in method.fisher:  # hand-set F̃, so that every weight counts
        method.fisher[name] = torch.rand_like(method.fisher[name])
    method.bound_to = None
    shifts = {name: 0.01 * torch.randn_like(named[name]) for name in method.fisher}
    with torch.no_grad():
        for name, shift in shifts.items():
            named[name].add_(shift)
    # θ − θ* as stored: θ + shift rounds in float32, so the shift itself is only equal to 1e-7 or so.
    moved = {name: (named[name] - method.anchor[name]).detach() for name in shifts}
    assert all(torch.allclose(moved[n], shifts[n], rtol=0, atol=1e-6) for n in shifts)
    penalty = method.extra_loss(model, tiny_batch)
    expected = 0.5 * 250.0 * sum((method.fisher[n] * moved[n].square()).sum() for n in shifts)
    torch.testing.assert_close(penalty, expected, rtol=1e-5, atol=0)
    grads = torch.autograd.grad(penalty, trained)
    by_id = {id(p): g for p, g in zip(trained, grads)}
    for name in shifts:
        torch.testing.assert_close(by_id[id(named[name])], 250.0 * method.fisher[name] * moved[name], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("options", [{}, {"base": "lora", "r": 4}])
def test_a_loaded_method_has_the_same_fisher_anchor_and_penalty(options, tiny_base, tiny_batch, tmp_path):
    base, tokenizer = tiny_base
    method = build(fisher_examples=3, **options)
    model = method.attach(copy.deepcopy(base))
    method.begin_task(model, 0)
    method.end_task(model, task_data(0, hand_made(tokenizer, TASK0), tokenizer))
    method.save(model, tmp_path, task_count=1)
    fresh = build(fisher_examples=3, **options)
    restored = fresh.attach(copy.deepcopy(base))
    fresh.load(restored, tmp_path)
    assert fresh.tasks_seen == 1 and set(fresh.fisher) == set(method.fisher)
    assert all(torch.equal(fresh.fisher[n], method.fisher[n]) for n in method.fisher)
    assert all(torch.equal(fresh.anchor[n], method.anchor[n]) for n in method.fisher)
    for each_method, each_model in ((method, model), (fresh, restored)):
        trained = each_method.begin_task(each_model, 1)
        with torch.no_grad():
            for parameter in trained:
                parameter.add_(0.01)
    assert torch.equal(fresh.extra_loss(restored, tiny_batch), method.extra_loss(model, tiny_batch))
