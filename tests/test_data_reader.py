"""CodeSearchNet readers and docstring helpers, on hand-written rows and the shared real-row fixtures."""

import ast
import gzip
import json
import sys
import types
from pathlib import Path

import pytest

from codecl.data.csn import (
    format_split_counts, hub_row_to_release, load_hub_split, read_release_split, record_from_row, split_counts,
)
from codecl.data.docstrings import first_paragraph, strip_docstring, summary_tokens
from codecl.errors import UserError

# The fixtures sit beside the repository, in the shared folder: /work/shared next to /work/main.
FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "codesearchnet"


def release_row(func_name: str, **overrides) -> dict:
    row = {
        "repo": "owner/project", "path": "pkg/module.py", "func_name": func_name,
        "original_string": f"def {func_name}():\n    return 1\n", "language": "python",
        "code": f"def {func_name}():\n    return 1\n", "code_tokens": ["def", func_name, "(", ")", ":", "return", "1"],
        "docstring": "Return one.", "docstring_tokens": ["Return", "one", "."], "sha": "0" * 40,
        "url": "https://github.com/owner/project/blob/0/pkg/module.py#L1-L2", "partition": "train",
    }
    return {**row, **overrides}


def hub_row(func_name: str) -> dict:
    return {
        "repository_name": "owner/project", "func_path_in_repository": "lib/a.js", "func_name": func_name,
        "whole_func_string": "function a() {\n  return 1;\n}", "language": "javascript",
        "func_code_string": "function a() {\n  return 1;\n}", "func_code_tokens": ["function", "a"],
        "func_documentation_string": "Return one.", "func_documentation_tokens": ["Return", "one"],
        "split_name": "validation", "func_code_url": "https://github.com/owner/project/blob/abc123/lib/a.js#L1-L3",
    }


def write_split(root: Path, language: str, split: str, lines: list[str], name: str | None = None) -> Path:
    folder = root / language / "final" / "jsonl" / split
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{language}_{split}_0.jsonl.gz")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")
    return path


def test_malformed_rows_are_counted_and_skipped(tmp_path):
    write_split(tmp_path, "python", "train", [
        json.dumps(release_row("first")),
        '{"code": "def broken(',  # line 2: bad JSON
        json.dumps({key: value for key, value in release_row("no_code").items() if key != "code"}),
        json.dumps(release_row("bad_tokens", code_tokens=7)),
        json.dumps(release_row("empty", code="   ")),
        json.dumps(release_row("last")),
    ])
    write_split(tmp_path, "python", "train", [json.dumps(release_row("plain"))], name="python_train_1.jsonl")

    read = read_release_split(tmp_path, "python", "train")

    assert [record.func_name for record in read.records] == ["first", "last", "plain"]
    assert read.malformed == 4
    assert read.first_problem.startswith("python_train_0.jsonl.gz line 2: ")
    assert read_release_split(tmp_path, "python", "train", limit=1).records[0].func_name == "first"


def test_problem_names_the_missing_key(tmp_path):
    write_split(tmp_path, "python", "valid", [json.dumps({"docstring": "x", "func_name": "f"})])
    read = read_release_split(tmp_path, "python", "valid")
    assert (read.records, read.malformed) == ([], 1)
    assert read.first_problem == "python_valid_0.jsonl.gz line 1: missing key 'code'"


def test_hub_schema_rows_map_to_release_fields():
    record = record_from_row(hub_row("a"))
    assert (record.repo, record.path, record.func_name) == ("owner/project", "lib/a.js", "a")
    assert record.code == "function a() {\n  return 1;\n}" and record.docstring == "Return one."
    assert record.code_tokens == ["function", "a"] and record.docstring_tokens == ["Return", "one"]
    assert (record.partition, record.sha) == ("valid", "abc123")
    assert hub_row_to_release({"func_code_url": None})["sha"] == ""
    assert record_from_row(release_row("f")).func_name == "f"  # the schema is detected per row


