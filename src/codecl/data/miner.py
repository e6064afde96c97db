"""The offline miner: a CodeSearchNet-style corpus built from source code on this machine.

Follows the construction in Husain et al. 2019, "CodeSearchNet Challenge", §2.1: take functions
that have documentation, keep the documentation's first paragraph as the query, and drop functions
whose summary is under three tokens, whose code is under three lines, whose name or file says they
are tests, that are constructors or standard extension methods, or that duplicate one already kept.
Like CodeSearchNet's `dedup_split.py`, a whole file goes to one split; then valid and test lose the
examples that leak from the splits before them (`remove_leaks`).
Python comes from the running interpreter's standard library and pinned packages of the project's
environment, JavaScript from pinned npm packages (`sources.py`). `MINED.json` records every source's
version and a checksum of every split (`corpus_manifest`).
"""

import gzip
import hashlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from codecl.data.csn import SPLITS, format_split_counts, split_files
from codecl.data.docstrings import first_paragraph, summary_tokens
from codecl.data.functions import FoundFunction, javascript_functions, python_functions
from codecl.data.leaks import remove_leaks
from codecl.data.records import CodeRecord
from codecl.data.sources import (
    TEST_DIRS, Source, default_sources, folder_files, pinned_sources_hash, site_package_versions,
)
from codecl.errors import UserError
from codecl.paths import cache_dir

# Bump when a change to extraction or filtering changes the corpus, so cached corpora are rebuilt.
MINER_VERSION = "4"
LANGUAGES = ("python", "javascript")
FILTER_RULES = ("no_docstring", "short_docstring", "short_code", "test", "constructor_or_extension", "duplicate")
MIN_SUMMARY_TOKENS = 3
MIN_CODE_LINES = 3
# CodeSearchNet drops constructors and extension methods: their names say nothing about their bodies.
JS_EXTENSION_METHODS = {"constructor", "toString", "valueOf", "toJSON", "inspect"}

@dataclass
class MineSummary:
    """What `mine_corpus` wrote: records per language and split, and how many each filter rule dropped."""

    out: Path
    counts: dict[str, dict[str, int]]
    dropped: dict[str, dict[str, int]]
    leak_removed: dict[str, dict[str, dict[str, int]]]  # language -> "valid"/"test" -> leak rule -> count
    sources: list[dict]
    seconds: float

    def __str__(self) -> str:
        lines = [f"mined {self.out} in {self.seconds:.1f} s", format_split_counts(self.counts)]
        for language, dropped in self.dropped.items():
            lines.append(f"{language} dropped: " + ", ".join(f"{rule} {count:,}" for rule, count in dropped.items()))
        for language, splits in self.leak_removed.items():
            lines.append(f"{language} leaks removed: " + "; ".join(
                f"{split} " + ", ".join(f"{rule} {count:,}" for rule, count in rules.items())
                for split, rules in splits.items()
            ))
        return "\n".join(lines)


def is_test_path(path: str) -> bool:
    parts = path.lower().split("/")
    return bool(TEST_DIRS & set(parts[:-1])) or parts[-1].startswith("test_") or any(
        parts[-1].endswith(ending) for ending in ("_test.py", ".test.js", ".spec.js", "-test.js")
    )


def failed_rule(function: FoundFunction, path: str, language: str, kept_code_hashes: set[str]) -> str | None:
    """The first CodeSearchNet filter rule `function` fails, or None if it is kept."""
    if not function.docstring:
        return "no_docstring"
    if len(summary_tokens(first_paragraph(function.docstring))) < MIN_SUMMARY_TOKENS:
        return "short_docstring"
    if sum(1 for line in function.code_without_docstring.splitlines() if line.strip()) < MIN_CODE_LINES:
        return "short_code"
    if "test" in function.name.lower() or is_test_path(path):
        return "test"
    short_name = function.name.rsplit(".", 1)[-1]
    dunder = short_name.startswith("__") and short_name.endswith("__") and len(short_name) > 4
    if (language == "python" and dunder) or (language == "javascript" and short_name in JS_EXTENSION_METHODS):
        return "constructor_or_extension"
    code_hash = hashlib.sha1(" ".join(function.code_without_docstring.split()).encode()).hexdigest()
    if code_hash in kept_code_hashes:
        return "duplicate"
    kept_code_hashes.add(code_hash)
    return None


