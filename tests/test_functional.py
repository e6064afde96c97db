"""HumanEval as the model sees it: the inputs built from each problem, and seeded sampling for pass@k."""

import shutil

import pytest
from accelerate import Accelerator

from codecl.config import EvalConfig
from codecl.evaluate import functional
from codecl.evaluate.decode import generate, sample
from codecl.evaluate.functional import build_humaneval_tasks, encode, model_input, model_inputs, pass_at_1
from codecl.evaluate.humaneval import read_python_problems


def test_python_inputs_are_the_docstring_summary_without_doctests():
    sources, skipped = model_inputs("python", with_signature=False)
    assert len(sources) == 164 and skipped == []
    assert sources["HumanEval/0"] == (
        "Check if in given list of numbers, are any two numbers closer to each other than given threshold."
    )
    assert all(text.strip() and ">>>" not in text for text in sources.values())
    # HumanEval/115 imports before its docstring; the docstring is still found.
    assert sources["HumanEval/115"].startswith("You are given a rectangular grid of wells.")


def test_signature_comes_first_when_asked():
    sources, _ = model_inputs("python", with_signature=True)
    assert sources["HumanEval/0"].splitlines() == [
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:",
        "Check if in given list of numbers, are any two numbers closer to each other than given threshold.",
    ]
    for task_id, problem in read_python_problems().items():
        assert sources[task_id].startswith(f"def {problem['entry_point']}("), task_id


def test_model_input_keeps_the_first_paragraph():
    assert model_input("Add two numbers.\n\nMore detail.\n>>> add(1, 2)\n3", "def add(a, b):", False) == "Add two numbers."
    assert model_input("Add.", "def add(a, b):", True) == "def add(a, b):\nAdd."


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_javascript_inputs_skip_the_untranslated_problems():
    sources, skipped = model_inputs("javascript", with_signature=True)
    assert len(sources) + len(skipped) == 164
    assert {task_id for task_id, _ in skipped} == {"HumanEval/10", "HumanEval/32", "HumanEval/38", "HumanEval/50"}
    assert sources["HumanEval/0"].startswith("function has_close_elements(numbers, threshold)\n")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_javascript_task_lists_the_dropped_assertion(tiny_base):
    _, tokenizer = tiny_base
    (everything,) = build_humaneval_tasks(EvalConfig(humaneval=["javascript"]), tokenizer, max_source_tokens=16)
    assert len(everything.task_ids) == 160 and len(everything.skipped) == 4
    assert [(t, why.split(":")[0]) for t, why in everything.dropped] == [("HumanEval/92", "candidate(3.0, 4, 7) == False")]
    # A limited run lists only what it scores.
    (first,) = build_humaneval_tasks(EvalConfig(humaneval=["javascript"], humaneval_limit=3), tokenizer, 16)
    assert first.dropped == []


# What a docstring-to-code model writes for HumanEval/0-2: whole functions under its own names,
# followed by what it went on to write. Hand-written; the cut versions are what is scored and saved.
CLOSE = ("def close(numbers, threshold):\n"
         "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n")
SEPARATE = ("def separate(paren_string):\n"
            "    groups, depth, current = [], 0, ''\n"
            "    for c in paren_string.replace(' ', ''):\n"
            "        depth += 1 if c == '(' else -1\n"
            "        current += c\n"
            "        if depth == 0:\n"
            "            groups.append(current)\n"
            "            current = ''\n"
            "    return groups\n")
TRUNCATE_WRONG = "def truncate(number):\n    return round(number)\n"


def test_pass_at_1_scores_and_saves_the_completions_as_cut(tiny_base, monkeypatch):
    model, tokenizer = tiny_base
    outputs = [CLOSE + "\n\nprint(close([1.0, 2.0], 0.5))\n",
               SEPARATE + "\n\nif __name__ == '__main__':\n    import sys\n    sys.exit(0)\n",
               TRUNCATE_WRONG + "\ndef unrelated(:\n"]  # a broken second function, cut away
    monkeypatch.setattr(functional, "generate", lambda *args, **kwargs: list(outputs))
    config = EvalConfig(humaneval=["python"], humaneval_limit=3)
    (task,) = build_humaneval_tasks(config, tokenizer, max_source_tokens=16)
    evaluation = pass_at_1(model, tokenizer, task, config, Accelerator(cpu=True))
    assert evaluation.completions == [CLOSE + "\n", SEPARATE + "\n", TRUNCATE_WRONG]
    assert evaluation.passed == [True, True, False]
    assert evaluation.pass_at_1 == pytest.approx(200 / 3)


def test_humaneval_tasks_follow_the_config(tiny_base):
    _, tokenizer = tiny_base
    config = EvalConfig(humaneval=["python"], humaneval_limit=3)
    (task,) = build_humaneval_tasks(config, tokenizer, max_source_tokens=16)
    assert task.name == "humaneval-python" and task.task_ids == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert all(0 < len(e.source_ids) <= 16 for e in task.examples)
    assert build_humaneval_tasks(EvalConfig(), tokenizer, 16) == []


def test_unknown_humaneval_language_is_rejected():
    with pytest.raises(ValueError, match="humaneval"):
        EvalConfig(humaneval=["rust"])


def test_sampling_is_seeded_and_greedy_is_its_own_path(tiny_base):
    model, tokenizer = tiny_base
    config = EvalConfig(batch_size=4, max_new_tokens=8)
    examples = encode(tokenizer, {str(i): f"return x plus {i}" for i in range(3)}, max_source_tokens=16)
    accelerator = Accelerator(cpu=True)
    first = sample(model, tokenizer, examples, config, accelerator, "python", n=3, temperature=1.0, top_p=1.0, seed=7)
    again = sample(model, tokenizer, examples, config, accelerator, "python", n=3, temperature=1.0, top_p=1.0, seed=7)
    other = sample(model, tokenizer, examples, config, accelerator, "python", n=3, temperature=1.0, top_p=1.0, seed=8)
    assert first == again
    assert [len(outputs) for outputs in first] == [3, 3, 3]
    # A random tiny model at temperature 1 draws from a near-uniform distribution over 320 tokens:
    # two seeds giving the same 9 x 8 tokens would mean the seed is ignored.
    assert first != other
    greedy = generate(model, tokenizer, examples, config, accelerator, "python")
    assert greedy == generate(model, tokenizer, examples, config, accelerator, "python")


def test_new_tokens_per_language():
    config = EvalConfig(max_new_tokens=5, max_new_tokens_per_language={"python": 9})
    assert (config.new_tokens("python"), config.new_tokens("javascript")) == (9, 5)
    with pytest.raises(ValueError):
        EvalConfig(max_new_tokens_per_language={"cobol": 3})
