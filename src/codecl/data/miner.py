"""The offline miner: a CodeSearchNet-style corpus built from source code on this machine.

Follows the construction in Husain et al. 2019, "CodeSearchNet Challenge", §2.1: take functions
that have documentation, keep the documentation's first paragraph as the query, and drop functions
whose summary is under three tokens, whose code is under three lines, whose name or file says they
are tests, that are constructors or standard extension methods, or that duplicate one already kept.
Like CodeSearchNet's `dedup_split.py`, a whole file goes to one split; then valid and test lose the
examples that leak from the splits before them (`remove_leaks`).
Python comes from the running interpreter's standard library, JavaScript from pinned npm packages.
"""

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

from codecl.data.csn import SPLITS, format_split_counts
from codecl.data.docstrings import first_paragraph, summary_tokens
from codecl.data.functions import FoundFunction, javascript_functions, python_functions
from codecl.data.leaks import remove_leaks
from codecl.data.records import CodeRecord
from codecl.errors import UserError
from codecl.paths import cache_dir

# Bump when a change to extraction or filtering changes the corpus, so cached corpora are rebuilt.
MINER_VERSION = "2"
LANGUAGES = ("python", "javascript")
SUFFIXES = {"python": ".py", "javascript": ".js"}
FILTER_RULES = ("no_docstring", "short_docstring", "short_code", "test", "constructor_or_extension", "duplicate")
MIN_SUMMARY_TOKENS = 3
MIN_CODE_LINES = 3
TEST_DIRS = {"test", "tests", "testing", "__tests__", "spec", "specs", "idle_test"}
# CodeSearchNet drops constructors and extension methods: their names say nothing about their bodies.
JS_EXTENSION_METHODS = {"constructor", "toString", "valueOf", "toJSON", "inspect"}
# Never mined from any folder: installed third-party code and build caches.
ALWAYS_SKIPPED_DIRS = {"node_modules", "site-packages", "dist-packages", "__pycache__"}
STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "lib2to3", "ensurepip", "_bundled"}

class NpmPackage(NamedTuple):
    name: str
    version: str
    skip: tuple[str, ...] = ()  # path prefixes inside the package: bundles that repeat the sources


# MIT-licensed packages whose tarballs ship unbundled sources with JSDoc on most functions; pinned so
# every machine mines the same corpus (measured: 2,734 train, 209 valid, 234 test functions).
NPM_PACKAGES = (
    NpmPackage("lodash", "4.17.21", skip=("lodash.js", "core.js", "fp/")),  # modules repeat lodash.js
    NpmPackage("express", "4.21.2"),
    NpmPackage("mongoose", "8.9.5", skip=("dist/",)),  # dist/ is the browser bundle
    NpmPackage("eslint", "8.57.1"),
    NpmPackage("ws", "8.18.0"),
    NpmPackage("commander", "12.1.0"),
)


class SourceFile(NamedTuple):
    repo: str  # "cpython-stdlib", "lodash@4.17.21" or a local folder's name
    path: str  # relative to the repo, with "/" separators
    url_prefix: str  # "file:///abs/path" or "npm:name@version/path"; "#L10-L20" is appended
    content: bytes


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


def folder_files(root: Path, language: str, repo: str | None = None, skip_dirs=frozenset()) -> Iterator[SourceFile]:
    """Every source file of `language` under `root`, in sorted order."""
    if not root.is_dir():
        raise UserError(f"--{language}-dir {root} is not a folder; expected a folder of {SUFFIXES[language]} files")
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(
            name for name in subfolders
            if name not in skip_dirs and name not in ALWAYS_SKIPPED_DIRS and not name.startswith(".")
        )
        for name in sorted(files):
            if name.endswith(SUFFIXES[language]) and not name.endswith(".min.js"):
                path = Path(folder, name)
                yield SourceFile(repo or root.name, path.relative_to(root).as_posix(), path.resolve().as_uri(),
                                 path.read_bytes())


def stdlib_files() -> Iterator[SourceFile]:
    """The running interpreter's standard library, without tests, vendored wheels or third-party packages."""
    yield from folder_files(Path(sysconfig.get_paths()["stdlib"]), "python", "cpython-stdlib", STDLIB_SKIP_DIRS)


def npm_tarball(package: NpmPackage) -> Path:
    """The package's tarball from `npm pack`, downloaded once into the cache."""
    folder = cache_dir() / "npm"
    tarball = folder / f"{package.name.lstrip('@').replace('/', '-')}-{package.version}.tgz"
    if tarball.exists():
        return tarball
    hint = "point the miner at local JavaScript files with --javascript-dir DIR (with --no-npm to skip npm)"
    if shutil.which("npm") is None:
        raise UserError(f"npm is not installed (needed to fetch {package.name}@{package.version}); {hint}")
    folder.mkdir(parents=True, exist_ok=True)
    command = ["npm", "pack", f"{package.name}@{package.version}", "--pack-destination", str(folder), "--silent"]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as problem:
        details = (getattr(problem, "stderr", None) or str(problem)).strip().splitlines()
        raise UserError(f"`npm pack {package.name}@{package.version}` failed, the npm registry may be unreachable "
                        f"({details[-1] if details else 'no output'}); {hint}") from None
    if not tarball.exists():
        raise UserError(f"`npm pack` did not write {tarball}; {hint}")
    return tarball


