"""The real command line, start to finish, on a corpus mined from synthetic sources."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codecl.config import load_config
from codecl.evaluate.decode import METRICS
from conftest import codecl

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


@pytest.mark.slow
def test_results_describe_themselves(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    assert results["config"]["name"] == "smoke"
    assert results["git"]["commit"] is None or len(results["git"]["commit"]) == 40
    assert results["packages"]["torch"] and results["packages"]["sacrebleu"]
    assert results["seeds"] == [0, 1]
    assert "nrefs:1" in results["evaluation"]["metrics"]["bleu"]["signature"]
    assert results["evaluation"]["examples_per_task"] == {"python": 8, "javascript": 8}
    assert "token limit" in results["evaluation"]["degeneration"]["loop"]
    assert results["base_model"]["made_by_codecl"]["corpus"]["splits"] == ["train"]
    assert set(results["methods"]) == set(load_config(SMOKE).methods)
    assert results["base_model"]["made_by_codecl"]["corpus"]["pretraining_languages"] == ["python"]
    assert results["base_model"]["made_by_codecl"]["corpus"]["tokenizer_languages"] == ["python", "javascript"]
    averages = {name: entry["summary"]["bleu"]["average"]["mean"] for name, entry in results["methods"].items()}
    best = max(averages, key=averages.get)  # on a tie, the first in config order, as the runner picks it
    assert results["methods"][best]["bleu_vs_best"]["p_value"] == 1.0
    for name, entry in results["methods"].items():
        assert [run["seed"] for run in entry["runs"]] == [0, 1]
        average = entry["summary"]["bleu"]["average"]
        assert average["n"] == 2 and average["ci95"] is not None and average["ci95"] >= 0
        assert entry["bleu_vs_best"]["best"] == best
        run = entry["runs"][0]
        assert run["status"] == "ok", (name, run["error"])
        assert set(run["matrices"]) == {"bleu", "bleu_codexglue", "bleu_codexglue_code", "codebleu", "exact_match", "edit_similarity", "syntax"}
        for matrix in run["matrices"].values():
            assert len(matrix) == 3 and all(len(row) == 2 for row in matrix)
        # Diagnostics beside the matrices, never summarised as scores.
        assert set(run["degeneration"]) == {"distinct", "loop"} and "distinct" not in run["summary"]
        for matrix in run["degeneration"].values():
            assert len(matrix) == 3 and all(len(row) == 2 and all(0 <= v <= 100 for v in row) for row in matrix)
        assert set(run["summary"]["bleu"]) == {"average", "backward_transfer", "forgetting", "forward_transfer"}
        assert run["parameters"]["base"] == results["base_model"]["parameters"]
        expected_kind = "cuda_max_allocated" if torch.cuda.is_available() else "rss_peak_since_start"
        assert run["peak_memory_mb"] > 0 and run["memory_kind"] == expected_kind
        assert all(set(task["skipped_by_cause"]) == {"non_finite_loss", "non_finite_gradient", "scaler_overflow"}
                   for task in run["train"])


@pytest.mark.slow
def test_parameter_accounting(smoke_run):
    methods = json.loads((smoke_run / "results.json").read_text())["methods"]
    base = methods["frozen"]["runs"][0]["parameters"]["base"]
    assert methods["frozen"]["runs"][0]["parameters"]["trainable_per_task"] == [0, 0]
    assert methods["full-ft"]["runs"][0]["parameters"]["trainable_per_task"] == [base, base]
    per_task = methods["lora"]["runs"][0]["parameters"]
    shared = methods["lora-shared"]["runs"][0]["parameters"]
    assert per_task["added"] == 2 * shared["added"] == 2 * per_task["trainable_per_task"][0]
    assert shared["trainable_per_task"] == [shared["added"]] * 2


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "layers", "hybrid", "hybrid-shared-layer", "ffn", "heads"])
def test_per_task_methods_cannot_forget(smoke_run, method):
    run = json.loads((smoke_run / "results.json").read_text())["methods"][method]["runs"][0]
    for metric in METRICS:
        assert run["summary"][metric]["forgetting"] == 0.0, metric
        assert run["summary"][metric]["backward_transfer"] == 0.0, metric
    # HumanEval-Python is scored with the Python task's parameters, untouched by the JavaScript task.
    assert run["summary"]["pass@1 humaneval-python"]["forgetting"] == 0.0
    python_column = [row[0] for row in run["eval_only_matrices"]["pass@1"]]
    assert python_column[1] == python_column[2]


@pytest.mark.slow
def test_frozen_rows_never_change(smoke_run):
    methods = json.loads((smoke_run / "results.json").read_text())["methods"]
    run = methods["frozen"]["runs"][0]
    for matrix in [*run["matrices"].values(), *run["eval_only_matrices"].values(), *run["degeneration"].values()]:
        assert matrix[0] == matrix[1] == matrix[2]


@pytest.mark.slow
def test_predictions_for_every_method_row_and_task(smoke_run):
    methods = json.loads((smoke_run / "results.json").read_text())["methods"]
    for method in load_config(SMOKE).methods:
        distinct = methods[method]["runs"][0]["degeneration"]["distinct"]
        for i, after in enumerate(("after0-start", "after1-python", "after2-javascript")):
            for j, task in enumerate(("python", "javascript")):
                rows = [json.loads(line) for line in (smoke_run / "predictions" / method / "seed0" / after / f"{task}.jsonl").open()]
                assert len(rows) == 8
                assert set(rows[0]) == {"input", "reference", "prediction"}
                assert distinct[i][j] == 100.0 * len({r["prediction"].strip() for r in rows}) / 8


@pytest.mark.slow
def test_humaneval_is_an_eval_only_task_with_its_own_matrix(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    tasks = {t["name"]: t for t in results["eval_only_tasks"]}
    assert list(tasks) == ["humaneval-python", "humaneval-javascript"]
    assert tasks["humaneval-python"]["problems"] == tasks["humaneval-javascript"]["problems"] == 4
    assert tasks["humaneval-python"]["skipped"] == 0 and tasks["humaneval-javascript"]["skipped"] == 4
    for method, entry in results["methods"].items():
        for run in entry["runs"]:
            matrix = run["eval_only_matrices"]["pass@1"]
            assert len(matrix) == 3 and all(len(row) == 2 for row in matrix), method
            summary = run["summary"]["pass@1 humaneval-javascript"]
            assert summary["average"] == matrix[2][1] and summary["forward_transfer"] is None
            # Each score is the share of the saved completions that passed, after each task.
            for i, after in enumerate(("after0-start", "after1-python", "after2-javascript")):
                for j, task in enumerate(tasks):
                    saved = [json.loads(line) for line in
                             (smoke_run / "predictions" / method / f"seed{run['seed']}" / after / f"{task}.jsonl").open()]
                    assert [r["task_id"] for r in saved] == [f"HumanEval/{k}" for k in range(4)]
                    assert matrix[i][j] == 100.0 * sum(r["passed"] for r in saved) / 4
        assert set(entry["summary"]["pass@1 humaneval-python"]["average"]) == {"mean", "ci95", "n"}


@pytest.mark.slow
def test_humaneval_samples_from_a_trained_method(smoke_run, tmp_path):
    out = tmp_path / "samples.jsonl"
    done = codecl("humaneval", "--language", "python", "--samples", f"model:{smoke_run},lora,python",
                  "--save-samples", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pass@1 = " in done.stdout and "/164 problems)" in done.stdout
    samples = [json.loads(line) for line in out.open()]
    assert len(samples) == 164
    # The run scored the same greedy completions with the same parameters (lora's Python adapter).
    saved = [json.loads(line) for line in (smoke_run / "predictions" / "lora" / "seed0" / "after2-javascript" / "humaneval-python.jsonl").open()]
    assert [s["completion"] for s in samples[:4]] == [r["completion"] for r in saved]
    rescored = codecl("humaneval", "--language", "python", "--samples", str(out), cwd=tmp_path)
    assert rescored.returncode == 0 and rescored.stdout.splitlines()[1] == done.stdout.splitlines()[1]
    missing = codecl("humaneval", "--language", "python", "--samples", f"model:{smoke_run},nope,python", cwd=tmp_path)
    assert missing.returncode == 2 and "method nope is not in this run" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.slow
def test_report_and_rebuilding_it(smoke_run):
    report = (smoke_run / "report.md").read_text()
    assert "| rank | method | task id | avg BLEU (n=8/8) |" in report and "| avg syntax (n=8/8) |" in report
    assert "sacrebleu corpus BLEU" in report and "n per task: python 8, javascript 8" in report
    assert "CodeXGLUE code-to-text smoothed sentence BLEU-4" in report and "| p vs best |" in report
    assert "CodeXGLUE text-to-code corpus BLEU-4" in report and "avg BLEU (CodeXGLUE text-to-code) (n=8/8)" in report
    assert "(n = 2 seeds)" in report and "two-level bootstrap" in report
    assert "on the python train split only; tokenizer trained on the python, javascript train splits" in report
    ranking = report.split("## Ranking")[1].split("\n## ")[0]
    p_column = [line.split("|")[5].strip() for line in ranking.splitlines()[4:] if line.startswith("| ")]
    assert p_column and not any(cell.startswith("0.000") for cell in p_column)
    assert "final pass@1 humaneval-python (n=4)" in report and "## HumanEval (eval-only tasks)" in report
    assert "HumanEval pass@1 (%), eval-only:" in report
    assert "## Degeneration" in report and "| base model (all methods) | nothing |" in report
    assert "repetition loops (%), a diagnostic:" in report
    for method in load_config(SMOKE).methods:
        assert f"### {method}, seed 0" in report
    page = (smoke_run / "report.html").read_bytes()
    (smoke_run / "report.md").unlink()
    (smoke_run / "report.html").unlink()
    done = codecl("report", str(smoke_run), cwd=smoke_run)
    assert done.returncode == 0, done.stderr
    assert (smoke_run / "report.md").read_text() == report
    assert (smoke_run / "report.html").read_bytes() == page  # the figures too: drawn from results.json alone


@pytest.mark.slow
def test_lora_adapters_load_with_peft(smoke_run):
    from peft import PeftConfig

    config = PeftConfig.from_pretrained(smoke_run / "checkpoints" / "lora" / "seed0" / "task1")
    assert config.peft_type == "LORA" and config.r == 4


@pytest.mark.slow
def test_an_existing_run_folder_is_never_overwritten(smoke_run, mined_corpus):
    before = (smoke_run / "results.json").read_bytes()
    done = codecl("run", str(SMOKE), f"data.path={mined_corpus}", "--out", str(smoke_run), cwd=smoke_run)
    assert done.returncode == 2 and "already holds" in done.stderr
    assert (smoke_run / "results.json").read_bytes() == before


def test_missing_data_folder_is_one_line(tmp_path):
    done = codecl("run", str(SMOKE), f"data.path={tmp_path / 'nowhere'}", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2
    assert "nowhere" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("codecl: error: ")


def test_too_few_usable_examples_is_one_line(tmp_path, mined_corpus):
    done = codecl("run", str(SMOKE), f"data.path={mined_corpus}", "data.min_examples=500", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "expected at least data.min_examples=500" in done.stderr


def test_malformed_rows_are_skipped_counted_and_reported(tmp_path, mined_corpus):
    corrupt = tmp_path / "corpus"
    subprocess.run(["cp", "-r", str(mined_corpus), str(corrupt)], check=True)
    split_file = corrupt / "python" / "final" / "jsonl" / "test" / "python_test_0.jsonl.gz"
    with gzip.open(split_file, "at") as handle:
        handle.write("{not json\n")
        handle.write(json.dumps({"code": 5}) + "\n")
    done = codecl("data", "stats", str(corrupt), cwd=tmp_path)
    assert done.returncode == 0
    python_row = next(line for line in done.stdout.splitlines() if line.startswith("python"))
    assert python_row.split()[-1] == "2"


@pytest.mark.slow
# Two kinds of export through the real command (each call is a fresh process, ~20 s): LoRA merged, and grown
# attention. The method matrix and the growth tests export every case in-process.
@pytest.mark.parametrize("method", ["lora", "heads"])
def test_export_reproduces_the_runs_predictions_without_codecl(smoke_run, mined_corpus, method, tmp_path):
    out = tmp_path / "export"
    done = codecl("export", str(smoke_run), "--method", method, "--task", "python", "--out", str(out), "--check",
                  "--seed=0", cwd=tmp_path, CODECL_CACHE=str(smoke_run.parent / "cache"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "8/8 equal the run's predictions" in done.stdout
    # Loadable by transformers alone: a child process that never imports codecl.
    script = f"from transformers import T5ForConditionalGeneration as T; import sys; T.from_pretrained({str(out)!r}); assert 'codecl' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", script], capture_output=True).returncode == 0


@pytest.mark.slow
def test_evaluation_benchmark_runs_on_a_finished_run(smoke_run):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "evaluation.py"), str(smoke_run), "lora"],
                          capture_output=True, text=True, cwd=smoke_run)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "one evaluation point of" in done.stdout and "| humaneval-python: run in the sandbox" in done.stdout
    assert "edit similarity textbook / rapidfuzz" in done.stdout
