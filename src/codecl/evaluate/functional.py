"""HumanEval as eval-only tasks of a stream: after every task, pass@1 (greedy) in Python and JavaScript.

codecl's models map a docstring to code, so a problem's input is its docstring (the first paragraph,
as in training), with its signature first when `eval.humaneval_signature` asks for it. The docstring
seldom names the function the tests call, so the model cannot know that name: a whole function it
writes under another name is bound to the entry point, and a correct function passes whatever it is
called. Every output is cut at its language's stop sequences, and the completion saved is the one
scored. `codecl.evaluate.humaneval` states the convention; a body that continues the prompt is
understood too.
"""

from __future__ import annotations

import ast
import inspect
import re
import shutil
from dataclasses import dataclass, field

from accelerate import Accelerator
from torch import nn

from codecl.config import EvalConfig
from codecl.data.docstrings import first_paragraph
from codecl.data.tasks import Example
from codecl.evaluate.decode import generate, sample


@dataclass(frozen=True)
class FunctionalTask:
    name: str  # humaneval-python, humaneval-javascript
    language: str
    task_ids: list[str]
    examples: list[Example]  # sources only: the reference is the problem's tests
    skipped: list[tuple[str, str]]  # (task_id, why) for problems that cannot be run in this language
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (task_id, "assertion: why") left
    # out of a scored problem's test: Python's answer depends on what this language cannot see


def python_docstring_and_signature(prompt: str, entry_point: str) -> tuple[str, str]:
    """The docstring of the prompt's entry point, and its `def` line."""
    tree = ast.parse(prompt)
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == entry_point)
    header = re.search(rf"^def {re.escape(entry_point)}\(.*?\).*?:\s*$", prompt, re.MULTILINE | re.DOTALL)
    # A docstring after other statements (HumanEval/115 imports first) is still the problem's text.
    strings = [n.value.value for n in function.body
               if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)]
    docstring = ast.get_docstring(function) or (inspect.cleandoc(strings[0]) if strings else "")
    return docstring, header.group(0).strip() if header else f"def {entry_point}(...):"


def model_input(docstring: str, signature: str, with_signature: bool) -> str:
    """The docstring's first paragraph as in training, without its doctest examples (`>>>` and after)."""
    summary = docstring.split(">>>")[0]
    summary = first_paragraph(summary) or summary.strip() or docstring.strip()
    return f"{signature}\n{summary}" if with_signature else summary


def model_inputs(language: str, with_signature: bool) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The model's input text per HumanEval problem of ``language``, and the (task_id, why) of the
    problems that language cannot run."""
    if language == "python":
        from codecl.evaluate.humaneval import read_python_problems

        problems = read_python_problems()
        sources = {
            task_id: model_input(*python_docstring_and_signature(p["prompt"], p["entry_point"]), with_signature)
            for task_id, p in problems.items()
        }
        return sources, []
    from codecl.evaluate.humaneval_js import read_javascript_problems

    problems = read_javascript_problems()
    sources = {t: model_input(p.docstring, p.signature, with_signature) for t, p in problems.items() if p.translated}
    return sources, [(t, p.reason) for t, p in problems.items() if not p.translated]


def encode(tokenizer, sources: dict[str, str], max_source_tokens: int) -> list[Example]:
    """Examples with the tokenized ``sources`` and no reference (the tests are the reference)."""
    encoded = tokenizer(list(sources.values()), truncation=True, max_length=max_source_tokens)["input_ids"]
    return [Example(text, "", ids, []) for text, ids in zip(sources.values(), encoded)]


def prefixed(sources: dict[str, str], language: str, input_prefix: str) -> dict[str, str]:
    """The inputs as the stream's tasks give theirs: `data.input_prefix: language` puts `python: ` first."""
    return sources if input_prefix == "none" else {t: f"{language}: {source}" for t, source in sources.items()}


