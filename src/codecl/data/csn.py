"""Readers for CodeSearchNet files: the original release layout, local hub-schema exports, and the hub.

The original release (Husain et al. 2019) ships `{language}/final/jsonl/{split}/*.jsonl.gz`, one
function per line; the Hugging Face `code_search_net` dataset renames the same fields. Rows that
cannot be used are counted and skipped, so one bad line never stops a run.
"""

import gzip
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from codecl.data.records import CodeRecord
from codecl.errors import UserError

SPLITS = ("train", "valid", "test")
# The hub calls the validation split "validation"; local exports may use either name.
HUB_SPLIT_NAMES = {"train": "train", "valid": "validation", "test": "test"}
RELEASE_LAYOUT = "{root}/<language>/final/jsonl/<train|valid|test>/*.jsonl.gz (or {root}/<language>/<split>.jsonl)"
# Hugging Face `code_search_net` field -> original-release field.
HUB_TO_RELEASE = {
    "repository_name": "repo",
    "func_path_in_repository": "path",
    "func_name": "func_name",
    "whole_func_string": "original_string",
    "language": "language",
    "func_code_string": "code",
    "func_code_tokens": "code_tokens",
    "func_documentation_string": "docstring",
    "func_documentation_tokens": "docstring_tokens",
    "split_name": "partition",
    "func_code_url": "url",
}
HUB_SCHEMA_MARKERS = ("func_code_string", "func_documentation_string")


@dataclass
class SplitRead:
    """The usable records of one split, and how many rows were skipped (with the first reason)."""

    records: list[CodeRecord] = field(default_factory=list)
    malformed: int = 0
    first_problem: str | None = None

    def skip(self, problem: str) -> None:
        self.malformed += 1
        if self.first_problem is None:
            self.first_problem = problem


def hub_row_to_release(row: dict[str, Any]) -> dict[str, Any]:
    """Rename a hub-schema row's fields to the release's; the hub has no `sha`, so it comes from the url."""
    release = {HUB_TO_RELEASE[key]: value for key, value in row.items() if key in HUB_TO_RELEASE}
    url = release.get("url")
    # Hub urls are github.com/{repo}/blob/{sha}/{path}#L..; the sha is the commit the function came from.
    parts = url.split("/blob/", 1) if isinstance(url, str) else []
    release.setdefault("sha", parts[1].split("/", 1)[0] if len(parts) == 2 else "")
    if release.get("partition") == "validation":
        release["partition"] = "valid"
    return release


def record_from_row(row: Any) -> CodeRecord:
    """A `CodeRecord` from a release-schema or hub-schema row, whichever this row is; `ValueError` if unusable."""
    if isinstance(row, dict) and any(marker in row for marker in HUB_SCHEMA_MARKERS):
        row = hub_row_to_release(row)
    return CodeRecord.from_json(row)


def split_files(root: Path, language: str, split: str) -> list[Path]:
    """The files holding one split, sorted; `UserError` naming the first folder that is missing."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist; expected {RELEASE_LAYOUT.format(root=root)}")
    language_dir = root / language
    if not language_dir.is_dir():
        raise UserError(f"no {language} folder {language_dir}; expected {RELEASE_LAYOUT.format(root=root)}")
    release_dir = language_dir / "final" / "jsonl" / split
    if release_dir.is_dir():
        return sorted([*release_dir.glob("*.jsonl.gz"), *release_dir.glob("*.jsonl")])
    export_names = {split, HUB_SPLIT_NAMES[split]}
    exports = sorted(
        path for path in language_dir.iterdir()
        if path.name in {f"{name}{suffix}" for name in export_names for suffix in (".jsonl", ".jsonl.gz")}
    )
    if not exports:
        raise UserError(
            f"no {split} split for {language}: neither {release_dir} nor {language_dir}/{split}.jsonl[.gz] "
            f"exists; expected {RELEASE_LAYOUT.format(root=root)}"
        )
    return exports


def read_lines(path: Path) -> Iterator[str]:
    """Text lines of a `.jsonl` or `.jsonl.gz` file."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as lines:
        yield from lines


