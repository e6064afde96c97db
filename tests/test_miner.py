"""The offline miner on hand-written Python and JavaScript folders: filters, JSDoc, splits, leaks, output layout."""

import ast
import gzip
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from codecl.config import DataConfig
from codecl.data import leaks, miner
from codecl.data import sources as sources_module
from codecl.data.csn import read_release_split
from codecl.data.miner import mine_corpus, partition_of
from codecl.data.sources import (
    SUFFIXES, NpmPackage, SitePackage, Source, installed_version, npm_files, npm_tarball, pinned_sources_hash,
    site_package_versions,
)
from codecl.data.tasks import corpus_fingerprint, make_pair
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
    shares = Counter(partition_of("repo", f"pkg/module_{i}.py", (0.8, 0.1, 0.1)) for i in range(5000))
    assert 0.77 < shares["train"] / 5000 < 0.83 and 0.08 < shares["valid"] / 5000 < 0.12


def test_manifest_counts_match_the_files(tmp_path, sources):
    summary = mine_local(tmp_path / "out", sources)
    manifest = json.loads((tmp_path / "out" / "MINED.json").read_text())
    assert manifest["miner_version"] == miner.MINER_VERSION
    assert manifest["counts"] == summary.counts
    assert manifest["dropped"] == summary.dropped
    assert manifest["leak_removed"] == summary.leak_removed
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
        {"miner_version": miner.MINER_VERSION, "python": sys.version.split()[0], "languages": ["python"],
         "site_packages": site_package_versions(), "sources_pinned": pinned_sources_hash()}
    ))
    monkeypatch.setattr(miner, "mine_corpus", lambda *args, **kwargs: pytest.fail("should not mine again"))
    assert miner.ensure_mined_corpus(("python",)) == out


@pytest.mark.parametrize("python_version, mined_again", [
    (sys.version.split()[0], False), ("2.7.18", True), (None, True),
])
def test_ensure_mined_corpus_reuses_only_a_corpus_of_this_python(monkeypatch, python_version, mined_again):
    out = miner.cache_dir() / "csn-mined"  # CODECL_CACHE is a fresh folder per test (conftest)
    out.mkdir(parents=True)
    manifest = {"miner_version": miner.MINER_VERSION, "languages": ["python", "javascript"],
                "site_packages": site_package_versions(), "sources_pinned": pinned_sources_hash()}
    if python_version is not None:
        manifest["python"] = python_version
    (out / "MINED.json").write_text(json.dumps(manifest))
    calls = []
    monkeypatch.setattr(miner, "mine_corpus", lambda *args, **kwargs: calls.append((args, kwargs)))
    assert miner.ensure_mined_corpus(("python",)) == out
    assert calls == ([((out,), {"languages": ("python",)})] if mined_again else [])


def test_missing_npm_and_missing_sources_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("CODECL_CACHE", str(tmp_path))
    monkeypatch.setattr("codecl.data.sources.shutil.which", lambda name: None)
    with pytest.raises(UserError, match="npm is not installed.*--javascript-dir DIR"):
        mine_corpus(tmp_path / "out", languages=("javascript",))
    with pytest.raises(UserError, match="no python sources"):
        mine_corpus(tmp_path / "out", languages=("python",), use_stdlib=False)
    with pytest.raises(UserError, match=str(tmp_path / "absent")):
        mine_corpus(tmp_path / "out", languages=("python",), python_dirs=[tmp_path / "absent"], use_stdlib=False)


LEFT_PAD = NpmPackage("left-pad", "1.3.0")
LEFT_PAD_JS = (b"/**\n * Pad the start of a string with a filler.\n */\nfunction leftPad(text, length, character) {\n"
               + b"  text = character + text;\n" * 2000 + b"  return text;\n}\n")


