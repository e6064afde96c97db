"""codecl's greedy loop against `generate()`: the same tokens, however rows finish, and the fallback to
`generate()` where the generation config asks for logits processing."""

import copy

import pytest
import torch
from accelerate import Accelerator

from codecl.config import EvalConfig
from codecl.data.tasks import Example
from codecl.evaluate.decode import generations
from codecl.evaluate.greedy import COMPACT_AT, NEUTRAL, ReservedLayer, plain_greedy

LIMIT = 16
SOURCES = [
    "x", "add one to x", "double the value a", "return x plus 3", "scale the rows by the factor",
    "count the names", "f", "merge two lists of scores into one sorted list", "a b", "clip values",
    "render the items", "filter tokens that are empty",
]


def reference(model, tokenizer, source: str, **options) -> list[int]:
    """generate() on the one input alone (no padding, no other rows) and without any KV cache: the
    tokens before EOS."""
    input_ids = torch.tensor([tokenizer(source)["input_ids"]])
    with torch.no_grad():
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                num_beams=1, max_new_tokens=LIMIT, use_cache=False, **options)[0, 1:].tolist()
    return output[: output.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in output else output


def examples(tokenizer) -> list[Example]:
    return [Example(s, "", tokenizer(s)["input_ids"], []) for s in SOURCES]


@pytest.fixture
def stops_at_varied_steps(tiny_base):
    """The random tiny T5, made to pick EOS whenever one hidden unit's value has a small fractional part
    (x100): a deterministic function of the row's own state, so each input stops at its own step. The
    untouched model never picks EOS (it loops), which would leave early finishing untested."""
    model, tokenizer = tiny_base
    model = copy.deepcopy(model)

    def eos_now_and_then(module, inputs, logits):
        logits[..., tokenizer.eos_token_id] += 100.0 * ((inputs[0][..., 2] * 100).frac().abs() < 0.05)
        return logits

    model.lm_head.register_forward_hook(eos_now_and_then)
    return model, tokenizer


def generate_refused(*args, **kwargs):
    raise AssertionError("generate() was called where codecl's greedy loop should decode")


def test_greedy_gives_generates_tokens_as_rows_finish_and_leave_the_batch(stops_at_varied_steps, monkeypatch):
    model, tokenizer = stops_at_varied_steps
    expected = [reference(model, tokenizer, s) for s in SOURCES]
    monkeypatch.setattr(model, "generate", generate_refused)
    lengths = [len(tokens) for tokens in expected]
    # The case under test: rows end at several different steps, some run to the limit, and enough end
    # early that finished rows are dropped from the batch at least once.
    assert len(set(lengths)) >= 3 and LIMIT in lengths
    assert sum(n < LIMIT for n in lengths) >= COMPACT_AT * len(SOURCES)
    for batch_size in (1, 5, len(SOURCES)):
        config = EvalConfig(batch_size=batch_size, max_new_tokens=LIMIT)
        got = generations(model, tokenizer, examples(tokenizer), config, Accelerator(cpu=True), "python")
        assert [g.token_ids for g in got] == expected
        assert [g.hit_limit for g in got] == [n == LIMIT for n in lengths]
        assert [g.text for g in got] == [tokenizer.decode(t, skip_special_tokens=True) for t in expected]


def test_logits_processing_in_the_generation_config_is_left_to_generate(stops_at_varied_steps, monkeypatch):
    model, tokenizer = stops_at_varied_steps
    model = copy.deepcopy(model)
    plain = [reference(model, tokenizer, s) for s in SOURCES]
    model.generation_config.no_repeat_ngram_size = 2
    expected = [reference(model, tokenizer, s) for s in SOURCES]
    assert expected != plain  # the setting changes what greedy search picks on this model
    calls = []
    monkeypatch.setattr(model, "generate", lambda *a, generate=model.generate, **k: calls.append(1) or generate(*a, **k))
    config = EvalConfig(batch_size=4, max_new_tokens=LIMIT)
    got = generations(model, tokenizer, examples(tokenizer), config, Accelerator(cpu=True), "python")
    assert [g.token_ids for g in got] == expected and len(calls) == 3  # 12 inputs in batches of 4


@pytest.mark.parametrize("setting, value", [
    ("repetition_penalty", 1.3), ("min_new_tokens", 2), ("suppress_tokens", [5]), ("guidance_scale", 2.0),
    ("eos_token_id", 7), ("decoder_start_token_id", None),
])
def test_greedy_loop_is_taken_only_for_plain_greedy(tiny_base, setting, value):
    model, tokenizer = tiny_base
    config = copy.deepcopy(model.generation_config)
    assert plain_greedy(config, tokenizer.eos_token_id)
    for neutral in (None, NEUTRAL.get(setting)):  # a neutral value set explicitly keeps the loop
        setattr(config, setting, neutral)
        if setting not in ("eos_token_id", "decoder_start_token_id"):
            assert plain_greedy(config, tokenizer.eos_token_id)
    setattr(config, setting, value)
    config.bos_token_id = None
    assert not plain_greedy(config, tokenizer.eos_token_id)


def test_a_single_new_token(stops_at_varied_steps):
    model, tokenizer = stops_at_varied_steps
    config = EvalConfig(batch_size=5, max_new_tokens=1)
    got = generations(model, tokenizer, examples(tokenizer), config, Accelerator(cpu=True), "python")
    first = [reference(model, tokenizer, s)[:1] for s in SOURCES]
    assert [g.token_ids for g in got] == first and all(g.hit_limit == (len(t) == 1) for g, t in zip(got, first))


def test_reserved_cache_layer_returns_what_was_written_and_refuses_to_overflow():
    layer = ReservedLayer(capacity=3)
    first, second = torch.randn(2, 1, 1, 4), torch.randn(2, 1, 2, 4)
    layer.update(first, -first)
    keys, values = layer.update(second, -second)
    assert torch.equal(keys, torch.cat([first, second], dim=2)) and torch.equal(values, -keys)
    assert layer.get_seq_length() == 3 == layer.get_max_length()
    layer.batch_select_indices(torch.tensor([1]))
    assert torch.equal(layer.keys, torch.cat([first, second], dim=2)[1:])
    assert torch.equal(layer.values, -layer.keys)
    with pytest.raises(RuntimeError, match="holds 3 positions"):
        layer.update(first[:1], first[:1])
