"""The task stream: CodeSearchNet records turned into (source, target) pairs and tokenised once.

A task is one language in one format (`DataConfig.tasks()`). Its examples are a deterministic sample of
the usable records of each split, the same for every method and seed, so all rows of a comparison are
scored on identical inputs.
"""

from __future__ import annotations

import hashlib
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from codecl.config import DataConfig
from codecl.data.csn import SplitRead, load_hub_split, read_release_split
from codecl.data.docstrings import first_paragraph, strip_docstring
from codecl.data.miner import ensure_mined_corpus, train_checksums
from codecl.data.records import CodeRecord
from codecl.errors import UserError
from codecl.paths import cache_dir

SPLITS = ("train", "valid", "test")
TOKENIZED_VERSION = 1
# Formats whose target is natural language, not code: code metrics and syntax do not apply to them.
TEXT_TARGET_FORMATS = ("code-to-docstring",)


@dataclass(frozen=True)
class Example:
    source: str
    target: str
    source_ids: list[int]
    target_ids: list[int]


@dataclass(frozen=True)
class Task:
    index: int
    name: str
    language: str
    format: str
    splits: dict[str, list[Example]]

    @property
    def target_language(self) -> str | None:
        """The language of the target code, or None when the target is natural language (a docstring)."""
        return None if self.format in TEXT_TARGET_FORMATS else self.language


def data_root(config: DataConfig) -> Path | None:
    """The CodeSearchNet-layout folder the config reads from (None for the hub)."""
    if config.source == "mined":
        return ensure_mined_corpus(tuple(config.languages()))
    if config.source == "local":
        return config.path
    return None


def read_split(config: DataConfig, language: str, split: str) -> list[CodeRecord]:
    """All records of one split, malformed rows skipped and reported on one line."""
    root = data_root(config)
    read: SplitRead = (
        load_hub_split(language, split) if root is None else read_release_split(root, language, split)
    )
    where = f"{root or 'hub:code_search_net'} {language}/{split}"
    if read.malformed:
        print(f"{where}: skipped {read.malformed} malformed rows (first: {read.first_problem})", file=sys.stderr)
    return read.records


def make_pair(record: CodeRecord, config: DataConfig, task_format: str | None = None) -> tuple[str, str] | None:
    """The (source, target) text pair for one record in `task_format` (default `data.task_format`), or None.

    docstring-to-code: (docstring summary, code without docstring); code-to-docstring: the reverse;
    completion: (the first lines of the code, the rest)."""
    task_format = task_format or config.task_format
    code = strip_docstring(record.code, record.language).strip("\n")
    if task_format in ("docstring-to-code", "code-to-docstring"):
        summary = first_paragraph(record.docstring)
        if not (summary and code):
            return None
        return (summary, code) if task_format == "docstring-to-code" else (code, summary)
    lines = code.splitlines()
    cut = max(1, int(len(lines) * config.completion_prompt_fraction))
    if cut >= len(lines):
        return None
    return "\n".join(lines[:cut]), "\n".join(lines[cut:])


def sample_pairs(
    records: list[CodeRecord], config: DataConfig, language: str, split: str, limit: int, task_format: str | None = None
) -> list[tuple[str, str]]:
    """At most `limit` pairs of `records` in `task_format` (default `data.task_format`), in a fixed random order."""
    pairs = [pair for record in records if (pair := make_pair(record, config, task_format)) is not None]
    # A fixed shuffle seed: the sample depends on the data alone, never on the run's seed. Seeded by the
    # language, not the format, so two tasks of one language draw the same functions in each split.
    random.Random(f"{language}/{split}").shuffle(pairs)
    return pairs[:limit]