def partition_of(repo: str, path: str, split_ratios: tuple[float, float, float]) -> str:
    """train/valid/test from sha1(repo::path) read as a fraction in [0, 1): stable across runs and machines.

    Keyed by the file, as CodeSearchNet's dedup_split.py keys by `{repo}:{path}`: the functions of one
    file share helpers, names and comments, so a file split across train and test would leak.
    """
    digest = hashlib.sha1(f"{repo}::{path}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    if fraction < split_ratios[0]:
        return "train"
    return "valid" if fraction < split_ratios[0] + split_ratios[1] else "test"


def split_file(root: Path, language: str, split: str) -> Path:
    return Path(root) / language / "final" / "jsonl" / split / f"{language}_{split}_0.jsonl.gz"


def write_jsonl_gz(path: Path, records: list[CodeRecord]) -> str:
    """Write atomically (temp file, then rename) with a fixed gzip time so equal corpora are equal bytes.

    Returns the sha256 of the uncompressed lines: another zlib (zlib-ng, say) may compress the same
    lines to other bytes, so the checksum is of what a reader gets back.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    checksum = hashlib.sha256()
    # Level 6, not gzip's default 9: a third of the time for 2% more bytes on the default corpus.
    with (open(temporary, "wb") as raw,
          gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=6) as compressed):
        for record in records:
            line = (record.to_json() + "\n").encode("utf-8")
            checksum.update(line)
            compressed.write(line)
    os.replace(temporary, path)
    return checksum.hexdigest()


def split_checksum(path: Path) -> str:
    """The sha256 of a split file's uncompressed lines, as `write_jsonl_gz` returns it (`.jsonl`: of its bytes)."""
    checksum = hashlib.sha256()
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as lines:
        for block in iter(lambda: lines.read(1 << 20), b""):
            checksum.update(block)
    return checksum.hexdigest()


def corpus_checksum(checksums: dict[str, str]) -> str:
    """One sha256 for the corpus: over `sha256  path` lines, sorted by path, as `sha256sum` prints them."""
    return hashlib.sha256("".join(f"{checksums[path]}  {path}\n" for path in sorted(checksums)).encode()).hexdigest()


def mine_language(
    language: str, sources: list[Source], split_ratios: tuple[float, float, float],
) -> tuple[dict[str, list[CodeRecord]], dict[str, int], list[dict]]:
    """Records per split, drops per rule, and per-source versions and counts for one language."""
    extract = python_functions if language == "python" else javascript_functions
    records = {split: [] for split in SPLITS}
    dropped, kept_code_hashes, source_counts = Counter({rule: 0 for rule in FILTER_RULES}), set(), []
    for source in sources:
        file_count = kept_count = 0
        started = time.perf_counter()
        for source_file in source.files:
            file_count += 1
            sha = hashlib.sha1(source_file.content).hexdigest()
            for function in extract(source_file.content):
                rule = failed_rule(function, source_file.path, language, kept_code_hashes)
                if rule:
                    dropped[rule] += 1
                    continue
                kept_count += 1
                partition = partition_of(source_file.repo, source_file.path, split_ratios)
                records[partition].append(CodeRecord(
                    repo=source_file.repo, path=source_file.path, func_name=function.name,
                    original_string=function.code, language=language, code=function.code,
                    code_tokens=list(function.code_tokens()), docstring=function.docstring,
                    docstring_tokens=summary_tokens(first_paragraph(function.docstring)), sha=sha,
                    url=f"{source_file.url_prefix}#L{function.first_line}-L{function.last_line}", partition=partition,
                ))
        source_counts.append({"language": language, "source": source.name, "version": source.version,
                              "pinned": source.pinned, "files": file_count, "kept": kept_count})
        print(f"mined {language} from {source.name}: {file_count} files, {kept_count} functions kept "
              f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return records, dict(dropped), source_counts


def differences_from_pins(source_counts: list[dict]) -> list[str]:
    """One line per pinned source mined at another version or not at all: the corpus is then not the default one."""
    return [
        f"{source['source']}: pinned {source['pinned']}, " + (
            f"mined {source['version']}" if source["version"] else "not installed, not mined")
        for source in source_counts
        if source["pinned"] and (source["version"] or "").split("+")[0] != source["pinned"]
    ]


def mine_corpus(
    out: Path, *, python_dirs: list[Path] | None = None, javascript_dirs: list[Path] | None = None,
    use_stdlib: bool = True, use_npm: bool = True, languages=LANGUAGES, split_ratios=(0.8, 0.1, 0.1),
) -> MineSummary:
    """Mine functions into `{out}/{language}/final/jsonl/{split}/{language}_{split}_0.jsonl.gz`.

    `{out}/MINED.json` records the sources with their versions, the counts per split, the drops per
    filter rule, the leaks removed per split and rule (`remove_leaks`), the checksums, the miner
    version and a hash of the pinned source lists (`pinned_sources_hash`). Default sources: the
    standard library and `SITE_PACKAGES` (`use_stdlib`), `NPM_PACKAGES` (`use_npm`).
    """
    started = time.perf_counter()
    split_ratios = tuple(float(ratio) for ratio in split_ratios)
    if len(split_ratios) != 3 or min(split_ratios) < 0 or abs(sum(split_ratios) - 1) > 1e-6:
        raise UserError(f"split ratios {split_ratios} must be three fractions (train, valid, test) summing to 1")
    unknown = [language for language in languages if language not in LANGUAGES]
    if unknown:
        raise UserError(f"the miner supports {', '.join(LANGUAGES)}, not {', '.join(map(repr, unknown))}")
    out = Path(out)
    counts, dropped, leak_removed, leak_seconds, source_counts, checksums = {}, {}, {}, {}, [], {}
    for language in languages:
        local_dirs = [Path(folder) for folder in (python_dirs if language == "python" else javascript_dirs) or []]
        sources = [Source(f"{folder}", None, None, folder_files(folder, language)) for folder in local_dirs]
        if (use_stdlib if language == "python" else use_npm):
            sources[:0] = default_sources(language)
        if not sources:
            default_flag = "--no-stdlib" if language == "python" else "--no-npm"
            raise UserError(f"no {language} sources: give --{language}-dir DIR or drop {default_flag}")
        records, dropped[language], language_sources = mine_language(language, sources, split_ratios)
        leaks_started = time.perf_counter()
        records, leak_removed[language] = remove_leaks(records)
        leak_seconds[language] = round(time.perf_counter() - leaks_started, 2)
        source_counts += language_sources
        for split in SPLITS:
            path = split_file(out, language, split)
            checksums[path.relative_to(out).as_posix()] = write_jsonl_gz(path, records[split])
        counts[language] = {split: len(records[split]) for split in SPLITS}
    summary = MineSummary(out, counts, dropped, leak_removed, source_counts, round(time.perf_counter() - started, 2))
    manifest = {
        "miner_version": MINER_VERSION, "python": sys.version.split()[0], "languages": list(languages),
        "split_ratios": list(split_ratios), "sources": source_counts,
        "differs_from_pins": differences_from_pins(source_counts), "site_packages": site_package_versions(),
        "sources_pinned": pinned_sources_hash(),
        "counts": counts, "dropped": dropped, "leak_removed": leak_removed, "checksums": checksums,
        "corpus_sha256": corpus_checksum(checksums), "seconds": summary.seconds, "leak_seconds": leak_seconds,
    }
    temporary = out / f"MINED.json.tmp{os.getpid()}"
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(temporary, out / "MINED.json")  # written last: its presence means the corpus is complete
    return summary


def corpus_manifest(root: Path) -> dict:
    """What a mined corpus holds, for results files and reports: miner version, Python version, sources
    with their versions and counts, the pins it departs from, counts per split and the checksums."""
    path = Path(root) / "MINED.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as problem:
        raise UserError(f"{path}: unreadable ({problem}); expected the manifest `codecl data mine` writes") from None
    if "corpus_sha256" not in manifest:
        raise UserError(f"{path}: has no corpus_sha256; expected a corpus of miner version 3 or later, mine it again")
    keys = ("miner_version", "python", "corpus_sha256", "checksums", "counts", "sources", "differs_from_pins")
    return {key: manifest.get(key) for key in keys}


def train_checksums(root: Path, languages) -> list[str]:
    """`path sha256` of each train file of `languages` under a CodeSearchNet-layout `root`, sorted by path.

    The files are those the reader reads (`split_files`), each hashed now as the miner hashes what it
    writes (`split_checksum`: the uncompressed lines), so an unedited mined corpus gives the checksums
    MINED.json records, and an edited one gives new ones. Content, not file times or compressed bytes,
    so every machine gets the same answer. About 1.5 s for the default corpus's 20 MB of gzip.
    """
    root = Path(root)
    checksums = {
        path.relative_to(root).as_posix(): split_checksum(path)
        for language in languages for path in split_files(root, language, "train")
    }
    try:
        recorded = json.loads((root / "MINED.json").read_text())["checksums"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = {}  # not mined here, or by a miner before version 3
    edited = [path for path in sorted(checksums) if path in recorded and recorded[path] != checksums[path]]
    if edited:
        # The files win, but results files copy MINED.json's checksums (`corpus_manifest`), which are now wrong.
        print(f"warning: {root}: {', '.join(edited)} changed after mining, so MINED.json no longer describes "
              f"them; the corpus fingerprint follows the files", file=sys.stderr)
    return [f"{path} {checksums[path]}" for path in sorted(checksums)]


def ensure_mined_corpus(languages=LANGUAGES) -> Path:
    """`cache_dir()/csn-mined`, mined with the default sources unless a corpus of this miner version is there.

    The corpus must also come from this Python version, these installed `SITE_PACKAGES` (its Python
    part is their source code) and these pinned source lists (`pinned_sources_hash`: a changed pin
    or skip list changes what is mined).
    """
    out = cache_dir() / "csn-mined"
    wanted = set(languages)
    try:
        manifest = json.loads((out / "MINED.json").read_text())
    except (OSError, ValueError):
        manifest = {}  # absent or unreadable: mine again
    if (manifest.get("miner_version") == MINER_VERSION and manifest.get("python") == sys.version.split()[0]
            and manifest.get("site_packages") == site_package_versions()
            and manifest.get("sources_pinned") == pinned_sources_hash()):
        if wanted <= set(manifest.get("languages", [])):
            return out
        wanted |= set(manifest.get("languages", []))  # the manifest is rewritten, so keep what it listed
    mine_corpus(out, languages=tuple(language for language in LANGUAGES if language in wanted))
    return out
