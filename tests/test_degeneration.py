"""The degeneration diagnostic against hand-made predictions: loops, a repeated template, varied outputs.

Predictions are split into word and punctuation tokens here, so each case's tokens can be counted by eye;
the expected shares are counted by hand from the definition in `codecl.evaluate.degeneration`.
"""

import copy
import re

import pytest
from accelerate import Accelerator

from codecl.config import EvalConfig
from codecl.data.tasks import Example
from codecl.evaluate.decode import generations
from codecl.evaluate.degeneration import distinct_share, is_repetition_loop, loop_share, periodic_run_at_end

LIMIT = 40  # the token limit the hand-made generations below ran to, or stopped before


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]|\n", text)


def cut_at_limit(text: str) -> list[str]:
    return tokens(text)[:LIMIT]


# `def _get_name(self, a, a, a, ...` until the limit: 4 tokens, then the unit `, a` 18 times.
A_LOOP = cut_at_limit("def _get_name(self" + ", a" * 40)
# One line repeated: `self . x = x \n` is a unit of 6 tokens, 5.5 times after the 7-token header.
LINE_LOOP = cut_at_limit("def __init__(self):\n" + "self.x = x\n" * 10)
# A correct function longer than the limit: no unit repeats at its end.
LONG_FUNCTION = cut_at_limit(
    "def read_config(path, defaults=None):\n"
    "    with open(path) as handle:\n"
    "        values = json.load(handle)\n"
    "    merged = dict(defaults or {})\n"
    "    merged.update(values)\n"
    "    return merged\n"
)
TEMPLATE = "def get(self):\n    return self.value"


def test_the_hand_made_cases_are_what_they_claim():
    assert len(A_LOOP) == len(LINE_LOOP) == len(LONG_FUNCTION) == LIMIT
    assert A_LOOP[-4:] == [",", "a", ",", "a"] and LINE_LOOP[-3:] == ["self", ".", "x"]


def test_a_loop_cut_by_the_limit_is_a_loop():
    assert is_repetition_loop(A_LOOP, hit_limit=True)
    assert is_repetition_loop(LINE_LOOP, hit_limit=True)


def test_a_loop_that_breaks_off_in_its_last_unit_is_a_loop():
    # 7 header tokens, the 6-token line 5 times, then `self . y`: the run of period 6 ends at index 38,
    # one token before the end; it is 33 tokens long (27 matches from index 12, plus the first unit).
    broken_off = tokens("def __init__(self):\n" + "self.x = x\n" * 5 + "self.y")
    assert len(broken_off) == LIMIT and periodic_run_at_end(broken_off, 6) == 33
    assert is_repetition_loop(broken_off, hit_limit=True)


def test_a_generation_that_left_its_loop_before_the_last_unit_is_not_a_loop():
    # The line 4 times (ends at index 30), then 9 other tokens: the run ends 9 > 6 tokens before the end.
    escaped = tokens("def __init__(self):\n" + "self.x = x\n" * 4 + "return dict(a=1, b=")
    assert len(escaped) == LIMIT
    assert not is_repetition_loop(escaped, hit_limit=True)


def test_a_long_correct_function_at_the_limit_is_not_a_loop():
    assert not is_repetition_loop(LONG_FUNCTION, hit_limit=True)


def test_a_generation_that_emitted_eos_is_never_a_loop():
    assert not is_repetition_loop(A_LOOP, hit_limit=False)


def test_periodic_run_counts_the_first_unit():
    assert periodic_run_at_end(list("xababa"), 2) == 5
    assert periodic_run_at_end(list("abc"), 1) == 0
    assert periodic_run_at_end(list("aaab"), 1) == 3  # ends 1 token before the end: within one unit
    assert periodic_run_at_end(list("aaabc"), 1) == 0  # ends 2 tokens before: too early
    # A_LOOP: from index 6 on, every token equals the one two back (index 5, `a`, is preceded by `self`):
    # 34 matches plus the first unit, the 36 tokens after the header.
    assert periodic_run_at_end(A_LOOP, 2) == 36
    # LINE_LOOP: the 7-token header `def __init__ ( self ) : \n` ends one unit of 6 before the line
    # repeats, and its `\n` matches: the tail runs from index 6, 34 tokens.
    assert periodic_run_at_end(LINE_LOOP, 6) == 34


