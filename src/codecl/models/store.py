"""Where the tiny base lives: built once per config and corpus, cached under `cache_dir()/models/`.

`codecl_base.json` in the folder records how it was made.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from codecl.config import TinyModelConfig
from codecl.data.tasks import PretrainingCorpus
from codecl.models.tiny import TINY_VERSION, build_model, pretrain, train_tokenizer
from codecl.paths import cache_dir


def tiny_model_dir(config: TinyModelConfig, corpus_fingerprint: str) -> Path:
    key = hashlib.sha1(
        json.dumps([TINY_VERSION, config.model_dump(), corpus_fingerprint], sort_keys=True).encode()
    ).hexdigest()[:12]
    return cache_dir() / "models" / f"tiny-{key}"


def ensure_tiny_model(
    config: TinyModelConfig, corpus_fingerprint: str,
    load_corpus: Callable[[], PretrainingCorpus],
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Path:
    """Return the cached tiny model for this config and corpus, building and pretraining it if absent.

    `load_corpus` returns the train-split code to train the tokenizer on, the train-split examples to
    pretrain on, and a description of where they came from (`PretrainingCorpus`).
    """
    directory = tiny_model_dir(config, corpus_fingerprint)
    if (directory / "codecl_base.json").is_file():
        return directory
    corpus = load_corpus()
    log(f"building the tiny model: tokenizer on {len(corpus.tokenizer_texts):,} train-split functions, pretraining "
        f"on {len(corpus.code_texts):,} (cached at {directory})")
    started = time.perf_counter()
    tokenizer = train_tokenizer(corpus.tokenizer_texts, config.vocab_size)
    model = build_model(config, tokenizer)
    record = pretrain(model, tokenizer, corpus, config, log=log)
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    record.update(
        recipe=f"codecl tiny v{TINY_VERSION}",
        parameters=sum(p.numel() for p in model.parameters()),
        config=config.model_dump(),
        corpus=corpus.description,
        total_seconds=round(time.perf_counter() - started, 1),
    )
    (staging / "codecl_base.json").write_text(json.dumps(record, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    return directory
