"""Streams of tasks: entries as languages or mappings, their names, formats (code-to-docstring among them),
the language prefix on inputs, and scoring a natural-language target."""

from pathlib import Path

import pytest
import sacrebleu
from accelerate import Accelerator

from codecl.config import DataConfig, EvalConfig, TaskSpec, load_config
from codecl.data.docstrings import strip_docstring
from codecl.data.records import CodeRecord
from codecl.data.tasks import Example, build_stream, corpus_fingerprint, make_pair, with_input_prefix
from codecl.errors import UserError
from codecl.evaluate.decode import METRICS, NATURAL_LANGUAGE_TARGET, evaluate_task, score

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PYTHON_CODE = 'def add(a, b):\n    """Add two numbers together.\n\n    More words.\n    """\n    total = a + b\n    return total\n'
JAVASCRIPT_CODE = "function add(a, b) {\n  return a + b;\n}"
GO_CODE = "func Add(a, b int) int {\n\treturn a + b\n}"


def record(language="python", code=PYTHON_CODE, docstring="Add two numbers together.\n\nMore words.", name="add"):
    return CodeRecord(
        repo="r", path="p", func_name=name, original_string=code, language=language, code=code,
        code_tokens=[], docstring=docstring, docstring_tokens=[], sha="", url="", partition="train",
    )


def load_default(*overrides: str):
    return load_config(CONFIGS / "default.yaml", list(overrides))


# --- stream entries -------------------------------------------------------------------------------


def test_a_language_entry_takes_the_task_format_and_is_named_by_its_language():
    data = DataConfig(stream=["python", "javascript"], task_format="completion")
    assert data.tasks() == [TaskSpec("python", "python", "completion"), TaskSpec("javascript", "javascript", "completion")]


def test_a_mapping_entry_is_named_language_dash_format_unless_named():
    data = load_default(
        "data.stream=[python, {language: python, format: code-to-docstring}, "
        "{language: javascript, format: docstring-to-code}, {language: javascript, format: completion, name: js-rest}]"
    ).data
    assert data.tasks() == [
        TaskSpec("python", "python", "docstring-to-code"),
        TaskSpec("python-code-to-docstring", "python", "code-to-docstring"),
        TaskSpec("javascript", "javascript", "docstring-to-code"),  # the format is data.task_format's
        TaskSpec("js-rest", "javascript", "completion"),
    ]
    assert data.languages() == ["python", "javascript"]


def test_a_stream_with_mappings_dumps_and_validates_again():
    config = load_default("data.stream=[python, {language: python, format: code-to-docstring}]")
    dumped = config.model_dump(mode="json")
    assert dumped["data"]["stream"][0] == "python"
    assert type(config).model_validate(dumped).data.tasks() == config.data.tasks()


@pytest.mark.parametrize(
    "stream, message",
    [
        ("[python, {language: python, format: docstring-to-code}]",
         "data.stream: two tasks are named 'python' (python, python); give one a `name:`"),
        ("[javascript, {language: python, format: completion, name: javascript}]",
         "data.stream: two tasks are named 'javascript' (javascript, javascript); give one a `name:`"),
        ("[python, {language: python, format: docstring-to-tests}]",
         "data.stream: entry 1: format: Input should be 'docstring-to-code', 'completion' or 'code-to-docstring'"),
        ("[python, cobol]",
         "data.stream: entry 1: unknown language 'cobol' (expected one of python, javascript, go, java, php, ruby)"),
        ("[{language: cobol}]", "data.stream: entry 0: language: Input should be 'python', 'javascript'"),
        ("[{language: python, name: 'a b'}]", "data.stream: entry 0: name: String should match pattern"),
        ("[3]", "data.stream: entry 0: expected a language or a mapping {language, format, name}"),
    ],
)
def test_a_bad_stream_entry_is_one_line_naming_it(stream, message):
    with pytest.raises(UserError) as caught:
        load_default(f"data.stream={stream}")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_mined_stream_with_go_fails_at_validation_with_one_line():
    with pytest.raises(UserError) as caught:
        load_default("data.stream=[python, go]")
    assert str(caught.value) == (
        f"config {CONFIGS / 'default.yaml'}: data.stream: go is not in the mined corpus, which has only python "
        "and javascript; use data.source: local or hub for go"
    )
    assert load_default("data.stream=[python, go]", "data.source=hub").data.languages() == ["python", "go"]


