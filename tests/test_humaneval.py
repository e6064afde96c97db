"""Python HumanEval: pass@k, the two completion shapes, samples files, scoring in the sandbox."""

import json
import re
import shutil
import textwrap
from math import comb, isclose

import pytest
from conftest import codecl

from codecl.errors import UserError
from codecl.evaluate.humaneval import (
    build_python_program,
    canonical_samples,
    completion_kind,
    cut_at_stop_sequences,
    load_samples,
    pass_at_k,
    read_python_problems,
    read_samples,
    score_samples,
    scored_completion,
    scored_samples,
)

PROBLEMS = 164
WRONG_BODY = "    return None\n"  # every HumanEval check compares against a real value


@pytest.fixture(scope="module")
def problems() -> dict[str, dict]:
    return read_python_problems()


@pytest.fixture(scope="module")
def canonical_result():
    """All 164 canonical solutions scored once (about 8 s on 2 cores)."""
    return score_samples(canonical_samples())


def canonical(problems, task_id: str) -> dict:
    return {"task_id": task_id, "completion": problems[task_id]["canonical_solution"]}


def whole_function(problem: dict) -> str:
    """The prompt from the entry point's `def` on, with the canonical body: what a model writing
    whole functions would produce (without the prompt's imports and helpers)."""
    start = problem["prompt"].index(f"def {problem['entry_point']}(")
    return problem["prompt"][start:] + problem["canonical_solution"]


def renamed(code: str, entry_point: str, name: str = "my_function") -> str:
    """``code`` with every use of the entry point's name (its `def`, recursive calls, the
    docstring's examples) replaced by ``name``: the function a model would write not knowing it."""
    return re.sub(rf"\b{re.escape(entry_point)}\b", name, code)


