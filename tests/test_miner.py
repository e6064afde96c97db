"""The offline miner on hand-written Python and JavaScript folders: filters, JSDoc, splits, output layout."""

import ast
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from codecl.data import miner
from codecl.data.csn import read_release_split
from codecl.data.miner import mine_corpus, partition_of
from codecl.errors import UserError

KEPT_PYTHON_FUNCTION = '''def total(values):
    """Return the sum of the given values.

    Longer explanation that is not part of the summary.
    """
    result = 0
    for value in values:
        result += value
    return result
'''

PYTHON_MODULE = KEPT_PYTHON_FUNCTION + '''

def undocumented(values):
    result = 0
    for value in values:
        result += value
    return result


def short_summary(values):
    """Sum."""
    result = 0
    for value in values:
        result += value
    return result


def short_code(values):
    """Return the values unchanged, as they are."""
    return values


def run_test_suite(values):
    """Run every check over the values given."""
    for value in values:
        assert value
    return True


class Box:
    def __init__(self, value):
        """Make a box that holds one value."""
        self.value = value
        self.opened = False

    def __repr__(self):
        """Show the box and what it holds."""
        text = "Box("
        text += repr(self.value)
        return text + ")"

    def describe(self, prefix):
        """Describe the box with a prefix in front."""
        text = prefix
        text += str(self.value)
        return text

    @classmethod
    def make(cls, value):
        """Build a box holding the given value."""
        box = cls(value)
        box.opened = True
        return box
'''

# No test file in a test folder is kept, however good its documentation.
PYTHON_TEST_HELPER = '''def build_fixture(values):
    """Build the fixture from the given values."""
    fixture = list(values)
    fixture.sort()
    return fixture
'''

JAVASCRIPT_MODULE = '''/**
 * Add two numbers together.
 *
 * @param {number} a first number
 * @returns {number} the sum
 */
function add(a, b) {
  return a + b;
}

function undocumented(a) {
  const doubled = a * 2;
  return doubled;
}

/** Short. */
function shortSummary(a) {
  const doubled = a * 2;
  return doubled;
}

/** Return the same number again. */
function shortCode(a) { return a; }

/**
 * Multiply two numbers together.
 * @param {number} a first number
 */
const multiply = (a, b) => {
  return a * b;
};

/**
 * Build the greeting for a name.
 */

exports.greet = function (name) {
  return "hi " + name;
};

/**
 * Check the whole test harness runs.
 */
function runTestHarness() {
  const ran = true;
  return ran;
}

class Box {
  /**
   * Create a box holding a value.
   */
  constructor(value) {
    this.value = value;
  }

  /**
   * Describe the box as a string.
   */
  toString() {
    return "Box(" + this.value + ")";
  }

  /**
   * Open the box and return its value.
   */
  open() {
    return this.value;
  }
}
'''

JAVASCRIPT_COPY = '''/**
 * Add two numbers, copied from the main module.
 */
function add(a, b) {
  return a + b;
}
'''


@pytest.fixture
def sources(tmp_path) -> tuple[Path, Path]:
    python_dir, javascript_dir = tmp_path / "pysrc", tmp_path / "jssrc"
    (python_dir / "copy").mkdir(parents=True)
    (python_dir / "tests").mkdir()
    (python_dir / "module.py").write_text(PYTHON_MODULE)
    (python_dir / "copy" / "duplicate.py").write_text(KEPT_PYTHON_FUNCTION)
    (python_dir / "tests" / "helpers.py").write_text(PYTHON_TEST_HELPER)
    (javascript_dir / "lib").mkdir(parents=True)
    (javascript_dir / "lib" / "index.js").write_text(JAVASCRIPT_MODULE)
    (javascript_dir / "lib" / "index.min.js").write_text(JAVASCRIPT_MODULE)  # minified builds are skipped
    (javascript_dir / "lib" / "same.js").write_text(JAVASCRIPT_COPY)
    return python_dir, javascript_dir


def mine_local(out: Path, sources: tuple[Path, Path], **options):
    return mine_corpus(out, python_dirs=[sources[0]], javascript_dirs=[sources[1]], use_stdlib=False,
                       use_npm=False, **options)


def all_records(root: Path, language: str) -> list:
    splits = ("train", "valid", "test")
    return [record for split in splits for record in read_release_split(root, language, split).records]


def test_each_rule_drops_exactly_its_functions(tmp_path, sources):
    summary = mine_local(tmp_path / "out", sources)
    assert summary.dropped["python"] == {
        "no_docstring": 1, "short_docstring": 1, "short_code": 1, "test": 2, "constructor_or_extension": 2,
        "duplicate": 1,
    }
    assert summary.dropped["javascript"] == {
        "no_docstring": 1, "short_docstring": 1, "short_code": 1, "test": 1, "constructor_or_extension": 2,
        "duplicate": 1,
    }
    python_names = sorted(r.func_name for r in all_records(tmp_path / "out", "python"))
    assert python_names == ["Box.describe", "Box.make", "total"]
    assert sorted(r.func_name for r in all_records(tmp_path / "out", "javascript")) == [
        "Box.open", "add", "exports.greet", "multiply",
    ]