def read_release_split(root: Path, language: str, split: str, limit: int | None = None) -> SplitRead:
    """Read one split's records in file and line order, stopping after `limit` usable records.

    Rows with bad JSON, a missing `code`/`docstring`/`func_name`, a wrong field type or empty code
    are counted in `malformed`; a missing folder raises `UserError`.
    """
    read = SplitRead()
    for path in split_files(Path(root), language, split):
        line_number = 0
        try:
            for line_number, line in enumerate(read_lines(path), start=1):
                if limit is not None and len(read.records) >= limit:
                    return read
                if not line.strip():
                    continue
                try:
                    read.records.append(record_from_row(json.loads(line)))
                except ValueError as problem:  # json.JSONDecodeError is a ValueError too
                    read.skip(f"{path.name} line {line_number}: {problem}")
        except (OSError, EOFError, zlib.error) as problem:
            # A truncated or corrupt archive: keep what was read before the damage.
            read.skip(f"{path.name} after line {line_number}: unreadable ({problem})")
    return read


def load_hub_split(language: str, split: str, limit: int | None = None) -> SplitRead:
    """Read a split of the Hugging Face `code_search_net` dataset (needs `pip install codecl[hub]` and network)."""
    local_hint = "or set data.source: local and data.path to a folder laid out as " + RELEASE_LAYOUT.format(root="root")
    try:
        import datasets  # optional: only this reader needs it
    except ImportError:
        raise UserError(f"the `datasets` package is not installed (pip install 'codecl[hub]'), {local_hint}") from None
    hub_split = HUB_SPLIT_NAMES.get(split)
    if hub_split is None:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if limit is not None:
        hub_split = f"{hub_split}[:{limit}]"
    try:
        rows = datasets.load_dataset("code_search_net", language, split=hub_split)
    except Exception as problem:  # the hub raises many types (connection, missing config, auth)
        raise UserError(
            f"could not load code_search_net/{language} {split} from the Hugging Face hub "
            f"({type(problem).__name__}: {str(problem).splitlines()[0] if str(problem) else ''}); {local_hint}"
        ) from None
    read = SplitRead()
    for index, row in enumerate(rows):
        try:
            read.records.append(record_from_row(row))
        except ValueError as problem:
            read.skip(f"code_search_net/{language} {split} row {index}: {problem}")
    return read


def split_counts(root: Path) -> dict[str, dict[str, int]]:
    """Usable records per language and split under `root`, plus each language's `malformed` total.

    A language is any folder under `root` with at least one split; absent splits count 0.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist; expected {RELEASE_LAYOUT.format(root=root)}")
    counts: dict[str, dict[str, int]] = {}
    for language_dir in sorted(path for path in root.iterdir() if path.is_dir()):
        language_counts = {"malformed": 0}
        for split in SPLITS:
            try:
                read = read_release_split(root, language_dir.name, split)
            except UserError:
                language_counts[split] = 0
                continue
            language_counts[split] = len(read.records)
            language_counts["malformed"] += read.malformed
        if any(language_counts[split] for split in SPLITS) or language_counts["malformed"]:
            counts[language_dir.name] = {split: language_counts[split] for split in (*SPLITS, "malformed")}
    return counts


def format_split_counts(counts: dict[str, dict[str, int]]) -> str:
    """`split_counts` as a fixed-width table, one row per language, ready to print."""
    columns = (*SPLITS, "malformed")
    width = max([len("language"), *(len(language) for language in counts)])
    lines = [f"{'language':<{width}}" + "".join(f"{column:>11}" for column in columns)]
    for language, language_counts in counts.items():
        lines.append(f"{language:<{width}}" + "".join(f"{language_counts.get(c, 0):>11,}" for c in columns))
    if not counts:
        lines.append("(no CodeSearchNet files found)")
    return "\n".join(lines)