def test_hub_export_layout_mixes_schemas_per_row(tmp_path):
    (tmp_path / "javascript").mkdir()
    lines = [json.dumps(hub_row("a")), json.dumps(release_row("b", language="javascript")), "not json"]
    (tmp_path / "javascript" / "validation.jsonl").write_text("\n".join(lines) + "\n")
    read = read_release_split(tmp_path, "javascript", "valid")
    assert [record.func_name for record in read.records] == ["a", "b"]
    assert read.malformed == 1 and read.first_problem.startswith("validation.jsonl line 3:")


def test_missing_folders_name_the_path(tmp_path):
    with pytest.raises(UserError, match=str(tmp_path / "absent")):
        read_release_split(tmp_path / "absent", "python", "train")
    with pytest.raises(UserError, match=f"{tmp_path / 'python'}.*final/jsonl"):
        read_release_split(tmp_path, "python", "train")
    write_split(tmp_path, "python", "train", [json.dumps(release_row("f"))])
    with pytest.raises(UserError, match="no test split for python"):
        read_release_split(tmp_path, "python", "test")


def test_split_counts_table(tmp_path):
    write_split(tmp_path, "python", "train", [json.dumps(release_row("f")), "{", json.dumps(release_row("g"))])
    write_split(tmp_path, "python", "test", [json.dumps(release_row("h"))])
    counts = split_counts(tmp_path)
    assert counts == {"python": {"train": 2, "valid": 0, "test": 1, "malformed": 1}}
    table = format_split_counts(counts)
    assert table.splitlines()[0].split() == ["language", "train", "valid", "test", "malformed"]
    assert table.splitlines()[1].split() == ["python", "2", "0", "1", "1"]


def test_hub_reader_without_datasets_points_at_local_files(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(UserError, match="datasets.*data.source: local"):
        load_hub_split("python", "train")


def test_hub_reader_maps_rows_and_reports_an_unreachable_hub(monkeypatch):
    calls = []

    def load_dataset(name, language, split):
        calls.append((name, language, split))
        if language == "go":
            raise ConnectionError("hub unreachable")
        return [hub_row("a"), {"func_name": "no code"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    read = load_hub_split("javascript", "valid", limit=2)
    assert calls == [("code_search_net", "javascript", "validation[:2]")]
    assert [record.func_name for record in read.records] == ["a"] and read.malformed == 1
    with pytest.raises(UserError, match="ConnectionError: hub unreachable.*data.source: local"):
        load_hub_split("go", "train")


def test_first_paragraph_and_tokens():
    assert first_paragraph("  Return the\n   sum.\n\n  More text.") == "Return the sum."
    assert first_paragraph("Add two numbers.\n@param {number} a\n@returns {number}") == "Add two numbers."
    assert summary_tokens("str->list of `x`, y.") == ["str", "-", ">", "list", "of", "`", "x", "`", ",", "y", "."]


def test_strip_docstring_keeps_everything_else():
    code = 'def f(x):\n    """Doc.\n\n    More.\n    """\n\n    y = x  # keep\n    return y\n'
    assert strip_docstring(code, "python") == "def f(x):\n    y = x  # keep\n    return y\n"
    assert strip_docstring('def f():\n    """Only a docstring."""\n', "python") == "def f():\n    pass\n"
    assert strip_docstring("def f():\n    return 1\n", "python") == "def f():\n    return 1\n"
    assert strip_docstring("/** Doc. */\n// more\nfunction f() {}", "javascript") == "function f() {}"
    assert strip_docstring("function f() { /* inner */ }", "javascript") == "function f() { /* inner */ }"


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"shared fixtures not present at {FIXTURES}")
def test_real_codesearchnet_rows():
    counts = split_counts(FIXTURES)
    for language in ("python", "javascript"):
        assert counts[language] == {"train": 3, "valid": 3, "test": 3, "malformed": 0}
    for split in ("train", "valid", "test"):
        for record in read_release_split(FIXTURES, "python", split).records:
            stripped = strip_docstring(record.code, "python")
            function = ast.parse(stripped).body[0]
            assert ast.get_docstring(function) is None
            assert stripped.splitlines()[0] == record.code.splitlines()[0]
            assert stripped.startswith(f"def {record.func_name.rsplit('.', 1)[-1]}(")