def test_records_carry_codesearchnet_fields(tmp_path, sources):
    mine_local(tmp_path / "out", sources)
    python = {r.func_name: r for r in all_records(tmp_path / "out", "python")}
    total = python["total"]
    assert total.code == KEPT_PYTHON_FUNCTION.rstrip("\n") and total.original_string == total.code
    assert total.docstring.startswith("Return the sum of the given values.\n\nLonger explanation")
    assert total.docstring_tokens == ["Return", "the", "sum", "of", "the", "given", "values", "."]
    assert "Return" not in total.code_tokens and total.code_tokens[:3] == ["def", "total", "("]
    assert (total.repo, total.path, total.language) == ("pysrc", "module.py", "python")
    assert total.url.startswith("file://") and total.url.endswith("module.py#L1-L9")
    assert len(total.sha) == 40 and total.partition in ("train", "valid", "test")
    assert ast.parse(python["Box.make"].code)  # methods keep their body indentation, as in CodeSearchNet

    javascript = {r.func_name: r for r in all_records(tmp_path / "out", "javascript")}
    add = javascript["add"]
    assert add.code == "function add(a, b) {\n  return a + b;\n}"  # the leading comment is not part of the code
    assert add.docstring == "Add two numbers together.\n\n@param {number} a first number\n@returns {number} the sum"
    assert add.docstring_tokens == ["Add", "two", "numbers", "together", "."]
    assert add.url.endswith("lib/index.js#L7-L9")
    assert javascript["multiply"].docstring_tokens == ["Multiply", "two", "numbers", "together", "."]
    assert javascript["exports.greet"].code.startswith("function (name)")  # one blank line after JSDoc is allowed
    assert all(not token.startswith(("/*", "//")) for r in javascript.values() for token in r.code_tokens)


def test_splits_are_deterministic(tmp_path, sources):
    mine_local(tmp_path / "first", sources)
    mine_local(tmp_path / "second", sources)
    for language in ("python", "javascript"):
        for split in ("train", "valid", "test"):
            name = f"{language}/final/jsonl/{split}/{language}_{split}_0.jsonl.gz"
            assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()
    mine_local(tmp_path / "all-train", sources, split_ratios=(1.0, 0.0, 0.0))
    assert len(read_release_split(tmp_path / "all-train", "python", "train").records) == 3
    shares = Counter(partition_of(f"pkg/module_{i % 37}.py", f"function_{i}", (0.8, 0.1, 0.1)) for i in range(5000))
    assert 0.77 < shares["train"] / 5000 < 0.83 and 0.08 < shares["valid"] / 5000 < 0.12


def test_manifest_counts_match_the_files(tmp_path, sources):
    summary = mine_local(tmp_path / "out", sources)
    manifest = json.loads((tmp_path / "out" / "MINED.json").read_text())
    assert manifest["miner_version"] == miner.MINER_VERSION
    assert manifest["counts"] == summary.counts
    assert manifest["dropped"] == summary.dropped
    for language in ("python", "javascript"):
        for split, count in manifest["counts"][language].items():
            assert len(read_release_split(tmp_path / "out", language, split).records) == count
    assert sum(manifest["counts"]["javascript"].values()) == 4
    assert {source["source"] for source in manifest["sources"]} == {str(sources[0]), str(sources[1])}
    assert not list((tmp_path / "out").rglob("*.tmp*"))


def test_ensure_mined_corpus_reuses_a_current_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("CODECL_CACHE", str(tmp_path))
    out = tmp_path / "csn-mined"
    out.mkdir()
    (out / "MINED.json").write_text(json.dumps(
        {"miner_version": miner.MINER_VERSION, "python": sys.version.split()[0], "languages": ["python"]}
    ))
    monkeypatch.setattr(miner, "mine_corpus", lambda *args, **kwargs: pytest.fail("should not mine again"))
    assert miner.ensure_mined_corpus(("python",)) == out


@pytest.mark.parametrize("python_version, mined_again", [
    (sys.version.split()[0], False), ("2.7.18", True), (None, True),
])
def test_ensure_mined_corpus_reuses_only_a_corpus_of_this_python(monkeypatch, python_version, mined_again):
    out = miner.cache_dir() / "csn-mined"  # CODECL_CACHE is a fresh folder per test (conftest)
    out.mkdir(parents=True)
    manifest = {"miner_version": miner.MINER_VERSION, "languages": ["python", "javascript"]}
    if python_version is not None:
        manifest["python"] = python_version
    (out / "MINED.json").write_text(json.dumps(manifest))
    calls = []
    monkeypatch.setattr(miner, "mine_corpus", lambda *args, **kwargs: calls.append((args, kwargs)))
    assert miner.ensure_mined_corpus(("python",)) == out
    assert calls == ([((out,), {"languages": ("python",)})] if mined_again else [])


def test_missing_npm_and_missing_sources_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("CODECL_CACHE", str(tmp_path))
    monkeypatch.setattr(miner.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="npm is not installed.*--javascript-dir DIR"):
        mine_corpus(tmp_path / "out", languages=("javascript",))
    with pytest.raises(UserError, match="no python sources"):
        mine_corpus(tmp_path / "out", languages=("python",), use_stdlib=False)
    with pytest.raises(UserError, match=str(tmp_path / "absent")):
        mine_corpus(tmp_path / "out", languages=("python",), python_dirs=[tmp_path / "absent"], use_stdlib=False)
