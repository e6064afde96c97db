"""The task stream: CodeSearchNet records turned into (source, target) pairs and tokenised once.

A task is one language. Its examples are a deterministic sample of the usable records of each split,
the same for every method and seed, so all rows of a comparison are scored on identical inputs.
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
    splits: dict[str, list[Example]]


def data_root(config: DataConfig) -> Path | None:
    """The CodeSearchNet-layout folder the config reads from (None for the hub)."""
    if config.source == "mined":
        return ensure_mined_corpus(tuple(config.stream))
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


def make_pair(record: CodeRecord, config: DataConfig) -> tuple[str, str] | None:
    """The (source, target) text pair for one record in the configured task format, or None."""
    code = strip_docstring(record.code, record.language).strip("\n")
    if config.task_format == "docstring-to-code":
        source = first_paragraph(record.docstring)
        return (source, code) if source and code else None
    lines = code.splitlines()
    cut = max(1, int(len(lines) * config.completion_prompt_fraction))
    if cut >= len(lines):
        return None
    return "\n".join(lines[:cut]), "\n".join(lines[cut:])


def sample_pairs(records: list[CodeRecord], config: DataConfig, language: str, split: str, limit: int) -> list[tuple[str, str]]:
    pairs = [pair for record in records if (pair := make_pair(record, config)) is not None]
    # A fixed shuffle seed: the sample depends on the data alone, never on the run's seed.
    random.Random(f"{language}/{split}").shuffle(pairs)
    return pairs[:limit]


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
    """One task per language of `config.stream`: train, valid and the evaluation split, tokenised."""
    limits = {"train": config.train_examples, "valid": config.valid_examples, "test": config.test_examples}
    tasks = []
    for index, language in enumerate(config.stream):
        splits = {}
        for split in dict.fromkeys(("train", "valid", eval_split)):
            pairs = sample_pairs(read_split(config, language, split), config, language, split, limits[split])
            if len(pairs) < config.min_examples:
                raise UserError(
                    f"data {data_root(config) or 'hub'} {language}/{split}: {len(pairs)} usable examples, "
                    f"expected at least data.min_examples={config.min_examples}"
                )
            splits[split] = tokenize_pairs(pairs, tokenizer, config)
        tasks.append(Task(index, language, language, splits))
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
    records = {language: read_split(config, language, "train") for language in config.stream}
    as_docstring_task = config.model_copy(update={"task_format": "docstring-to-code"})
    pairs = [pair for language in languages for record in records[language]
             if (pair := make_pair(record, as_docstring_task)) is not None]
    return PretrainingCorpus(
        [record.code for language in config.stream for record in records[language]],
        [record.code for language in languages for record in records[language]],
        [language for language in languages for _ in records[language]],
        pairs,
        {"source": config.source, "splits": ["train"], "pretraining_languages": list(languages),
         "tokenizer_languages": list(config.stream), "functions": {k: len(v) for k, v in records.items()},
         "pairs": len(pairs)},
    )


def corpus_fingerprint(config: DataConfig) -> str:
    """Identifies the pretraining corpus by content: the source and the sha256 of each stream language's
    train files (`train_checksums`), so two machines with the same corpus share a cached base model."""
    root = data_root(config)
    parts = [config.source, *config.stream]
    if root is not None:
        parts += train_checksums(root, config.stream)
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]
