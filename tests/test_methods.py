"""The method matrix: every registered method, on tiny T5s, against the promises it makes."""

import copy
from dataclasses import dataclass, field

import pytest
import torch
from accelerate import Accelerator
from peft import PeftModel
from transformers import T5ForConditionalGeneration

from codecl.config import EvalConfig, TrainConfig
from codecl.data.tasks import Example
from codecl.errors import UserError
from codecl.evaluate.decode import decoder_cache, generations
from codecl.methods import METHODS
from codecl.methods.base import TaskData
from codecl.methods.growth import base_name
from codecl.runner import train_method_on_task


@dataclass
class Case:
    method: str
    options: dict = field(default_factory=dict)
    trains: bool = True
    freezes_base: bool = True
    isolates_tasks: bool = False  # task-aware: training a later task cannot change an earlier one
    new_parameters_per_task: bool = False  # each task trains parameters of its own (implied by isolates_tasks)
    exportable: bool = True


CASES = {
    "frozen": Case("frozen", trains=False),
    "ewc-full": Case("ewc", freezes_base=False),
    "ewc-lora": Case("ewc", {"base": "lora", "r": 4}),
    "replay-full": Case("replay", freezes_base=False),
    "replay-lora-balanced": Case("replay", {"base": "lora", "r": 4, "sampling": "balanced"}),
    "full-ft": Case("full-ft", freezes_base=False),
    "multitask": Case("multitask", freezes_base=False),
    "olora": Case("olora", {"r": 4}, new_parameters_per_task=True),  # every adapter summed at inference: no task isolation to test here
    "lora-per-task": Case("lora", {"per_task": True, "r": 4}, isolates_tasks=True),
    "lora-stream": Case("lora", {"per_task": False, "r": 4}),
    "layers-per-task": Case("layers", {"per_task": True, "num_layers": 2}, isolates_tasks=True),
    "layers-stream-decoder": Case("layers", {"per_task": False, "position": "decoder"}),
    "hybrid": Case("hybrid", {"r": 4}, isolates_tasks=True),
    "hybrid-shared-layer": Case("hybrid", {"r": 4, "shared_layer": True}, isolates_tasks=True),
    "ffn-per-task": Case("ffn", {"units": 8}, isolates_tasks=True),
    "ffn-stream-some-layers": Case("ffn", {"units": 8, "per_task": False, "layers": [1]}, exportable=False),
    "heads-per-task": Case("heads", {"heads": 2}, isolates_tasks=True),
    "heads-stream-encoder-only": Case("heads", {"heads": 1, "per_task": False, "attentions": ["encoder"]}, exportable=False),
    "heads-some-layers": Case("heads", {"heads": 1, "layers": [1]}, isolates_tasks=True, exportable=False),
}


def build(case: Case):
    entry = METHODS[case.method]
    return entry.build(entry.config_class(method=case.method, **case.options))


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def greedy(model, batch, use_cache=True) -> torch.Tensor:
    cache = {"cache": decoder_cache(model)} if use_cache else {"use_cache": False}
    with torch.no_grad():
        return model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], do_sample=False,
                              max_new_tokens=12, min_new_tokens=12, **cache)


def examples_from(batch, tokenizer) -> list[Example]:
    rows = []
    for source, labels in zip(batch["input_ids"], batch["labels"]):
        source_ids = [i for i in source.tolist() if i != tokenizer.pad_token_id]
        target_ids = [i for i in labels.tolist() if i != -100]
        rows.append(Example("s", "t", source_ids, target_ids))
    return rows * 4


def train(model, method, task_index, batch, tokenizer):
    """One task the runner's way (every hook); each task trains on the same examples."""
    examples = examples_from(batch, tokenizer)
    task = TaskData(task_index, examples, [examples] * task_index, tokenizer.pad_token_id, torch.device("cpu"))
    parameters, result = train_method_on_task(
        method, model, task, TrainConfig(epochs=3, batch_size=2, log_every=100), learning_rate=1e-2,
        accelerator=Accelerator(cpu=True), seed=task_index, log=lambda line: None,
    )
    if parameters:
        assert result.failure is None and result.steps > 0
    return parameters


@pytest.fixture(scope="module")
def trained(request):
    """Each case trained through two tasks once per module: (method, model, base, tokenizer, batch)."""
    cache = {}

    def get(name, tiny_base, tiny_batch):
        if name not in cache:
            base, tokenizer = tiny_base
            method = build(CASES[name])
            model = method.attach(copy.deepcopy(base))
            parameters = [train(model, method, task, tiny_batch, tokenizer) for task in (0, 1)]
            cache[name] = (method, model, parameters)
        return cache[name]

    return get


def test_every_registered_method_has_a_case():
    assert set(METHODS) <= {case.method for case in CASES.values()}


@pytest.mark.parametrize("name", CASES)
def test_outputs_unchanged_at_initialisation(name, tiny_base, tiny_batch):
    base, _ = tiny_base
    method = build(CASES[name])
    model = method.attach(copy.deepcopy(base))
    method.begin_task(model, 0)
    assert (logits(model, tiny_batch) - logits(base, tiny_batch)).abs().max() <= 1e-5


@pytest.mark.parametrize("name", CASES)
def test_training_changes_what_it_promises_and_nothing_else(name, trained, tiny_base, tiny_batch):
    case, (base, _) = CASES[name], tiny_base
    method, model, parameters = trained(name, tiny_base, tiny_batch)
    assert bool(parameters[0]) == case.trains
    if case.freezes_base:
        after = {base_name(n): t for n, t in model.state_dict().items()}
        assert all(torch.equal(after[n], t) for n, t in base.state_dict().items())
    else:
        assert not torch.equal(logits(model, tiny_batch), logits(base, tiny_batch))