def npm_files(package: NpmPackage) -> Iterator[SourceFile]:
    """The package's .js sources, read straight from its tarball, bundles and minified files left out."""
    repo = f"{package.name}@{package.version}"
    with tarfile.open(npm_tarball(package), "r:gz") as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)
        for member in members:
            path = member.name.split("/", 1)[-1]  # npm puts everything under "package/"
            if (not path.endswith(".js") or path.endswith(".min.js") or "node_modules/" in path
                    or path.startswith(package.skip)):
                continue
            yield SourceFile(repo, path, f"npm:{repo}/{path}", archive.extractfile(member).read())


def write_jsonl_gz(path: Path, records: list[CodeRecord]) -> None:
    """Write atomically (temp file, then rename) with a fixed gzip time so equal corpora are equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(temporary, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as compressed:
        for record in records:
            compressed.write((record.to_json() + "\n").encode("utf-8"))
    os.replace(temporary, path)


def mine_language(
    language: str, sources: list[tuple[str, Iterator[SourceFile]]], split_ratios: tuple[float, float, float],
) -> tuple[dict[str, list[CodeRecord]], dict[str, int], list[dict]]:
    """Records per split, drops per rule, and per-source counts for one language."""
    extract = python_functions if language == "python" else javascript_functions
    records = {split: [] for split in SPLITS}
    dropped, kept_code_hashes, source_counts = Counter({rule: 0 for rule in FILTER_RULES}), set(), []
    for source_name, files in sources:
        file_count = kept_count = 0
        for source_file in files:
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
                    code_tokens=list(function.code_tokens), docstring=function.docstring,
                    docstring_tokens=summary_tokens(first_paragraph(function.docstring)), sha=sha,
                    url=f"{source_file.url_prefix}#L{function.first_line}-L{function.last_line}", partition=partition,
                ))
        source_counts.append({"language": language, "source": source_name, "files": file_count, "kept": kept_count})
        print(f"mined {language} from {source_name}: {file_count} files, {kept_count} functions kept", file=sys.stderr)
    return records, dict(dropped), source_counts


def mine_corpus(
    out: Path, *, python_dirs: list[Path] | None = None, javascript_dirs: list[Path] | None = None,
    use_stdlib: bool = True, use_npm: bool = True, languages=LANGUAGES, split_ratios=(0.8, 0.1, 0.1),
) -> MineSummary:
    """Mine functions into `{out}/{language}/final/jsonl/{split}/{language}_{split}_0.jsonl.gz`.

    `{out}/MINED.json` records the sources, the counts per split, the drops per filter rule, the
    leaks removed per split and rule (`remove_leaks`) and the miner version. Default sources: the
    standard library (`use_stdlib`) and `NPM_PACKAGES` (`use_npm`).
    """
    started = time.perf_counter()
    split_ratios = tuple(float(ratio) for ratio in split_ratios)
    if len(split_ratios) != 3 or min(split_ratios) < 0 or abs(sum(split_ratios) - 1) > 1e-6:
        raise UserError(f"split ratios {split_ratios} must be three fractions (train, valid, test) summing to 1")
    unknown = [language for language in languages if language not in LANGUAGES]
    if unknown:
        raise UserError(f"the miner supports {', '.join(LANGUAGES)}, not {', '.join(map(repr, unknown))}")
    out = Path(out)
    counts, dropped, leak_removed, source_counts = {}, {}, {}, []
    for language in languages:
        local_dirs = [Path(folder) for folder in (python_dirs if language == "python" else javascript_dirs) or []]
        sources = [(f"{folder}", folder_files(folder, language)) for folder in local_dirs]
        if language == "python" and use_stdlib:
            sources.insert(0, ("cpython-stdlib", stdlib_files()))
        if language == "javascript" and use_npm:
            sources[:0] = [(f"{package.name}@{package.version}", npm_files(package)) for package in NPM_PACKAGES]
        if not sources:
            default_flag = "--no-stdlib" if language == "python" else "--no-npm"
            raise UserError(f"no {language} sources: give --{language}-dir DIR or drop {default_flag}")
        records, dropped[language], language_sources = mine_language(language, sources, split_ratios)
        records, leak_removed[language] = remove_leaks(records)
        source_counts += language_sources
        for split in SPLITS:
            split_file = out / language / "final" / "jsonl" / split / f"{language}_{split}_0.jsonl.gz"
            write_jsonl_gz(split_file, records[split])
        counts[language] = {split: len(records[split]) for split in SPLITS}
    summary = MineSummary(out, counts, dropped, leak_removed, source_counts, round(time.perf_counter() - started, 2))
    manifest = {
        "miner_version": MINER_VERSION, "python": sys.version.split()[0], "languages": list(languages),
        "split_ratios": list(split_ratios), "sources": source_counts, "counts": counts, "dropped": dropped,
        "leak_removed": leak_removed, "seconds": summary.seconds,
    }
    temporary = out / f"MINED.json.tmp{os.getpid()}"
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(temporary, out / "MINED.json")  # written last: its presence means the corpus is complete
    return summary


def ensure_mined_corpus(languages=LANGUAGES) -> Path:
    """`cache_dir()/csn-mined`, mined with the default sources unless a corpus of this miner version is there.

    The corpus must also come from this Python version: its Python part is the running interpreter's standard library.
    """
    out = cache_dir() / "csn-mined"
    wanted = set(languages)
    try:
        manifest = json.loads((out / "MINED.json").read_text())
    except (OSError, ValueError):
        manifest = {}  # absent or unreadable: mine again
    if manifest.get("miner_version") == MINER_VERSION and manifest.get("python") == sys.version.split()[0]:
        if wanted <= set(manifest.get("languages", [])):
            return out
        wanted |= set(manifest.get("languages", []))  # the manifest is rewritten, so keep what it listed
    mine_corpus(out, languages=tuple(language for language in LANGUAGES if language in wanted))
    return out