def test_short_repeats_at_the_limit_are_not_loops():
    # Period 1 needs 12 repeated tokens, period 5 needs 15 (three units).
    assert not is_repetition_loop(["x", "="] + ["0"] * 11, hit_limit=True)
    assert is_repetition_loop(["x", "="] + ["0"] * 12, hit_limit=True)
    unit = ["foo", "(", "x", ")", ";"]
    assert not is_repetition_loop(["return"] + unit * 2 + unit[:4], hit_limit=True)  # 14 tokens
    assert is_repetition_loop(["return"] + unit * 3, hit_limit=True)  # 15 tokens


def test_units_up_to_32_tokens_count():
    unit = [f"t{i}" for i in range(32)]
    assert is_repetition_loop(["start"] + unit * 3, hit_limit=True)
    longer = [f"t{i}" for i in range(33)]
    assert not is_repetition_loop(["start"] + longer * 3, hit_limit=True)


def test_collapsed_predictions():
    # 4 loops to the limit (2 of them the same text) and 4 copies of one template that ended by itself.
    other_loop = cut_at_limit("def f(self" + ", a" * 40)
    generated = [A_LOOP, A_LOOP, LINE_LOOP, other_loop] + [tokens(TEMPLATE)] * 4
    texts = [" ".join(t) for t in generated[:4]] + [TEMPLATE] * 4
    hit_limit = [True] * 4 + [False] * 4
    assert distinct_share(texts) == 100.0 * 4 / 8  # A_LOOP, LINE_LOOP, other_loop, TEMPLATE
    assert loop_share(generated, hit_limit) == 100.0 * 4 / 8


def test_a_repeated_template_has_low_distinct_and_no_loop():
    texts = [TEMPLATE, TEMPLATE + "\n", "  " + TEMPLATE] + [TEMPLATE] * 7  # equal after stripping
    assert distinct_share(texts) == 10.0
    assert loop_share([tokens(t) for t in texts], [False] * 10) == 0.0


def test_varied_outputs_are_all_distinct_and_not_loops():
    texts = [f"def f{i}(x):\n    return x + {i}" for i in range(5)] + [" ".join(LONG_FUNCTION)]
    hit_limit = [False] * 5 + [True]
    assert distinct_share(texts) == 100.0
    assert loop_share([tokens(t) for t in texts[:5]] + [LONG_FUNCTION], hit_limit) == 0.0


def test_real_tokenizer_ids_of_a_loop(tiny_base):
    _, tokenizer = tiny_base
    ids = tokenizer("def _get_name(self" + ", a" * 60, add_special_tokens=False)["input_ids"][:LIMIT]
    assert is_repetition_loop(ids, hit_limit=True)
    ids = tokenizer(" ".join(LONG_FUNCTION), add_special_tokens=False)["input_ids"][:LIMIT]
    assert not is_repetition_loop(ids, hit_limit=True)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no predictions"):
        distinct_share([])
    with pytest.raises(ValueError, match="2 generations but 1"):
        loop_share([["a"], ["b"]], [True])


def test_generations_carry_their_tokens_and_whether_the_limit_stopped_them(tiny_base):
    model, tokenizer = tiny_base
    sources = ["add one to x", "double the value a", "x"]
    examples = [Example(s, "", tokenizer(s)["input_ids"], []) for s in sources]
    config, accelerator = EvalConfig(batch_size=2, max_new_tokens=6), Accelerator(cpu=True)
    # The random tiny model never picks EOS in 6 tokens: every generation runs to the limit.
    for generated in generations(model, tokenizer, examples, config, accelerator, "python"):
        assert generated.hit_limit and len(generated.token_ids) == 6
        assert tokenizer.decode(generated.token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) == generated.text
    # Forced to emit EOS first, it stops at once: nothing generated, and not by the limit.
    stops_at_once = copy.deepcopy(model)
    stops_at_once.generation_config.forced_bos_token_id = tokenizer.eos_token_id
    for generated in generations(stops_at_once, tokenizer, examples, config, accelerator, "python"):
        assert (generated.text, generated.token_ids, generated.hit_limit) == ("", [], False)
