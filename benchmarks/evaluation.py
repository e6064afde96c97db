"""Where one evaluation point's time goes: decoding, each text metric, HumanEval generation and execution.

Usage: python benchmarks/evaluation.py RUN_DIR [METHOD]   (default method: full-ft)

An evaluation point is what a run does after each task: score every stream task's test split with
every metric, then HumanEval in both languages. The model is METHOD of a finished run, after its
last task, so its outputs are as long as a trained model's (an untrained one stops early and would
flatter decoding). Three choices are measured against their reference in the same run:
- decoding batch size: the config's against 64;
- edit similarity: rapidfuzz's Levenshtein against the textbook dynamic programme in Python;
- HumanEval-JavaScript: V8's syntax check first against starting node for every program.
"""

import shutil
import sys
import time
from pathlib import Path

from accelerate import Accelerator

from codecl.data.tasks import build_stream
from codecl.evaluate.code_metrics import codebleu, codexglue_bleu, codexglue_code_bleu, edit_similarity
from codecl.evaluate.decode import generate
from codecl.evaluate.functional import build_humaneval_tasks
from codecl.evaluate.humaneval import score_samples
from codecl.evaluate.humaneval_js import build_javascript_program, read_javascript_problems
from codecl.evaluate.sandbox import run_many
from codecl.evaluate.syntax import syntax_validity
from codecl.evaluate.text import corpus_bleu
from codecl.export import load_trained


def textbook_levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def timed(function):
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__.split("\n\n")[1])
    run_dir, method = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "full-ft"
    trained = load_trained(run_dir, method, "python", what="benchmark")
    config, model, tokenizer = trained.config, trained.model, trained.tokenizer
    accelerator = Accelerator(cpu=True)
    stream = build_stream(config.data, tokenizer, config.eval.split)
    rows = []  # (what, seconds, counted in the total)

    for task in stream:
        trained.method.use_task(model, trained.task_names.index(task.name))  # a position in the run's order
        examples = task.splits[config.eval.split]
        references = [e.target for e in examples]
        small = config.eval.model_copy(update={"batch_size": 64})
        seconds_64, _ = timed(lambda: generate(model, tokenizer, examples, small, accelerator, task.language))
        seconds, predictions = timed(lambda: generate(model, tokenizer, examples, config.eval, accelerator, task.language))
        rows.append((f"{task.name}: decode {len(examples)} (batch {config.eval.batch_size})", seconds, True))
        rows.append((f"{task.name}: decode {len(examples)} (batch 64, reference)", seconds_64, False))
        metrics = [
            ("sacrebleu BLEU", lambda: corpus_bleu(predictions, references)),
            ("CodeXGLUE code-to-text BLEU", lambda: codexglue_bleu(predictions, references)),
            ("CodeXGLUE text-to-code BLEU", lambda: codexglue_code_bleu(predictions, references)),
            ("edit similarity (rapidfuzz)", lambda: edit_similarity(predictions, references)),
        ]
        if task.target_language is not None:  # CodeBLEU and syntax score code targets only
            metrics += [("CodeBLEU", lambda: codebleu(predictions, references, task.target_language)),
                        ("syntax", lambda: syntax_validity(predictions, task.target_language))]
        for name, metric in metrics:
            rows.append((f"{task.name}: {name}", timed(metric)[0], True))
        textbook, _ = timed(lambda: [textbook_levenshtein(p, r) for p, r in zip(predictions, references)])
        rows.append((f"{task.name}: edit similarity (textbook DP, reference)", textbook, False))

    humaneval_config = config.eval.model_copy(update={"humaneval": ["python", "javascript"] if shutil.which("node") else ["python"]})
    languages = [next(t.target_language for t in stream if t.name == name) for name in trained.task_names]
    javascript_problems = read_javascript_problems()
    for task in build_humaneval_tasks(humaneval_config, tokenizer, config.data.max_source_tokens, config.data.input_prefix):
        trained.method.use_task(model, languages.index(task.language) if task.language in languages else 0)
        seconds, completions = timed(lambda: generate(model, tokenizer, task.examples, config.eval, accelerator, task.language))
        rows.append((f"{task.name}: generate {len(task.examples)}", seconds, True))
        samples = [{"task_id": t, "completion": c} for t, c in zip(task.task_ids, completions)]
        seconds, result = timed(lambda: score_samples(samples, language=task.language))
        outcome = ", ".join(f"{n} {s}" for s, n in sorted(result.statuses.items()))
        rows.append((f"{task.name}: run in the sandbox ({outcome})", seconds, True))
        if task.language == "javascript":  # the reference: node started for every program, no syntax check
            programs = [build_javascript_program(javascript_problems[s["task_id"]], s["completion"]) for s in samples]
            seconds, _ = timed(lambda: run_many([(["node", "program.js"], {"program.js": p}) for p in programs]))
            rows.append((f"{task.name}: every program run, no syntax check (reference)", seconds, False))

    total = sum(seconds for _, seconds, counted in rows if counted)
    print(f"one evaluation point of {run_dir} ({method}), {config.eval.split} split: {total:.1f} s")
    print("| step | seconds | share |")
    print("|---|---:|---:|")
    for what, seconds, counted in rows:
        print(f"| {what} | {seconds:.2f} | {100 * seconds / total:.1f}% |" if counted else f"| {what} | {seconds:.2f} | — |")
    for language in languages:
        decode = {what: s for what, s, _ in rows if what.startswith(f"{language}: decode")}
        (fast, slow) = decode.values()
        edit = [s for what, s, _ in rows if what.startswith(f"{language}: edit similarity")]
        print(f"{language}: decoding batch 64 / batch {config.eval.batch_size}: {slow / fast:.2f}x; "
              f"edit similarity textbook / rapidfuzz: {edit[1] / edit[0]:.0f}x")
    sandbox = [s for what, s, _ in rows if what.startswith("humaneval-javascript: ") and "generate" not in what]
    if len(sandbox) == 2:
        print(f"humaneval-javascript: every program run / syntax check first: {sandbox[1] / sandbox[0]:.1f}x")


if __name__ == "__main__":
    main()