def test_the_base_is_pretrained_on_the_first_language_of_a_stream_that_starts_with_a_mapping():
    config = load_default("data.stream=[{language: javascript, format: code-to-docstring}, python]")
    assert config.pretraining_languages() == ["javascript"]


# --- pairs and the prefix -------------------------------------------------------------------------


def test_code_to_docstring_is_the_code_without_docstring_to_the_first_paragraph():
    assert make_pair(record(), DataConfig(), "code-to-docstring") == (
        "def add(a, b):\n    total = a + b\n    return total",
        "Add two numbers together.",
    )
    # The format given wins over data.task_format; the reverse pair is docstring-to-code's.
    source, target = make_pair(record(), DataConfig(task_format="completion"), "docstring-to-code")
    assert (source, target) == ("Add two numbers together.", "def add(a, b):\n    total = a + b\n    return total")


def test_code_to_docstring_in_go_keeps_code_that_has_no_comment_and_cuts_tags():
    pair = make_pair(record("go", GO_CODE, "Add returns a + b.\n@deprecated"), DataConfig(), "code-to-docstring")
    assert pair == (GO_CODE, "Add returns a + b.")
    assert make_pair(record("go", GO_CODE, ""), DataConfig(), "code-to-docstring") is None


@pytest.mark.parametrize(
    "language, code, stripped",
    [
        ("go", "// Add adds.\n" + GO_CODE, GO_CODE),
        ("java", "/** Adds. */\npublic int add(int a) { return a; }", "public int add(int a) { return a; }"),
        ("php", "# adds\n/** Adds. */\npublic function add($a) { return $a; }", "public function add($a) { return $a; }"),
        ("php", "#[Pure]\nfunction add($a) { return $a; }", "#[Pure]\nfunction add($a) { return $a; }"),
        ("ruby", "# Adds.\ndef add(a)\n  a # one\nend", "def add(a)\n  a # one\nend"),
        ("ruby", "=begin\nAdds.\n=end\ndef add(a)\n  a\nend", "def add(a)\n  a\nend"),
        ("java", "public int add(int a) { /* keep */ return a; }", "public int add(int a) { /* keep */ return a; }"),
    ],
)
def test_strip_docstring_removes_only_leading_comments_outside_python(language, code, stripped):
    assert strip_docstring(code, language) == stripped


def test_the_language_prefix_leads_each_source_and_none_leaves_it():
    pairs = [("Add two numbers.", "def add(a, b): ...")]
    assert with_input_prefix(pairs, "python", DataConfig(input_prefix="language")) == [
        ("python: Add two numbers.", "def add(a, b): ...")
    ]
    assert with_input_prefix(pairs, "python", DataConfig()) == pairs


def write_split(root: Path, language: str, split: str, records: list[CodeRecord]) -> None:
    (root / language).mkdir(parents=True, exist_ok=True)
    (root / language / f"{split}.jsonl").write_text("".join(r.to_json() + "\n" for r in records))


@pytest.fixture
def two_language_corpus(tmp_path) -> Path:
    """A local CodeSearchNet-layout corpus, two functions per split in Python and JavaScript."""
    for split in ("train", "valid", "test"):
        write_split(tmp_path, "python", split, [record(), record(code=PYTHON_CODE.replace("add", "plus"), name="plus")])
        write_split(tmp_path, "javascript", split, [
            record("javascript", JAVASCRIPT_CODE, "Add two numbers.\n@param {number} a"),
            record("javascript", JAVASCRIPT_CODE.replace("add", "plus"), "Add two numbers.", "plus"),
        ])
    return tmp_path