def npm_pack_output(files: dict[str, bytes]) -> bytes:
    """A tarball laid out as `npm pack` writes one: everything under package/."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            member = tarfile.TarInfo(f"package/{name}")
            member.size = len(content)
            archive.addfile(member, io.BytesIO(content))
    return buffer.getvalue()


@pytest.mark.parametrize("damage", ["truncated", "not_gzip", "intact"])
def test_a_damaged_npm_tarball_in_the_cache_is_one_error_saying_to_delete_it(tmp_path, monkeypatch, damage):
    whole = npm_pack_output({"index.js": LEFT_PAD_JS, "package.json": b"{}"})
    tarball = miner.cache_dir() / "npm" / "left-pad-1.3.0.tgz"
    tarball.parent.mkdir(parents=True)
    tarball.write_bytes({"truncated": whole[:len(whole) // 2], "not_gzip": b"<html>502 Bad Gateway</html>",
                         "intact": whole}[damage])
    monkeypatch.setattr("codecl.data.sources.NPM_PACKAGES", (LEFT_PAD,))
    monkeypatch.setattr("codecl.data.sources.subprocess.run", lambda *args, **kwargs: pytest.fail("no network"))
    if damage == "intact":  # the same tarball whole is read: the damage, not the fake, is what fails
        assert [(f.path, f.content) for f in npm_files(LEFT_PAD)] == [("index.js", LEFT_PAD_JS)]
        return
    with pytest.raises(UserError) as raised:
        mine_corpus(tmp_path / "out", languages=("javascript",))
    assert re.fullmatch(rf"{re.escape(str(tarball))}: damaged npm tarball of left-pad@1\.3\.0 \(.+\); "
                        "delete it to fetch it again", str(raised.value)), str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_npm_pack_leaves_the_cached_tarball_whole_or_absent(monkeypatch):
    whole = npm_pack_output({"index.js": LEFT_PAD_JS})
    monkeypatch.setattr("codecl.data.sources.shutil.which", lambda name: "/usr/bin/npm")

    def pack(written: bytes, fails: bool):
        def run(command, **kwargs):
            destination = Path(command[command.index("--pack-destination") + 1])
            (destination / "left-pad-1.3.0.tgz").write_bytes(written)
            if fails:
                raise subprocess.CalledProcessError(1, command, stderr="npm ERR! aborted")
        return run

    folder = miner.cache_dir() / "npm"
    monkeypatch.setattr("codecl.data.sources.subprocess.run", pack(whole[:100], fails=True))  # cut off
    with pytest.raises(UserError, match=r"`npm pack left-pad@1\.3\.0` failed.*npm ERR! aborted"):
        npm_tarball(LEFT_PAD)
    assert list(folder.iterdir()) == []
    monkeypatch.setattr("codecl.data.sources.subprocess.run", pack(whole, fails=False))
    assert npm_tarball(LEFT_PAD) == folder / "left-pad-1.3.0.tgz"
    assert list(folder.iterdir()) == [folder / "left-pad-1.3.0.tgz"]
    assert (folder / "left-pad-1.3.0.tgz").read_bytes() == whole


# Sources planted with one leak of each kind, each on the far side of a split. Each language gets a
# train file, a valid file and a test file (`file_in_split` picks their names):
# - contained: a helper nested in a train function is also a documented function of the test file;
# - near_duplicate: the valid file has a train function again, renamed, with its own docstring;
# - same_docstring: a test function has a train function's summary (and another a valid one's), other code.
PLANTED = {
    "python": {
        "train": '''def outer_parser(lines):
    """Parse the lines of a record file into cleaned fields."""
    def clean_field(text):
        """Strip the quotes and spaces around a field."""
        text = text.strip()
        if text.startswith('"') and text.endswith('"'):
            text = text[1:-1]
        return text.strip()

    fields = []
    for line in lines:
        fields.append([clean_field(part) for part in line.split(",")])
    return fields


def merge_settings(defaults, overrides, strict):
    """Merge the override settings into a copy of the defaults."""
    merged = dict(defaults)
    unknown = []
    for key, value in overrides.items():
        if strict and key not in defaults:
            unknown.append(key)
        elif value is not None:
            merged[key] = value
    return merged, unknown


def read_header(stream):
    """Read the header block from the given stream."""
    header = []
    for line in stream:
        if not line.strip():
            break
        header.append(line.rstrip())
    return header
''',
        "valid": '''def combine_settings(defaults, overrides, strict):
    """Combine the defaults with the overrides, keeping the defaults' keys."""
    merged = dict(defaults)
    unknown = []
    for key, value in overrides.items():
        if strict and key not in defaults:
            unknown.append(key)
        elif value is not None:
            merged[key] = value
    return merged, unknown


def count_words(text):
    """Count how often each word occurs in the text."""
    counts = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return counts
''',
        "test": '''def clean_field(text):
    """Strip the quotes and spaces around a field."""
    text = text.strip()
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1]
    return text.strip()


