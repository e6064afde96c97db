"""The method matrix: every registered method, on tiny T5s, against the promises it makes."""

import copy
import random
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from peft import PeftModel
from pydantic import BaseModel
from torch import nn
from transformers import PretrainedConfig, T5ForConditionalGeneration

from codecl.config import EvalConfig, TrainConfig
from codecl.data.tasks import Example
from codecl.errors import UserError
from codecl.evaluate.decode import decoder_cache, generations
from codecl.methods import METHODS
from codecl.methods.base import TaskData
from codecl.methods.growth import base_name
from codecl.job import train_method_on_task


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
    "replay-full": Case("replay", {"buffer_size": 4}, freezes_base=False),  # a memory of more than one, in an order
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


def train(model, method, task_index, batch, tokenizer, stream=None, config=None):
    """One task the runner's way (every hook). Each task trains on the same examples, unless `stream`
    gives every task's examples."""
    stream = stream or [examples_from(batch, tokenizer)] * (task_index + 1)
    task = TaskData(task_index, stream[task_index], stream[:task_index], tokenizer.pad_token_id, torch.device("cpu"))
    parameters, result = train_method_on_task(
        method, model, task, config or TrainConfig(epochs=3, batch_size=2, log_every=100), learning_rate=1e-2,
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


def distinct_stream(batch, tokenizer, tasks: int) -> list[list[Example]]:
    """Per task, 4 examples unlike each other and every other task's: a memory restored out of order or
    a union missing a task trains on different examples."""
    rows = examples_from(batch, tokenizer)[:4]
    return [[Example(f"s{task}.{j}", row.target, [10 + len(rows) * task + j] + row.source_ids, row.target_ids)
             for j, row in enumerate(rows)] for task in range(tasks)]


def is_plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return isinstance(value, (bool, int, float, str, type(None)))


def assert_same_model(model: nn.Module, other: nn.Module, where: str) -> None:
    """Bit-identical tensors, the same parameters trainable, and the same plain settings on every
    submodule (the active slot or adapter, head counts, layer indices) and in the model's config."""
    state, other_state = model.state_dict(), other.state_dict()
    assert state.keys() == other_state.keys(), where
    differ = [name for name in state if not torch.equal(state[name], other_state[name])]
    assert not differ, f"{where}: tensors differ, e.g. {differ[:3]}"
    trainable = [(n, p.requires_grad) for n, p in model.named_parameters()]
    assert trainable == [(n, p.requires_grad) for n, p in other.named_parameters()], where

    def settings(module: nn.Module) -> dict:
        return {(name, key): value for name, sub in module.named_modules() for key, value in vars(sub).items() if is_plain(value)}

    assert settings(model) == settings(other), where
    if isinstance(getattr(model, "config", None), PretrainedConfig):
        # Less what save_pretrained stamps on the config it saves, which computes nothing.
        stamped = ("architectures", "dtype", "torch_dtype", "transformers_version")
        config, other_config = ({k: v for k, v in m.config.to_dict().items() if k not in stamped} for m in (model, other))
        assert config == other_config, where


def assert_same_state(value, other, where: str) -> None:
    """Everything a method holds, by value: tensors bit for bit, modules as models, containers item by item
    (dicts by key: their order decides nothing), other objects attribute by attribute."""
    assert type(value) is type(other), where
    if isinstance(value, torch.Tensor):
        assert torch.equal(value, other), where
    elif isinstance(value, nn.Module):
        assert_same_model(value, other, where)
    elif isinstance(value, dict):
        assert value.keys() == other.keys(), where
        for key in value:
            assert_same_state(value[key], other[key], f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        assert len(value) == len(other), where
        for index, (item, other_item) in enumerate(zip(value, other)):
            assert_same_state(item, other_item, f"{where}[{index}]")
    elif hasattr(value, "__dict__") and not is_dataclass(value) and not isinstance(value, BaseModel):
        assert_same_state(vars(value), vars(other), where)
    else:
        assert value == other, where


def rng_states() -> tuple:
    return torch.get_rng_state(), random.getstate()


def restore_rng(states: tuple) -> None:
    torch.set_rng_state(states[0])
    random.setstate(states[1])


def same_rng(states: tuple, other: tuple) -> bool:
    return torch.equal(states[0], other[0]) and states[1] == other[1]


def saved_files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("name", CASES)
def test_save_after_a_task_then_load_continues_bit_identically(name, tiny_base, tiny_batch, tmp_path):
    """The resume promise: a method saved after task k, built afresh, attached to the base, loaded, and given
    back the RNG states of the moment it was saved, trains tasks k+1, k+2, ... to exactly what the run that
    never stopped trains: the same parameters trained, the same model, the same method state, the same
    outputs for every task. Every run saves after every task, as the runner does, and must write the
    straight run's bytes; one run is resumed after task 0 and goes on to task 2, another after task 1."""
    base, tokenizer = tiny_base
    stream = distinct_stream(tiny_batch, tokenizer, 3)
    brief = TrainConfig(epochs=1, batch_size=2, log_every=100)  # two steps a task
    method = build(CASES[name])
    runs = [(method, method.attach(copy.deepcopy(base)))]  # runs[0] goes straight through
    rng = rng_states()
    for task in range(3):
        after, trained_names = [], []
        for method, model in runs:
            restore_rng(rng)
            parameters = train(model, method, task, tiny_batch, tokenizer, stream=stream, config=brief)
            after.append(rng_states())
            names = {id(p): n for n, p in model.named_parameters()}
            trained_names.append([names[id(p)] for p in parameters])  # what the optimiser got, in its order
        assert all(same_rng(states, after[0]) for states in after), f"task {task}: training drew other random numbers"
        assert all(names == trained_names[0] for names in trained_names), f"task {task}: other parameters trained"
        straight_method, straight_model = runs[0]
        for run, (method, model) in enumerate(runs[1:], start=1):
            where = f"after task {task}, the run resumed after task {run - 1}"
            assert_same_model(straight_model, model, where)
            assert_same_state(vars(straight_method), vars(method), f"{where}: method")
        # Then evaluated as the runner does, every run alike: every task so far.
        outputs = [[(method.use_task(model, evaluated), logits(model, tiny_batch))[1] for evaluated in range(task + 1)]
                   for method, model in runs]
        for run, run_outputs in enumerate(outputs[1:], start=1):
            for evaluated, (got, expected) in enumerate(zip(run_outputs, outputs[0])):
                assert torch.equal(got, expected), f"after task {task}, the run resumed after task {run - 1}: task {evaluated}"
        if task == 2:
            break
        rng = rng_states()  # what the runner keeps beside the method's files
        folders = [tmp_path / f"run{run}" / f"task{task}" for run in range(len(runs))]
        for (method, model), folder in zip(runs, folders):
            method.save(model, folder, task_count=task + 1)
        # The runner may take them before saving or after: the same only if saving draws nothing.
        assert same_rng(rng_states(), rng), "saving drew random numbers"
        # A resumed run's checkpoint is the straight run's, byte for byte: resuming it again resumes that.
        for folder in folders[1:]:
            assert saved_files(folder) == saved_files(folders[0]), f"after task {task}: {folder.parent.name} saved other bytes"
        resumed = build(CASES[name])
        resumed_model = resumed.attach(copy.deepcopy(base))
        resumed.load(resumed_model, folders[0])
        runs.append((resumed, resumed_model))


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