def test_build_stream_makes_a_task_per_entry_with_its_format_and_prefixed_inputs(two_language_corpus, tiny_base):
    _, tokenizer = tiny_base
    data = DataConfig(
        source="local", path=two_language_corpus, min_examples=1, input_prefix="language",
        stream=["javascript", {"language": "python", "format": "code-to-docstring"}],
    )
    javascript, python = build_stream(data, tokenizer, "test")
    assert (javascript.index, javascript.name, javascript.format, javascript.target_language) == (
        0, "javascript", "docstring-to-code", "javascript")
    assert (python.index, python.name, python.format, python.target_language) == (
        1, "python-code-to-docstring", "code-to-docstring", None)
    example = next(e for e in python.splits["test"] if "add" in e.source)
    assert example.source == "python: def add(a, b):\n    total = a + b\n    return total"
    assert example.target == "Add two numbers together."
    # The prefix is part of what the model reads, not only of the text.
    assert example.source_ids == tokenizer(example.source, truncation=True, max_length=data.max_source_tokens)["input_ids"]
    assert {e.source for e in javascript.splits["train"]} == {"javascript: Add two numbers."}


def test_a_second_task_in_a_language_leaves_the_pretraining_corpus_identity_alone(two_language_corpus):
    two = DataConfig(source="local", path=two_language_corpus, stream=["python", "javascript"])
    three = DataConfig(source="local", path=two_language_corpus,
                       stream=["python", "javascript", {"language": "python", "format": "code-to-docstring"}])
    assert three.languages() == ["python", "javascript"]
    assert corpus_fingerprint(three) == corpus_fingerprint(two)


def test_three_tasks_config_shares_the_default_base():
    """Same tiny settings, source and stream languages as default.yaml: the same base key
    (`tiny_model_request`), so the shipped base is used."""
    three, default = load_config(CONFIGS / "three-tasks.yaml"), load_default()
    assert list(three.methods) == ["frozen", "full-ft", "lora", "replay", "ewc", "olora"]
    assert [task.name for task in three.data.tasks()] == ["python", "javascript", "python-code-to-docstring"]
    assert three.model.tiny == default.model.tiny and three.model.name == default.model.name == "tiny"
    assert (three.data.source, three.data.languages()) == (default.data.source, default.data.languages())
    assert three.pretraining_languages() == default.pretraining_languages() == ["python"]


# --- scoring a natural-language target ------------------------------------------------------------


def examples(targets: list[str]) -> list[Example]:
    return [Example("def f(): ...", target, [1], [1]) for target in targets]


def test_a_text_target_has_bleu_but_no_codebleu_or_syntax():
    predictions = ["Add two numbers together.", "Return the sum"]
    references = ["Add two numbers together.", "Return the total"]
    evaluation = score(predictions, examples(references), None)
    assert tuple(evaluation.scores) == METRICS
    assert evaluation.scores["codebleu"] is None and evaluation.scores["syntax"] is None
    assert evaluation.problems == {"codebleu": NATURAL_LANGUAGE_TARGET, "syntax": NATURAL_LANGUAGE_TARGET}
    assert evaluation.scores["bleu"] == sacrebleu.corpus_bleu(predictions, [references]).score
    assert evaluation.scores["exact_match"] == 50.0
    # "sum" -> "total" is 5 edits (no letter in common) over 16 characters: (1 + 11/16) / 2.
    assert evaluation.scores["edit_similarity"] == pytest.approx(100 * (1 + 11 / 16) / 2)
    assert evaluation.scores["bleu_codexglue"] > 0 and evaluation.scores["bleu_codexglue_code"] > 0


def test_a_code_target_still_has_syntax_and_codebleu():
    code = "def f(x):\n    return x"
    evaluation = score([code, "def f(:"], examples([code, code]), "python")
    assert evaluation.scores["syntax"] == 50.0
    assert evaluation.scores["codebleu"] is not None and "syntax" not in evaluation.problems


def test_evaluating_a_text_target_keeps_the_degeneration_measures(tiny_base):
    model, tokenizer = tiny_base
    batch = [Example(s, t, tokenizer(s)["input_ids"], tokenizer(t)["input_ids"])
             for s, t in [("def f(x): return x", "Return x."), ("def g(a): return a * 2", "Double a.")]]
    evaluation = evaluate_task(model, tokenizer, batch, None, EvalConfig(max_new_tokens=4), Accelerator(cpu=True))
    assert evaluation.scores["syntax"] is None and set(evaluation.degeneration) == {"distinct", "loop"}