@pytest.mark.parametrize("name", CASES)
def test_the_task_id_changes_the_outputs_exactly_when_the_method_says_it_has_per_task_parameters(
    name, trained, tiny_base, tiny_batch,
):
    """`per_task_parameters` decides who is also scored task-agnostic: a wrong declaration would drop a
    method's routed rows, or route a method whose one model serves every task."""
    method, model, _ = trained(name, tiny_base, tiny_batch)
    method.use_task(model, 0)
    first = logits(model, tiny_batch)
    method.use_task(model, 1)
    assert (not torch.equal(first, logits(model, tiny_batch))) == method.per_task_parameters


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.isolates_tasks])
def test_a_later_task_leaves_an_earlier_task_bit_identical(name, tiny_base, tiny_batch):
    base, tokenizer = tiny_base
    method = build(CASES[name])
    model = method.attach(copy.deepcopy(base))
    train(model, method, 0, tiny_batch, tokenizer)
    method.use_task(model, 0)
    after_first = logits(model, tiny_batch)
    train(model, method, 1, tiny_batch, tokenizer)
    method.use_task(model, 1)
    assert not torch.equal(logits(model, tiny_batch), after_first)
    method.use_task(model, 0)
    assert torch.equal(logits(model, tiny_batch), after_first)


@pytest.mark.parametrize("name", CASES)
def test_save_and_load_give_identical_outputs(name, trained, tiny_base, tiny_batch, tmp_path):
    base, _ = tiny_base
    method, model, _ = trained(name, tiny_base, tiny_batch)
    method.save(model, tmp_path, task_count=2)
    fresh = build(CASES[name])
    restored = fresh.attach(copy.deepcopy(base))
    fresh.load(restored, tmp_path)
    for task in (0, 1):
        method.use_task(model, task)
        fresh.use_task(restored, task)
        assert torch.equal(logits(restored, tiny_batch), logits(model, tiny_batch))


@pytest.mark.parametrize("name", CASES)
def test_generate_with_cache_equals_without(name, trained, tiny_base, tiny_batch):
    method, model, _ = trained(name, tiny_base, tiny_batch)
    for task in (0, 1):
        method.use_task(model, task)
        assert torch.equal(greedy(model, tiny_batch, use_cache=True), greedy(model, tiny_batch, use_cache=False))


@pytest.mark.parametrize("name", CASES)
def test_codecl_greedy_decoding_gives_generates_tokens(name, trained, tiny_base, tiny_batch, monkeypatch):
    """Evaluation decodes with codecl's own greedy loop: through every method's modules, it must pick
    the tokens generate() picks (without a KV cache, the plainest reference). A hook makes the LM head
    pick EOS wherever one hidden unit's value has a small fractional part, so in most cases the two
    rows end at different steps and the finished one leaves the batch, its cached keys and values
    with it (the trained models themselves never emit EOS within the limit)."""
    method, model, _ = trained(name, tiny_base, tiny_batch)
    tokenizer = tiny_base[1]
    examples = examples_from(tiny_batch, tokenizer)[:2]

    def eos_now_and_then(module, inputs, logits):
        logits[..., tokenizer.eos_token_id] += 100.0 * ((inputs[0][..., 2] * 100).frac().abs() < 0.05)
        return logits

    hook = model.get_output_embeddings().register_forward_hook(eos_now_and_then)
    try:
        for task in (0, 1):
            method.use_task(model, task)
            with torch.no_grad():
                reference = model.generate(input_ids=tiny_batch["input_ids"], attention_mask=tiny_batch["attention_mask"],
                                           do_sample=False, max_new_tokens=16, use_cache=False)
            expected = [row[1:].tolist() for row in reference]
            expected = [row[: row.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in row else row for row in expected]
            with monkeypatch.context() as patched:  # the loop must decode, not generate()
                patched.setattr(model, "generate", lambda *a, **k: pytest.fail("generate() decoded"))
                got = generations(model, tokenizer, examples, EvalConfig(batch_size=2, max_new_tokens=16),
                                  Accelerator(cpu=True))
            assert [g.token_ids for g in got] == expected
    finally:
        hook.remove()  # the trained model is shared with the other tests of this module


@pytest.mark.parametrize("name", CASES)
def test_export_is_a_plain_t5_with_the_same_greedy_outputs(name, trained, tiny_base, tiny_batch, tmp_path):
    case = CASES[name]
    method, model, _ = trained(name, tiny_base, tiny_batch)
    if not case.exportable:
        with pytest.raises(UserError, match="cannot export"):
            method.export(model, 1)
        return
    for task in (0, 1):
        method.export(model, task).save_pretrained(tmp_path / f"task{task}")
        plain = T5ForConditionalGeneration.from_pretrained(tmp_path / f"task{task}").eval()
        assert type(plain) is T5ForConditionalGeneration
        method.use_task(model, task)
        assert (logits(plain, tiny_batch) - logits(model, tiny_batch)).abs().max() <= 1e-4
        assert torch.equal(greedy(plain, tiny_batch), greedy(model, tiny_batch))


@pytest.mark.parametrize("per_task", [True, False])
def test_lora_saves_in_peft_format(per_task, tiny_base, tiny_batch, tmp_path):
    base, tokenizer = tiny_base
    method = build(Case("lora", {"per_task": per_task, "r": 4}))
    model = method.attach(copy.deepcopy(base))
    for task in (0, 1):
        train(model, method, task, tiny_batch, tokenizer)
    method.save(model, tmp_path, task_count=2)
    for task, adapter in enumerate(method.adapters):
        method.use_task(model, task)
        loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / adapter)
        assert torch.equal(logits(loaded, tiny_batch), logits(model, tiny_batch))