def with_input_prefix(pairs: list[tuple[str, str]], language: str, config: DataConfig) -> list[tuple[str, str]]:
    """`data.input_prefix: language` puts the language before each source, `python: <source>`."""
    if config.input_prefix == "none":
        return pairs
    return [(f"{language}: {source}", target) for source, target in pairs]


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def tokenize_pairs(pairs: list[tuple[str, str]], tokenizer, config: DataConfig) -> list[Example]:
    """Tokenise once; cached under `cache_dir()/tokenized/`, keyed by tokenizer, texts and length limits."""
    digest = hashlib.sha1()
    for part in (TOKENIZED_VERSION, tokenizer_fingerprint(tokenizer), config.max_source_tokens, config.max_target_tokens):
        digest.update(f"{part}\x00".encode())
    for source, target in pairs:
        digest.update(f"{source}\x00{target}\x00".encode())
    path = cache_dir() / "tokenized" / f"{digest.hexdigest()[:20]}.pt"
    if path.is_file():
        source_ids, target_ids = torch.load(path)
    else:
        sources, targets = zip(*pairs) if pairs else ((), ())
        source_ids = tokenizer(list(sources), truncation=True, max_length=config.max_source_tokens)["input_ids"]
        target_ids = tokenizer(list(targets), truncation=True, max_length=config.max_target_tokens)["input_ids"]
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save((source_ids, target_ids), partial)
        partial.replace(path)
    return [Example(s, t, si, ti) for (s, t), si, ti in zip(pairs, source_ids, target_ids)]


def build_stream(config: DataConfig, tokenizer, eval_split: str) -> list[Task]:
    """One task per entry of `config.stream`: train, valid and the evaluation split, tokenised."""
    limits = {"train": config.train_examples, "valid": config.valid_examples, "test": config.test_examples}
    tasks = []
    for index, (name, language, task_format) in enumerate(config.tasks()):
        splits = {}
        for split in dict.fromkeys(("train", "valid", eval_split)):
            records = read_split(config, language, split)
            pairs = sample_pairs(records, config, language, split, limits[split], task_format)
            if len(pairs) < config.min_examples:
                raise UserError(
                    f"data {data_root(config) or 'hub'} {language}/{split} (task {name}): {len(pairs)} usable "
                    f"examples, expected at least data.min_examples={config.min_examples}"
                )
            splits[split] = tokenize_pairs(with_input_prefix(pairs, language, config), tokenizer, config)
        tasks.append(Task(index, name, language, task_format, splits))
    return tasks


class PretrainingCorpus(NamedTuple):
    tokenizer_texts: list[str]  # every stream language's train split
    code_texts: list[str]  # pretraining languages' train `code` (span corruption): Python with docstrings, JS without JSDoc
    code_languages: list[str]  # the language of each of code_texts
    pairs: list[tuple[str, str]]  # their (docstring summary, code) pairs (bimodal dual generation)
    description: dict  # what was read, for the base model's record


def pretraining_corpus(config: DataConfig, languages: list[str]) -> PretrainingCorpus:
    """The train splits (never valid or test) for the tiny model: the tokenizer learns every stream
    language, the model is pretrained on ``languages`` only.

    The pairs are made as the docstring-to-code task makes them, so that the base learns the task's format.
    """
    records = {language: read_split(config, language, "train") for language in config.languages()}
    pairs = [pair for language in languages for record in records[language]
             if (pair := make_pair(record, config, "docstring-to-code")) is not None]
    return PretrainingCorpus(
        [record.code for language in config.languages() for record in records[language]],
        [record.code for language in languages for record in records[language]],
        [language for language in languages for _ in records[language]],
        pairs,
        {"source": config.source, "splits": ["train"], "pretraining_languages": list(languages),
         "tokenizer_languages": config.languages(), "functions": {k: len(v) for k, v in records.items()},
         "pairs": len(pairs)},
    )


def corpus_fingerprint(config: DataConfig) -> str:
    """Identifies the pretraining corpus by content: the source and the sha256 of each stream language's
    train files (`train_checksums`), so two machines with the same corpus share a cached base model."""
    root = data_root(config)
    parts = [config.source, *config.languages()]
    if root is not None:
        parts += train_checksums(root, config.languages())
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]