def parse_header(source):
    """Read the header   block
    from the given stream.

    It stops at the first blank line.
    """
    rows = source.split("\\n\\n", 1)[0]
    cleaned = [row.rstrip() for row in rows.splitlines()]
    return cleaned


def tally_words(text):
    """Count how often each word occurs in the text."""
    import collections
    words = text.lower().split()
    return dict(collections.Counter(words))


def summarise_scores(scores):
    """Summarise the scores as their mean and spread."""
    mean = sum(scores) / len(scores)
    spread = max(scores) - min(scores)
    return mean, spread
''',
    },
    "javascript": {
        "train": '''/**
 * Build an index from each item's key to the item.
 */
function buildIndex(items) {
  function normaliseKey(key) {
    var text = String(key).trim();
    return text.toLowerCase();
  }
  var index = {};
  items.forEach(function (item) {
    index[normaliseKey(item.key)] = item;
  });
  return index;
}

/**
 * Merge the override options into a copy of the defaults.
 */
function mergeOptions(defaults, overrides, strict) {
  var merged = Object.assign({}, defaults);
  var unknown = [];
  Object.keys(overrides).forEach(function (key) {
    if (strict && !(key in defaults)) {
      unknown.push(key);
    } else if (overrides[key] !== undefined) {
      merged[key] = overrides[key];
    }
  });
  return [merged, unknown];
}

/**
 * Read the header block from the given stream.
 */
function readHeader(stream) {
  var end = stream.indexOf("\\n\\n");
  return stream.slice(0, end).split("\\n");
}
''',
        "valid": '''/**
 * Combine the defaults with the overrides, keeping the defaults' keys.
 */
function combineOptions(defaults, overrides, strict) {
  var merged = Object.assign({}, defaults);
  var unknown = [];
  Object.keys(overrides).forEach(function (key) {
    if (strict && !(key in defaults)) {
      unknown.push(key);
    } else if (overrides[key] !== undefined) {
      merged[key] = overrides[key];
    }
  });
  return [merged, unknown];
}

/**
 * Count how often each word occurs in the text.
 */
function countWords(text) {
  var counts = {};
  text.split(/\\s+/).forEach(function (word) { counts[word] = (counts[word] || 0) + 1; });
  return counts;
}
''',
        "test": '''/**
 * Normalise a key to trimmed lower case text.
 */
function normaliseKey(key) {
  var text = String(key).trim();
  return text.toLowerCase();
}

/**
 * Read the header block
 *   from the given stream.
 *
 * @param {string} source the whole text
 */
function parseHeader(source) {
  var rows = source.split("\\n\\n")[0];
  return rows.split("\\n").map(function (row) { return row.trimEnd(); });
}

/**
 * Count how often each word occurs in the text.
 */
function tallyWords(text) {
  var words = text.toLowerCase().split(" ");
  return words.reduce(function (seen, word) { seen[word] = (seen[word] || 0) + 1; return seen; }, {});
}

/**
 * Summarise the scores as their mean and spread.
 */
