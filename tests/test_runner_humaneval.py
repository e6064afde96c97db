"""HumanEval inside a run, with completions that do pass.

The smoke model's own completions never pass, so every pass@1 it produces is 0 and any property of
the HumanEval matrices holds trivially on it. Here an oracle stands between the model and the
scorer: for a deterministic half of the (problem, prediction) pairs it swaps the model's prediction
for a known correct solution. What passes is then a function of what the model wrote, so the
matrices move when the model's outputs move, and stay put exactly when they do.
"""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import codecl.evaluate.functional as functional
from codecl.config import load_config
from codecl.evaluate.functional import model_inputs
from codecl.evaluate.humaneval import read_python_problems
from codecl.runner import Run

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"

# Hand-written JavaScript solutions of the first four problems, as whole functions.
JAVASCRIPT_SOLUTIONS = {
    "HumanEval/0": """function has_close_elements(numbers, threshold) {
  for (let i = 0; i < numbers.length; i++)
    for (let j = 0; j < numbers.length; j++)
      if (i !== j && Math.abs(numbers[i] - numbers[j]) < threshold) return true;
  return false;
}""",
    "HumanEval/1": """function separate_paren_groups(paren_string) {
  const groups = [];
  let current = "", depth = 0;
  for (const c of paren_string) {
    if (c === "(") { depth += 1; current += c; }
    else if (c === ")") { depth -= 1; current += c; if (depth === 0) { groups.push(current); current = ""; } }
  }
  return groups;
}""",
    "HumanEval/2": "function truncate_number(number) {\n  return number % 1.0;\n}",
    "HumanEval/3": """function below_zero(operations) {
  let balance = 0;
  for (const operation of operations) {
    balance += operation;
    if (balance < 0) return true;
  }
  return false;
}""",
}


def swapped(task_id: str, prediction: str) -> bool:
    return hashlib.sha1(f"{task_id}\0{prediction}".encode()).digest()[0] % 2 == 0


@pytest.fixture(scope="module")
def oracle_run(mined_corpus, tmp_path_factory):
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    python = {t: p["canonical_solution"] for t, p in read_python_problems().items()}
    solutions = {"python": python, "javascript": JAVASCRIPT_SOLUTIONS}
    real_generate = functional.generate

    def oracle_generate(model, tokenizer, examples, config, accelerator, language=None):
        sources, _ = model_inputs(language, config.humaneval_signature)
        task_ids = {source: task_id for task_id, source in sources.items()}
        predictions = real_generate(model, tokenizer, examples, config, accelerator, language)
        out = []
        for example, prediction in zip(examples, predictions):
            task_id = task_ids[example.source]
            out.append(solutions[language][task_id] if swapped(task_id, prediction) else prediction)
        return out

    patch = pytest.MonkeyPatch()
    patch.setattr(functional, "generate", oracle_generate)
    patch.setenv("CODECL_CACHE", str(tmp_path_factory.mktemp("cache")))
    smoke = load_config(SMOKE, [f"data.path={mined_corpus}", "seeds=[0]"])
    config = smoke.model_copy(update={"methods": {name: smoke.methods[name] for name in ("frozen", "full-ft", "lora")}})
    out = tmp_path_factory.mktemp("oracle") / "run"
    try:
        Run(config, out, log=lambda line: None).execute()
    finally:
        patch.undo()
    return out, json.loads((out / "results.json").read_text()), solutions


def saved(out: Path, method: str, after: str, task: str) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions" / method / "seed0" / after / f"{task}.jsonl").open()]


def test_pass_at_1_is_the_share_of_saved_completions_that_passed(oracle_run):
    out, results, solutions = oracle_run
    tasks = [t["name"] for t in results["eval_only_tasks"]]
    values = []
    for method, entry in results["methods"].items():
        matrix = entry["runs"][0]["eval_only_matrices"]["pass@1"]
        for i, after in enumerate(("after0-start", "after1-python", "after2-javascript")):
            for j, task in enumerate(tasks):
                rows = saved(out, method, after, task)
                language = task.removeprefix("humaneval-")
                # Exactly the swapped-in solutions pass: the tiny model's own completions never do.
                assert [r["passed"] for r in rows] == [r["completion"] == solutions[language][r["task_id"]] for r in rows]
                assert matrix[i][j] == 100.0 * sum(r["passed"] for r in rows) / len(rows)
                values.append(matrix[i][j])
    # The property above could have broken: some scores are neither 0 nor 100.
    assert any(0 < v < 100 for v in values), values


def test_only_a_changed_model_changes_its_humaneval_score(oracle_run):
    out, results, _ = oracle_run
    methods = results["methods"]
    frozen = methods["frozen"]["runs"][0]["eval_only_matrices"]["pass@1"]
    assert frozen[0] == frozen[1] == frozen[2]
    # lora keeps the Python adapter through the JavaScript task: Python's column cannot move.
    lora = methods["lora"]["runs"][0]
    python_column = [row[0] for row in lora["eval_only_matrices"]["pass@1"]]
    assert python_column[1] == python_column[2]
    assert lora["summary"]["pass@1 humaneval-python"]["forgetting"] == 0.0
    # Full fine-tuning: forgetting is the drop from after Python to after JavaScript, by hand from the matrix.
    full = methods["full-ft"]["runs"][0]
    matrix = full["eval_only_matrices"]["pass@1"]
    assert full["summary"]["pass@1 humaneval-python"]["forgetting"] == matrix[1][0] - matrix[2][0]
    # JavaScript is learned by the last task: nothing came after it to forget it with.
    for entry in methods.values():
        assert entry["runs"][0]["summary"]["pass@1 humaneval-javascript"]["forgetting"] is None