# --------------------------------------------------------------------------------- pass@k


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_the_closed_form(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            expected = 1 - comb(n - c, k) / comb(n, k)
            assert isclose(pass_at_k(n, c, k), expected, abs_tol=1e-12), (n, c, k)


@pytest.mark.parametrize("n, c, k, expected", [
    (1, 0, 1, 0.0),
    (1, 1, 1, 1.0),
    (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (4, 2, 2, 5 / 6),
    (10, 3, 1, 0.3),  # pass@1 is the share of passing samples
    (10, 0, 10, 0.0),
    (10, 1, 10, 1.0),
    (200, 13, 100, 1 - comb(187, 100) / comb(200, 100)),  # large n: no overflow
])
def test_pass_at_k_hand_values(n, c, k, expected):
    assert isclose(pass_at_k(n, c, k), expected, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("n, c, k", [(3, 0, 4), (3, 4, 1), (3, -1, 1), (3, 1, 0), (0, 0, 1)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(n, c, k)


# -------------------------------------------------------------------------- canonical solutions


def test_every_canonical_solution_passes(canonical_result):
    assert canonical_result.language == "python"
    assert canonical_result.problems == PROBLEMS
    assert canonical_result.solved == PROBLEMS
    assert canonical_result.pass_at_k == {1: 1.0}
    assert canonical_result.statuses == {"passed": PROBLEMS}
    assert canonical_result.missing == [] and canonical_result.unscorable == []
    assert set(canonical_result.samples_per_problem.values()) == {1}
    assert canonical_result.summary().startswith(f"pass@1 = 1.000 ({PROBLEMS}/{PROBLEMS} problems)")
    assert "sandbox: network:" in canonical_result.summary()


def test_canonical_solutions_are_bodies(problems):
    assert len(problems) == PROBLEMS
    assert {completion_kind(p, p["canonical_solution"]) for p in problems.values()} == {"body"}


def test_canonical_samples_are_python_only():
    with pytest.raises(UserError, match="canonical solutions in Python only"):
        canonical_samples("javascript")
    with pytest.raises(UserError, match="canonical solutions in Python only"):
        load_samples("canonical", "javascript")


# ------------------------------------------------------------------------------ mixed samples


def test_wrong_and_empty_completions_fail_beside_a_passing_one(problems):
    samples = [
        canonical(problems, "HumanEval/0"),
        {"task_id": "HumanEval/1", "completion": ""},
        {"task_id": "HumanEval/2", "completion": WRONG_BODY},
    ]
    result = score_samples(samples)
    assert result.problems == PROBLEMS
    first_three = {t: result.passes_per_problem[t] for t in ("HumanEval/0", "HumanEval/1", "HumanEval/2")}
    assert first_three == {"HumanEval/0": 1, "HumanEval/1": 0, "HumanEval/2": 0}
    assert sum(result.passes_per_problem.values()) == 1
    assert result.solved == 1
    assert result.statuses == {"passed": 1, "failed": 2}
    # The other 161 have no sample: listed, and scored as failing.
    assert result.missing == [f"HumanEval/{i}" for i in range(3, PROBLEMS)]
    assert all(result.samples_per_problem[t] == 0 for t in result.missing)
    assert isclose(result.pass_at_k[1], 1 / PROBLEMS)
    assert "no sample for 161 problems, scored as failing: HumanEval/3," in result.summary()


def test_pass_at_k_over_several_samples(problems):
    wrong = {"task_id": "HumanEval/0", "completion": WRONG_BODY}
    samples = [canonical(problems, "HumanEval/0"), wrong, canonical(problems, "HumanEval/0"), wrong]
    samples += [canonical(problems, "HumanEval/2")] * 3
    result = score_samples(samples, k=(2, 1))
    assert result.samples_per_problem["HumanEval/0"] == 4 and result.passes_per_problem["HumanEval/0"] == 2
    assert result.samples_per_problem["HumanEval/2"] == 3 and result.passes_per_problem["HumanEval/2"] == 3
    assert list(result.pass_at_k) == [1, 2]
    # Averaged over all 164 problems, the 162 without samples counting 0.
    assert isclose(result.pass_at_k[1], (2 / 4 + 1) / PROBLEMS)
    assert isclose(result.pass_at_k[2], ((1 - comb(2, 2) / comb(4, 2)) + 1) / PROBLEMS)
    assert isclose(result.pass_at_k[2], (5 / 6 + 1) / PROBLEMS)


def test_pass_at_k_with_fewer_samples_than_k_is_refused(problems):
    with pytest.raises(UserError, match=r"pass@2 needs at least 2 samples per problem; HumanEval/0 has 1"):
        score_samples([canonical(problems, "HumanEval/0")], k=(1, 2))


def test_unknown_language_is_refused():
    with pytest.raises(UserError, match="python or javascript"):
        score_samples([], language="rust")


# ------------------------------------------------------------------------ completion shapes


def test_body_and_whole_function_kinds(problems):
    problem = problems["HumanEval/0"]
    assert completion_kind(problem, problem["canonical_solution"]) == "body"
    assert completion_kind(problem, WRONG_BODY) == "body"
    assert completion_kind(problem, "") == "body"
    assert completion_kind(problem, whole_function(problem)) == "function"
    assert completion_kind(problem, problem["prompt"] + problem["canonical_solution"]) == "function"
    assert completion_kind(problem, "async def has_close_elements(numbers, threshold):\n    pass\n") == "function"
    # An indented helper, or the name only called, is still a body.
    assert completion_kind(problem, "    def helper(x):\n        return x\n    return False\n") == "body"
    assert completion_kind(problem, "    return has_close_elements_(numbers)\n") == "body"
    # A function at column 0 under another name is the answer, bound to the entry point.
    assert completion_kind(problem, "def has_close_elements_v2(numbers, threshold):\n") == "renamed"
    assert completion_kind(problem, "# close pairs\nimport math\n\nasync def close(n, t):\n    pass\n") == "renamed"
    assert completion_kind(problem, "LIMIT = 3\ndef close(n, t):\n    pass\n") == "renamed"
    # Code at column 0 but no function: nothing to bind, a (broken) body.
    assert completion_kind(problem, "return False\n") == "body"


def test_programs_of_both_shapes(problems):
    problem = problems["HumanEval/10"]  # its prompt defines a helper, is_palindrome, before the entry point
    body = build_python_program(problem, problem["canonical_solution"])
    assert body.startswith(problem["prompt"] + problem["canonical_solution"])
    assert body.endswith(f"{problem['test']}\n\ncheck(make_palindrome)\n")
    function = build_python_program(problem, whole_function(problem))
    assert function.count("def make_palindrome(") == 1
    assert function.count("def is_palindrome(") == 1  # the helper comes from the prompt's preamble
    assert function.endswith("check(make_palindrome)\n")


def test_whole_function_completions_are_scored(problems):
    first = problems["HumanEval/0"]
    samples = [
        # The whole prompt and its solution: imports repeated, harmless.
        {"task_id": "HumanEval/0", "completion": first["prompt"] + first["canonical_solution"]},
        # Only the function: `from typing import List` comes from the prompt.
        {"task_id": "HumanEval/1", "completion": whole_function(problems["HumanEval/1"])},
        # Only the entry point: the helper is_palindrome comes from the prompt.
        {"task_id": "HumanEval/10", "completion": whole_function(problems["HumanEval/10"])},
        # Indented, as a model may emit it inside a block: dedented.
        {"task_id": "HumanEval/2", "completion": textwrap.indent(whole_function(problems["HumanEval/2"]), "    ")},
        # A whole function that is wrong fails.
        {"task_id": "HumanEval/4", "completion": "def mean_absolute_deviation(numbers):\n    return 0.0\n"},
    ]
    assert [completion_kind(problems[s["task_id"]], s["completion"]) for s in samples] == ["function"] * 5
    result = score_samples(samples)
    assert [result.passes_per_problem[s["task_id"]] for s in samples] == [1, 1, 1, 1, 0]
    assert result.statuses == {"passed": 4, "failed": 1}


def test_hostile_completions_are_failures_not_crashes(problems):
    samples = [
        {"task_id": "HumanEval/0", "completion": "    while True:\n        pass\n"},
        {"task_id": "HumanEval/2", "completion": "    return bytearray(8 * 1024 ** 3)\n"},
        canonical(problems, "HumanEval/3"),
    ]
    result = score_samples(samples, timeout_s=1.5)  # the wall clock ends it before the 2 s CPU limit
    assert result.statuses == {"timeout": 1, "failed": 1, "passed": 1}
    assert [result.passes_per_problem[t] for t in ("HumanEval/0", "HumanEval/2", "HumanEval/3")] == [0, 0, 1]


@pytest.mark.parametrize("completion", ["    import sys\n    sys.exit(0)\n", "    import os\n    os._exit(0)\n"],
                         ids=["sys.exit", "os._exit"])
def test_exiting_early_is_not_a_pass(completion):
    result = score_samples([{"task_id": "HumanEval/0", "completion": completion}])
    assert result.passes_per_problem["HumanEval/0"] == 0
    assert result.statuses == {"exited-early": 1}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_exiting_early_is_not_a_pass_in_javascript():
    result = score_samples([{"task_id": "HumanEval/0", "completion": "  process.exit(0);\n}\n"}], language="javascript")
    assert result.passes_per_problem["HumanEval/0"] == 0
    assert result.statuses == {"exited-early": 1}


def test_every_canonical_solution_renamed_still_passes(problems):
    """A correct whole function under a name the tests never call passes: the model could not
    know the name from the docstring."""
    samples = [{"task_id": t, "completion": renamed(whole_function(p), p["entry_point"])}
               for t, p in problems.items()]
    assert {completion_kind(problems[s["task_id"]], s["completion"]) for s in samples} == {"renamed"}
    result = score_samples(samples)
    failing = [t for t, c in result.passes_per_problem.items() if c == 0]
    assert failing == [] and result.statuses == {"passed": PROBLEMS}


@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/10", "HumanEval/55", "HumanEval/115"])
def test_a_renamed_function_with_a_wrong_body_fails(problems, task_id):
    problem = problems[task_id]
    signature = re.search(rf"^def {problem['entry_point']}\(.*?\).*?:\n", problem["prompt"], re.M | re.S).group(0)
    wrong = renamed(signature, problem["entry_point"]) + WRONG_BODY
    right = renamed(whole_function(problem), problem["entry_point"])
    assert completion_kind(problem, wrong) == "renamed"
    program = build_python_program(problem, wrong)
    assert program.count(f"\n{problem['entry_point']} = my_function\n") == 1
    result = score_samples([{"task_id": task_id, "completion": wrong}, {"task_id": task_id, "completion": right}])
    assert result.samples_per_problem[task_id] == 2 and result.passes_per_problem[task_id] == 1


def test_a_function_named_like_the_test_check_is_still_the_answer(problems):
    # `greatest_common_divisor = check` is bound before the test defines its own check.
    problem = problems["HumanEval/13"]
    completion = renamed(whole_function(problem), problem["entry_point"], "check")
    result = score_samples([{"task_id": "HumanEval/13", "completion": completion}])
    assert result.passes_per_problem["HumanEval/13"] == 1


GCD = "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n"


@pytest.mark.parametrize("completion, kind, expected", [
    # A body: cut at the first stop sequence, where the function has ended.
    ("    return a\n\n\ndef test_it():\n    pass\n", "body", "    return a\n\n"),
    ("    if a:\n        return a\n    return b\n\nif __name__ == '__main__':\n    main()\n", "body",
     "    if a:\n        return a\n    return b\n"),
    ("    return a  # not a stop: indented\n    # nor this\n", "body",
     "    return a  # not a stop: indented\n    # nor this\n"),
    # A whole function: the imports before it kept, what follows its `def` line cut at the first stop.
    ("import math\n\n" + GCD + "\n\nprint(gcd(4, 6))\n", "renamed", "import math\n\n" + GCD + "\n"),
    ("# Euclid\n" + GCD + "# a comment at column 0\n", "renamed", "# Euclid\n" + GCD.removesuffix("\n")),
    # A decorated second function: the decorator goes with it.
    (GCD + "\n@staticmethod\ndef other():\n    pass\n", "renamed", GCD),
    # Two functions, neither the entry point: the first is the answer, the second is cut.
    ("def half(x):\n    return x / 2\n\n" + GCD, "renamed", "def half(x):\n    return x / 2\n"),
    # The entry point after a helper: the cut starts after the entry point's `def` line.
    ("def mod(a, b):\n    return a % b\n\ndef greatest_common_divisor(a: int, b: int) -> int:\n"
     "    return a if b == 0 else greatest_common_divisor(b, mod(a, b))\n\nclass Extra:\n    pass\n", "function",
     "def mod(a, b):\n    return a % b\n\ndef greatest_common_divisor(a: int, b: int) -> int:\n"
     "    return a if b == 0 else greatest_common_divisor(b, mod(a, b))\n"),
], ids=["body-then-def", "body-then-main", "body-indented-stops", "renamed-then-print", "renamed-with-comments",
        "renamed-then-decorated", "two-functions", "helper-then-entry-point"])
def test_completions_are_cut_at_stop_sequences(problems, completion, kind, expected):
    problem = problems["HumanEval/13"]  # greatest_common_divisor(a, b)
    assert completion_kind(problem, completion) == kind
    assert scored_completion(problem, completion) == expected
    # Cutting again changes nothing: the completion saved is scored the same way.
    assert scored_completion(problem, expected) == expected and completion_kind(problem, expected) == kind


def test_two_functions_bind_the_first(problems):
    half = "def half(x):\n    return x / 2\n\n"
    samples = [{"task_id": "HumanEval/13", "completion": GCD + "\n" + half},  # gcd first: passes
               {"task_id": "HumanEval/13", "completion": half + GCD}]  # half first: fails
    result = score_samples(samples)
    assert result.samples_per_problem["HumanEval/13"] == 2 and result.passes_per_problem["HumanEval/13"] == 1


def test_cut_at_stop_sequences():
    assert cut_at_stop_sequences("a\nif x\nprint", ("\nprint", "\nif")) == "a"
    assert cut_at_stop_sequences("\nif a\nif b", ("\nif",), start=1) == "\nif a"
    assert cut_at_stop_sequences("no stop here", ("\ndef",)) == "no stop here"


def test_scored_samples_are_the_completions_as_cut(problems):
    samples = [{"task_id": "HumanEval/13", "completion": GCD + "\nprint(gcd(4, 6))\n", "extra": 1},
               {"task_id": "HumanEval/0", "completion": problems["HumanEval/0"]["canonical_solution"]}]
    assert scored_samples(samples, "python") == [
        {"task_id": "HumanEval/13", "completion": GCD, "extra": 1},
        samples[1],
    ]


# ------------------------------------------------------------------------------ samples files


def write_lines(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_samples_skips_blank_lines_and_records_where(tmp_path):
    path = write_lines(tmp_path / "samples.jsonl", [
        json.dumps({"task_id": "HumanEval/0", "completion": "    return True\n"}),
        "",
        "   ",
        json.dumps({"task_id": "HumanEval/1", "completion": "", "extra": 3}),
    ])
    samples = read_samples(path)
    assert [s["task_id"] for s in samples] == ["HumanEval/0", "HumanEval/1"]
    assert samples[0]["completion"] == "    return True\n"
    assert [s["source_line"] for s in samples] == [f"{path}, line 1", f"{path}, line 4"]
    assert samples[1]["extra"] == 3
    assert load_samples(str(path), "python") == samples


def test_read_samples_names_the_bad_json_line(tmp_path):
    path = write_lines(tmp_path / "samples.jsonl", [
        json.dumps({"task_id": "HumanEval/0", "completion": ""}),
        "",
        '{"task_id": "HumanEval/1", "completion": ',
    ])
    with pytest.raises(UserError) as raised:
        read_samples(path)
    assert str(raised.value).startswith(f"{path}, line 3: not valid JSON")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("line", [
    {"task_id": "HumanEval/0"},
    {"completion": "    return 1\n"},
    {"task_id": "HumanEval/0", "completion": None},
    {"task_id": 0, "completion": ""},
    ["HumanEval/0", ""],
], ids=["no-completion", "no-task-id", "completion-null", "task-id-number", "a-list"])
def test_read_samples_refuses_a_malformed_sample(tmp_path, line):
    good = json.dumps({"task_id": "HumanEval/0", "completion": ""})
    path = write_lines(tmp_path / "samples.jsonl", [good, json.dumps(line)])
    with pytest.raises(UserError, match=r'line 2: expected \{"task_id"'):
        read_samples(path)


def test_read_samples_missing_file(tmp_path):
    with pytest.raises(UserError, match="cannot read the samples file"):
        read_samples(tmp_path / "absent.jsonl")


def test_unknown_task_id_names_the_line(tmp_path):
    path = write_lines(tmp_path / "samples.jsonl", [
        json.dumps({"task_id": "HumanEval/0", "completion": ""}),
        json.dumps({"task_id": "HumanEval/164", "completion": ""}),
    ])
    expected = rf"^{re.escape(str(path))}, line 2: task_id 'HumanEval/164' is not a python HumanEval problem$"
    with pytest.raises(UserError, match=expected):
        score_samples(read_samples(path))
    with pytest.raises(UserError, match=r"^sample 1: task_id 'MBPP/1' is not a python"):
        score_samples([{"task_id": "MBPP/1", "completion": ""}])



# ---------------------------------------------------------------------------- command line


def test_cli_scores_the_canonical_solutions(tmp_path):
    done = codecl("humaneval", "--language", "python", "--samples", "canonical", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"pass@1 = 1.000 ({PROBLEMS}/{PROBLEMS} problems)" in done.stdout
    assert f"samples: {PROBLEMS} passed" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("lines, extra, message", [
    ([json.dumps({"task_id": "HumanEval/0", "completion": ""}), "{not json"], [], "line 2: not valid JSON"),
    ([json.dumps({"task_id": "HumanEval/0"})], [], 'line 1: expected {"task_id"'),
    ([json.dumps({"task_id": "HumanEval/0", "completion": ""})], ["--k", "2"], "pass@2 needs at least 2 samples"),
], ids=["bad-json", "no-completion", "k-above-samples"])
def test_cli_bad_samples_exit_2_with_one_line(tmp_path, lines, extra, message):
    path = write_lines(tmp_path / "samples.jsonl", lines)
    done = codecl("humaneval", "--language", "python", "--samples", str(path), *extra, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("codecl: error:"), done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_javascript_scoring_end_to_end_with_the_syntax_check():
    """Through score_samples, V8's syntax check first: the hand-written solutions pass, the wrong ones
    fail, and only the unparsable ones are refused without running."""
    from test_humaneval_js import SOLUTIONS

    good = [{"task_id": t, "completion": right} for t, (right, _) in SOLUTIONS.items()]
    wrong = [{"task_id": t, "completion": bad} for t, (_, bad) in SOLUTIONS.items()]
    unparsable = [{"task_id": "HumanEval/0", "completion": "  return ((;\n}\n"}]
    result = score_samples(good + wrong + unparsable, language="javascript", k=(1,))
    assert [result.passes_per_problem[t] for t in SOLUTIONS] == [1] * len(SOLUTIONS)
    assert result.statuses["passed"] == len(SOLUTIONS)
    assert result.statuses.get("syntax-error") == 1
    # The one assertion JavaScript cannot see is listed, as the untranslated problems are.
    assert result.problems == 160 and len(result.unscorable) == 4
    assert result.dropped == ["HumanEval/92: candidate(3.0, 4, 7) == False: the canonical solution fails it on the "
                              "inputs as JavaScript sees them (the float 3.0 is the integer 3), so no JavaScript "
                              "program can pass it"]
    assert "assertion not scored: HumanEval/92: candidate(3.0, 4, 7) == False" in result.summary()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_javascript_completions_are_cut_and_renamed_functions_bound():
    completions = {
        # A whole function under another name, and a usage the cut removes.
        "HumanEval/13": "function gcd(a, b) {\n  while (b) [a, b] = [b, a % b];\n  return a;\n}\n"
                        "console.log(gcd(4, 6));\nprocess.exit(0);\n",
        # A body, then a second function the cut removes.
        "HumanEval/23": "  return string.length;\n}\n\nfunction strlen2(s) { process.exit(0); }\n",
    }
    result = score_samples([{"task_id": t, "completion": c} for t, c in completions.items()], language="javascript")
    assert [result.passes_per_problem[t] for t in completions] == [1, 1]