def build_humaneval_tasks(
    config: EvalConfig, tokenizer, max_source_tokens: int, input_prefix: str = "none",
) -> list[FunctionalTask]:
    """One eval-only task per language of `eval.humaneval`, its first `eval.humaneval_limit` problems, with
    inputs prefixed as `data.input_prefix` prefixes the stream's."""
    from codecl.evaluate.humaneval import dropped_assertions

    tasks = []
    for language in config.humaneval:
        if language == "javascript" and shutil.which("node") is None:
            continue  # said once by the runner: JavaScript pass@k needs node
        sources, skipped = model_inputs(language, config.humaneval_signature)
        sources = prefixed(sources, language, input_prefix)
        task_ids = list(sources)[: config.humaneval_limit]
        examples = encode(tokenizer, {t: sources[t] for t in task_ids}, max_source_tokens)
        dropped = [(t, why) for t, why in dropped_assertions(language) if t in task_ids]
        tasks.append(FunctionalTask(f"humaneval-{language}", language, task_ids, examples, skipped, dropped))
    return tasks


def model_samples(
    model: nn.Module, tokenizer, language: str, config: EvalConfig, max_source_tokens: int, accelerator: Accelerator,
    num_samples: int = 1, temperature: float = 0.8, top_p: float = 0.95, seed: int = 0, input_prefix: str = "none",
) -> list[dict]:
    """Samples (`task_id`, `completion`) from ``model`` for every problem of ``language``: one greedy
    completion when ``num_samples`` is 1, else ``num_samples`` seeded samples per problem. Each
    completion is cut at the stop sequences, as it is scored."""
    from codecl.evaluate.humaneval import scored_samples

    sources, _ = model_inputs(language, config.humaneval_signature)
    examples = encode(tokenizer, prefixed(sources, language, input_prefix), max_source_tokens)
    if num_samples == 1:
        outputs = [[text] for text in generate(model, tokenizer, examples, config, accelerator, language)]
    else:
        outputs = sample(model, tokenizer, examples, config, accelerator, language, num_samples, temperature, top_p, seed)
    samples = [{"task_id": t, "completion": c} for t, texts in zip(sources, outputs) for c in texts]
    return scored_samples(samples, language)


@dataclass
class FunctionalEvaluation:
    pass_at_1: float  # percent of the task's problems whose greedy completion passed
    completions: list[str]  # in the order of the task's task_ids, as scored: cut at the stop sequences
    passed: list[bool]


def pass_at_1(
    model: nn.Module, tokenizer, task: FunctionalTask, config: EvalConfig, accelerator: Accelerator
) -> FunctionalEvaluation:
    """Greedy completions for every problem of ``task``, each cut at the stop sequences and run
    against its tests in the sandbox."""
    from codecl.evaluate.humaneval import score_samples, scored_samples

    outputs = generate(model, tokenizer, task.examples, config, accelerator, task.language)
    samples = scored_samples([{"task_id": t, "completion": c} for t, c in zip(task.task_ids, outputs)], task.language)
    result = score_samples(samples, language=task.language, k=(1,), timeout_s=config.humaneval_timeout_s)
    # Over this task's problems only (a limited run leaves the others without a sample).
    passed = [result.passes_per_problem[t] > 0 for t in task.task_ids]
    return FunctionalEvaluation(100.0 * sum(passed) / len(passed), [s["completion"] for s in samples], passed)


def samples_from_run(
    spec: str, language: str, num_samples: int = 1, temperature: float = 0.8, top_p: float = 0.95, seed: int = 0,
    run_seed: int | None = None,
) -> list[dict]:
    """`--samples model:RUN_DIR,METHOD,TASK`: completions by that method of a finished run, with the
    parameters it uses for TASK, decoded as the run's eval config says."""
    from pathlib import Path

    from codecl.errors import UserError
    from codecl.export import load_trained

    parts = spec.removeprefix("model:").split(",")
    if len(parts) != 3 or not all(parts):
        raise UserError(f"--samples {spec}: expected model:RUN_DIR,METHOD,TASK")
    run_dir, method_name, task = parts
    trained = load_trained(Path(run_dir), method_name, task, run_seed, what="humaneval --samples")
    precision = trained.config.model.precision
    accelerator = Accelerator(mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision])
    trained.model.to(accelerator.device)
    trained.method.use_task(trained.model, trained.task_names.index(task))
    return model_samples(trained.model, trained.tokenizer, language, trained.config.eval,
                         trained.config.data.max_source_tokens, accelerator, num_samples, temperature, top_p, seed,
                         trained.config.data.input_prefix)