function summariseScores(scores) {
  var mean = scores.reduce(function (a, b) { return a + b; }, 0) / scores.length;
  var spread = Math.max.apply(null, scores) - Math.min.apply(null, scores);
  return [mean, spread];
}
''',
    },
}
# What each rule must take out of the planted sources, and what must stay, written out by hand.
PLANTED_LEAKS = {
    "python": {"contained": ["clean_field"], "same_docstring": ["parse_header", "tally_words"],
               "near_duplicate": ["combine_settings"]},
    "javascript": {"contained": ["normaliseKey"], "same_docstring": ["parseHeader", "tallyWords"],
                   "near_duplicate": ["combineOptions"]},
}
PLANTED_KEPT = {
    "python": {"train": ["merge_settings", "outer_parser", "read_header"], "valid": ["count_words"],
               "test": ["summarise_scores"]},
    "javascript": {"train": ["buildIndex", "mergeOptions", "readHeader"], "valid": ["countWords"],
                   "test": ["summariseScores"]},
}
SPLIT_NAMES = ("train", "valid", "test")


def file_in_split(split: str, repo: str, suffix: str) -> str:
    """A file name that the miner's split by file puts in `split`."""
    for attempt in range(1000):
        name = f"module_{split}{attempt}{suffix}"  # not "test_...": the miner drops test files
        if partition_of(repo, name, (0.8, 0.1, 0.1)) == split:
            return name
    raise AssertionError(f"no file name of 1000 lands in {split}")


@pytest.fixture
def planted(tmp_path) -> tuple[Path, Path]:
    folders = {"python": tmp_path / "planted_py", "javascript": tmp_path / "planted_js"}
    for language, folder in folders.items():
        folder.mkdir()
        for split, text in PLANTED[language].items():
            (folder / file_in_split(split, folder.name, SUFFIXES[language])).write_text(text)
    return folders["python"], folders["javascript"]


def normalised(text: str) -> str:
    return " ".join(text.split())


def identifier_multiset(record) -> Counter:
    """Identifier tokens as dpu_utils' DuplicateDetector takes them, written again here to check the miner."""
    return Counter(token for token in record.code_tokens
                   if re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", token) and token not in leaks.KEYWORDS[record.language])


def near_duplicates(first: Counter, second: Counter) -> bool:
    """Both long enough, set Jaccard >= 0.8 and multiset Jaccard >= 0.7."""
    shared = len(first.keys() & second.keys())
    if shared / (len(first) + len(second) - shared) < 0.8:
        return False
    return sum((first & second).values()) / sum((first | second).values()) >= 0.7


def leaks_between_splits(root: Path, language: str, sample: int | None = None) -> dict[str, list[str]]:
    """Every leak in a mined corpus, found by comparing each held-out example with every earlier one.

    Targets and sources are the task's own (`make_pair`); valid is compared with train, test with both.
    Files straddling splits are looked for everywhere; with `sample`, only that many held-out examples
    per split, drawn at random, are compared with all earlier ones: all pairs of the default corpus take hours.
    """
    records = {split: read_release_split(root, language, split).records for split in SPLIT_NAMES}
    splits_of_file = defaultdict(set)
    for split, split_records in records.items():
        for record in split_records:
            splits_of_file[(record.repo, record.path)].add(split)
    found = {"straddling": [f"{repo}/{path}" for (repo, path), splits in splits_of_file.items() if len(splits) > 1],
             "contained": [], "near_duplicate": [], "same_docstring": []}
    config = DataConfig()
    for later, earlier in (("valid", ["train"]), ("test", ["train", "valid"])):
        earlier_records = [record for split in earlier for record in records[split]]
        earlier_pairs = [make_pair(record, config) for record in earlier_records]
        # Joined by a line break, which no whitespace-normalised text holds, so no match spans two functions.
        earlier_targets = "\n".join(normalised(target) for _, target in earlier_pairs)
        earlier_codes = "\n".join(normalised(record.code) for record in earlier_records)
        earlier_sources = {normalised(source) for source, _ in earlier_pairs}
        # Too short to judge (dpu_utils' min_num_tokens_per_document): neither compared nor compared with.
        earlier_identifiers = [counts for counts in map(identifier_multiset, earlier_records)
                               if counts.total() >= leaks.NEAR_DUPLICATE_MIN_IDENTIFIERS]
        checked = records[later] if sample is None else random.Random(later).sample(
            records[later], min(sample, len(records[later])))
        for record in checked:
            source, target = make_pair(record, config)
            if normalised(target) in earlier_targets or normalised(record.code) in earlier_codes:
                found["contained"].append(record.func_name)
            if normalised(source) in earlier_sources:
                found["same_docstring"].append(record.func_name)
            identifiers = identifier_multiset(record)
            if (identifiers.total() >= leaks.NEAR_DUPLICATE_MIN_IDENTIFIERS
                    and any(near_duplicates(identifiers, other) for other in earlier_identifiers)):
                found["near_duplicate"].append(record.func_name)
    return {kind: sorted(names) for kind, names in found.items()}


def test_planted_leaks_are_found_by_the_check_when_left_in(tmp_path, planted, monkeypatch):
    # The check below must be able to fail: with leak removal switched off it finds every planted leak.
    monkeypatch.setattr(miner, "remove_leaks", lambda records: (records, {}))
    mine_corpus(tmp_path / "out", python_dirs=[planted[0]], javascript_dirs=[planted[1]], use_stdlib=False,
                use_npm=False)
    for language in ("python", "javascript"):
        assert leaks_between_splits(tmp_path / "out", language) == {"straddling": [], **PLANTED_LEAKS[language]}


def test_each_leak_rule_removes_exactly_its_planted_leak(tmp_path, planted):
    summary = mine_corpus(tmp_path / "out", python_dirs=[planted[0]], javascript_dirs=[planted[1]],
                          use_stdlib=False, use_npm=False)
    for language in ("python", "javascript"):
        assert leaks_between_splits(tmp_path / "out", language) == {
            "straddling": [], "contained": [], "near_duplicate": [], "same_docstring": [],
        }
        kept = {split: sorted(r.func_name for r in read_release_split(tmp_path / "out", language, split).records)
                for split in SPLIT_NAMES}
        assert kept == PLANTED_KEPT[language]
        # parse_header and tally_words both share a summary: one with train, one with the valid that is kept.
        assert summary.leak_removed[language] == {
            "valid": {"contained": 0, "near_duplicate": 1, "same_docstring": 0},
            "test": {"contained": 1, "near_duplicate": 0, "same_docstring": 2},
        }
    manifest = json.loads((tmp_path / "out" / "MINED.json").read_text())
    assert manifest["leak_removed"] == summary.leak_removed
    assert "python leaks removed: valid contained 0, near_duplicate 1" in str(summary)


def test_the_functions_of_one_file_never_straddle_two_splits(tmp_path):
    # 20 files of 10 distinct functions: split function by function, nearly every file would straddle.
    folder = tmp_path / "many"
    folder.mkdir()
    for file_number in range(20):
        (folder / f"module_{file_number}.py").write_text("\n\n".join(
            f'def step_{file_number}_{part}(items, limit):\n'
            f'    """Advance batch {file_number}, part {part}, of the items up to the limit."""\n'
            f'    chosen_{file_number}_{part} = []\n'
            f'    for item in items[:limit]:\n'
            f'        chosen_{file_number}_{part}.append(item * {part} + {file_number})\n'
            f'    return chosen_{file_number}_{part}\n'
            for part in range(10)
        ))
    mine_corpus(tmp_path / "out", python_dirs=[folder], use_stdlib=False, languages=("python",))
    records = {split: read_release_split(tmp_path / "out", "python", split).records for split in SPLIT_NAMES}
    assert sum(map(len, records.values())) == 200  # nothing here leaks, so nothing is removed
    assert sum(1 for split_records in records.values() if split_records) >= 2
    assert leaks_between_splits(tmp_path / "out", "python")["straddling"] == []
    for split, split_records in records.items():
        assert Counter(record.path for record in split_records) == {record.path: 10 for record in split_records}


def brute_force_near_duplicate(query: Counter, members: list[Counter]) -> bool:
    def long_enough(counts: Counter) -> bool:
        return counts.total() >= leaks.NEAR_DUPLICATE_MIN_IDENTIFIERS

    return long_enough(query) and any(long_enough(member) and near_duplicates(query, member) for member in members)


def test_near_duplicate_index_answers_as_comparing_every_pair():
    rng = random.Random(0)
    vocabulary = [f"name{i}" for i in range(40)]

    def random_function() -> Counter:
        return Counter(rng.choices(vocabulary[:rng.randint(8, 40)], k=rng.randint(8, 30)))

    def edited(counts: Counter) -> Counter:
        copy = Counter(counts)
        for _ in range(rng.randint(0, 4)):
            copy[rng.choice(vocabulary)] += rng.choice([1, 1, -1, -2])
        return +copy  # drop what fell to zero

    members = [random_function() for _ in range(150)]
    queries = [edited(rng.choice(members)) for _ in range(300)] + [random_function() for _ in range(100)]
    # Exactly at the set threshold: set Jaccard 8/10, multiset Jaccard 16/20.
    members.append(Counter(vocabulary[:9] * 2))
    queries.append(Counter(vocabulary[1:10] * 2))
    frequency = Counter(token for counts in members + queries for token in counts)
    index = leaks.NearDuplicateIndex({token: rank for rank, token in enumerate(sorted(frequency, key=frequency.get))})
    for counts in members:
        index.add(counts)
    answers = [index.has_near_duplicate(query) for query in queries]
    assert answers == [brute_force_near_duplicate(query, members) for query in queries]
    assert 50 < sum(answers) < len(answers) - 50 and answers[-1]


def test_containment_index_answers_as_searching_every_text():
    rng = random.Random(1)
    words = ["def", "f(x):", "return", "x", "+", "1", "a.b", "(y)", "{", "}", "if", "else"]
    texts = [" ".join(rng.choices(words, k=rng.randint(3, 30))) for _ in range(100)]
    index = leaks.ContainmentIndex()
    for text in texts:
        index.add(text, text.upper())
    needles = []
    for _ in range(400):  # cut anywhere, inside words too, or make something new
        text = rng.choice(texts)
        start = rng.randrange(len(text))
        needle = text[start:start + rng.randint(1, 40)].strip()
        needles.append(needle if rng.random() < 0.7 else " ".join(rng.choices(words, k=rng.randint(2, 8))))
    for needle in filter(None, needles):
        assert index.contains(needle, "") == any(needle in text for text in texts), needle
        assert index.contains("", needle.upper()) == any(needle.upper() in text.upper() for text in texts), needle


# Read at import, before each test gets an empty cache: the pinned npm tarballs already downloaded.
DOWNLOADED_NPM_TARBALLS = miner.cache_dir() / "npm"


@pytest.mark.slow
@pytest.mark.parametrize("language", ["python", "javascript"])
def test_the_default_corpus_has_no_leaks_between_splits(tmp_path, language):
    if language == "javascript" and DOWNLOADED_NPM_TARBALLS.is_dir():
        # Same name, same pinned version, same bytes: copying them spares the npm registry and a minute.
        shutil.copytree(DOWNLOADED_NPM_TARBALLS, miner.cache_dir() / "npm")
    try:
        summary = mine_corpus(tmp_path / "out", languages=(language,))
    except UserError as problem:  # JavaScript comes from the npm registry, which may be out of reach
        pytest.skip(f"could not mine the default {language} corpus: {problem}")
    assert min(summary.counts[language].values()) > 100
    # 150 random held-out examples per split against every earlier one: all pairs would take hours.
    assert leaks_between_splits(tmp_path / "out", language, sample=150) == {
        "straddling": [], "contained": [], "near_duplicate": [], "same_docstring": [],
    }


def mine_site_packages(out: Path, monkeypatch, packages) -> miner.MineSummary:
    """Mine only `packages` through the default-source path: the standard library swapped for nothing."""
    monkeypatch.setattr("codecl.data.sources.SITE_PACKAGES", tuple(packages))
    monkeypatch.setattr("codecl.data.sources.stdlib_source", lambda: Source("cpython-stdlib", "0", None, iter(())))
    return mine_corpus(out, languages=("python",))


def test_an_installed_package_keeps_each_file_in_one_split(tmp_path, monkeypatch):
    packages = [SitePackage(name, installed_version(name)) for name in ("click", "packaging")]
    summary = mine_site_packages(tmp_path / "out", monkeypatch, packages)
    records = {split: read_release_split(tmp_path / "out", "python", split).records for split in SPLIT_NAMES}
    splits_of_file = defaultdict(set)
    for split, split_records in records.items():
        for record in split_records:
            splits_of_file[record.repo, record.path].add(split)
    assert {repo for repo, _ in splits_of_file} == {f"{p.name}@{p.version}" for p in packages}
    assert sum(map(len, records.values())) > 200 and all(records.values())
    assert all(len(splits) == 1 for splits in splits_of_file.values())
    assert all(r.url.startswith(f"pypi:{r.repo}/{r.path}#L") for rs in records.values() for r in rs)
    manifest = json.loads((tmp_path / "out" / "MINED.json").read_text())
    assert [(s["source"], s["version"], s["pinned"]) for s in manifest["sources"][1:]] == [
        (f"{p.name}@{p.version}", p.version, p.version) for p in packages
    ]
    assert manifest["differs_from_pins"] == [] and summary.counts["python"]["train"] > 100


def test_a_package_off_its_pin_or_missing_is_mined_as_found_and_recorded(tmp_path, monkeypatch, capsys):
    click = installed_version("click")
    mine_site_packages(tmp_path / "out", monkeypatch, [
        SitePackage("click", "0.0.1"), SitePackage("codecl-no-such-package", "1.0"),
    ])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert warnings == [
        f"warning: click {click} is installed, the miner pins 0.0.1; mining {click}, so this corpus differs "
        "from the default one (MINED.json records it)",
        "warning: codecl-no-such-package is not installed, so the corpus lacks it; install the pinned version "
        "with `pip install codecl-no-such-package==1.0`",
    ]
    manifest = miner.corpus_manifest(tmp_path / "out")
    assert manifest["differs_from_pins"] == [
        f"click@{click}: pinned 0.0.1, mined {click}", "codecl-no-such-package: pinned 1.0, not installed, not mined",
    ]
    by_name = {source["source"]: source for source in manifest["sources"]}
    assert by_name[f"click@{click}"]["kept"] > 100
    assert by_name["codecl-no-such-package"] == {
        "language": "python", "source": "codecl-no-such-package", "version": None, "pinned": "1.0", "files": 0,
        "kept": 0,
    }


def test_a_corpus_is_mined_again_when_an_installed_package_changes(monkeypatch):
    out = miner.cache_dir() / "csn-mined"  # CODECL_CACHE is a fresh folder per test (conftest)
    out.mkdir(parents=True)
    versions = {**site_package_versions(), "torch": "0.0.1"}
    (out / "MINED.json").write_text(json.dumps({
        "miner_version": miner.MINER_VERSION, "python": sys.version.split()[0], "languages": ["python"],
        "site_packages": versions, "sources_pinned": pinned_sources_hash(),
    }))
    calls = []
    monkeypatch.setattr(miner, "mine_corpus", lambda *args, **kwargs: calls.append(kwargs))
    miner.ensure_mined_corpus(("python",))
    assert calls == [{"languages": ("python",)}]


@pytest.mark.parametrize("pins_changed", [
    "none", "npm_version", "npm_skip", "site_package_skip", "manifest_without_the_field",
])
def test_a_corpus_is_mined_again_when_the_pinned_source_lists_change(monkeypatch, pins_changed):
    out = miner.cache_dir() / "csn-mined"  # CODECL_CACHE is a fresh folder per test (conftest)
    out.mkdir(parents=True)
    manifest = {"miner_version": miner.MINER_VERSION, "python": sys.version.split()[0], "languages": ["python"],
                "site_packages": site_package_versions(), "sources_pinned": pinned_sources_hash()}
    if pins_changed == "manifest_without_the_field":  # mined before the miner recorded it
        del manifest["sources_pinned"]
    (out / "MINED.json").write_text(json.dumps(manifest))
    npm_packages, site_packages = list(sources_module.NPM_PACKAGES), list(sources_module.SITE_PACKAGES)
    if pins_changed == "npm_version":
        npm_packages[0] = npm_packages[0]._replace(version="0.0.1")
    elif pins_changed == "npm_skip":
        npm_packages[0] = npm_packages[0]._replace(skip=npm_packages[0].skip[1:])
    elif pins_changed == "site_package_skip":
        site_packages[0] = site_packages[0]._replace(skip=(*site_packages[0].skip, "torch/testing/"))
    monkeypatch.setattr(sources_module, "NPM_PACKAGES", tuple(npm_packages))
    monkeypatch.setattr(sources_module, "SITE_PACKAGES", tuple(site_packages))
    calls = []
    monkeypatch.setattr(miner, "mine_corpus", lambda *args, **kwargs: calls.append(kwargs))
    assert miner.ensure_mined_corpus(("python",)) == out
    assert calls == ([] if pins_changed == "none" else [{"languages": ("python",)}])


def test_the_pinned_source_hash_is_recorded_without_touching_the_corpus(tmp_path, sources, monkeypatch):
    mine_local(tmp_path / "first", sources)
    monkeypatch.setattr(sources_module, "NPM_PACKAGES", sources_module.NPM_PACKAGES[1:])
    mine_local(tmp_path / "again", sources)
    first, again = (json.loads((tmp_path / folder / "MINED.json").read_text()) for folder in ("first", "again"))
    assert first["sources_pinned"] != again["sources_pinned"] and len(first["sources_pinned"]) == 16
    assert first["checksums"] == again["checksums"] and first["corpus_sha256"] == again["corpus_sha256"]


def test_checksums_follow_the_content_of_each_split(tmp_path, sources):
    mine_local(tmp_path / "first", sources)
    mine_local(tmp_path / "again", sources)
    first, again = miner.corpus_manifest(tmp_path / "first"), miner.corpus_manifest(tmp_path / "again")
    assert first["checksums"] == again["checksums"] and first["corpus_sha256"] == again["corpus_sha256"]
    assert len(first["checksums"]) == 6 and first["counts"]["javascript"] == again["counts"]["javascript"]
    for path, checksum in first["checksums"].items():  # the checksum is of what a reader decompresses
        assert miner.split_checksum(tmp_path / "first" / path) == checksum
    # One kept function's body changes: only its split's checksum, and the corpus's, change.
    module = sources[0] / "module.py"
    module.write_text(module.read_text().replace("text += str(self.value)", "text = text + str(self.value)"))
    mine_local(tmp_path / "changed", sources)
    changed = miner.corpus_manifest(tmp_path / "changed")
    differing = [path for path in first["checksums"] if changed["checksums"][path] != first["checksums"][path]]
    split = partition_of("pysrc", "module.py", (0.8, 0.1, 0.1))
    assert differing == [f"python/final/jsonl/{split}/python_{split}_0.jsonl.gz"]
    assert changed["corpus_sha256"] != first["corpus_sha256"]


def test_corpus_manifest_says_what_is_missing(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path / 'MINED.json'}: unreadable"):
        miner.corpus_manifest(tmp_path)
    (tmp_path / "MINED.json").write_text(json.dumps({"miner_version": "2"}))
    with pytest.raises(UserError, match="no corpus_sha256.*mine it again"):
        miner.corpus_manifest(tmp_path)


@pytest.mark.parametrize("keep_manifest", [True, False])
def test_the_corpus_fingerprint_follows_content_not_place_or_file_times(tmp_path, sources, keep_manifest, capsys):
    mine_local(tmp_path / "first", sources)
    if not keep_manifest:  # a CodeSearchNet-layout folder the miner did not write
        (tmp_path / "first" / "MINED.json").unlink()
    shutil.copytree(tmp_path / "first", tmp_path / "copy")  # a new place and new file times
    train = tmp_path / "copy" / "python" / "final" / "jsonl" / "train" / "python_train_0.jsonl.gz"
    os.utime(train, (1, 1))

    def fingerprint(folder: str) -> str:
        return corpus_fingerprint(DataConfig(source="local", path=tmp_path / folder, stream=["python"]))

    assert fingerprint("copy") == fingerprint("first")
    # Another zlib's bytes for the same lines: the same corpus.
    train.write_bytes(gzip.compress(gzip.decompress(train.read_bytes()), compresslevel=1, mtime=123))
    assert fingerprint("copy") == fingerprint("first")
    assert "warning" not in capsys.readouterr().err
    # Edited after mining: a MINED.json, if there is one, must not hide it.
    train.write_bytes(gzip.compress(b"{}\n", mtime=0))
    assert fingerprint("copy") != fingerprint("first")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    edited = (f"warning: {tmp_path / 'copy'}: python/final/jsonl/train/python_train_0.jsonl.gz changed after mining, "
              "so MINED.json no longer describes them; the corpus fingerprint follows the files")
    assert warnings == ([edited] if keep_manifest else [])


def test_the_corpus_fingerprint_covers_the_train_files_the_reader_reads(tmp_path, sources):
    mine_local(tmp_path / "out", sources)
    python = tmp_path / "out" / "python"

    def fingerprint() -> str:
        return corpus_fingerprint(DataConfig(source="local", path=tmp_path / "out", stream=["python"]))

    before = fingerprint()
    (python / "train_notes.txt").write_text("not a split file")  # "train" in the name, never read
    (python / "final" / "jsonl" / "train" / "README").write_text("not a split file either")
    assert fingerprint() == before
    extra = python / "final" / "jsonl" / "train" / "python_train_1.jsonl"  # read, though MINED.json lacks it
    extra.write_text('{"extra": 1}\n')
    assert fingerprint() != before
    # An export laid out as <language>/train.jsonl is fingerprinted by that file.
    export = tmp_path / "export" / "python"
    export.mkdir(parents=True)
    (export / "train.jsonl").write_text('{"a": 1}\n')
    (export / "valid.jsonl").write_text('{"b": 1}\n')
    exported = corpus_fingerprint(DataConfig(source="local", path=tmp_path / "export", stream=["python"]))
    (export / "valid.jsonl").write_text('{"b": 2}\n')
    assert corpus_fingerprint(DataConfig(source="local", path=tmp_path / "export", stream=["python"])) == exported
    (export / "train.jsonl").write_text('{"a": 2}\n')
    assert corpus_fingerprint(DataConfig(source="local", path=tmp_path / "export", stream=["python"])) != exported
