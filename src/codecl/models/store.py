"""Where the tiny base lives: shipped with codecl, or built once per config and corpus into the cache.

A base is an ordinary Hugging Face folder named `tiny-<key>`, where the key hashes the recipe version,
the tiny config and the corpus fingerprint. `codecl_base.json` in it records how it was made and the
sha256 of every other file in it, checked each time the base is used:

- `shipped_models_dir()/tiny-<key>/` is carried by the repository (`codecl pretrain CONFIG --ship`
  writes it). It is used in place, never copied: it is verified on every load anyway, and one copy
  cannot drift from another. A shipped file that fails its checksum is refused, never rebuilt over.
- `cache_dir()/models/tiny-<key>/` is built here when nothing shipped matches. The cache is ours: a
  folder that fails its checksum is deleted and built again.

A folder is staged as `tiny-<key>.partial<pid>` and renamed when complete; such leftovers, and the
`tiny-<key>.snapshots` folders, are never taken for a base.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from codecl.config import ExperimentConfig, TinyModelConfig
from codecl.data.tasks import PretrainingCorpus, corpus_fingerprint, pretraining_corpus
from codecl.errors import UserError
from codecl.results import file_digest
from codecl.models.tiny import TINY_VERSION, build_model, pretrain, train_tokenizer
from codecl.paths import cache_dir

RECORD = "codecl_base.json"
WEIGHTS = "model.safetensors"

Log = Callable[[str], None]


def log_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class TinyModelRequest(NamedTuple):
    """What identifies a tiny base and how to read its corpus, as `ensure_tiny_model` takes them."""
    config: TinyModelConfig
    corpus_fingerprint: str
    load_corpus: Callable[[], PretrainingCorpus]


def tiny_model_request(config: ExperimentConfig) -> TinyModelRequest:
    """The tiny base an experiment uses: `codecl run` and `codecl pretrain` both ask through here."""
    languages = config.pretraining_languages()
    return TinyModelRequest(
        # Keyed by the languages themselves: the default (null) means a different set for another stream.
        config.model.tiny.model_copy(update={"pretrain_languages": languages}), corpus_fingerprint(config.data),
        lambda: pretraining_corpus(config.data, languages),
    )


def base_folders(root: Path) -> list[Path]:
    """The bases in `root`: folders named `tiny-<key>`, never a staging `.partial<pid>` or `.snapshots` one."""
    return sorted(folder for folder in root.glob("tiny-*") if folder.is_dir() and "." not in folder.name)


def tiny_model_key(config: TinyModelConfig, corpus_fingerprint: str) -> str:
    return hashlib.sha1(
        json.dumps([TINY_VERSION, config.model_dump(), corpus_fingerprint], sort_keys=True).encode()
    ).hexdigest()[:12]


def tiny_model_dir(config: TinyModelConfig, corpus_fingerprint: str) -> Path:
    """The cache folder of this base (built here)."""
    return cache_dir() / "models" / f"tiny-{tiny_model_key(config, corpus_fingerprint)}"


def shipped_models_dir() -> Path:
    """`$CODECL_SHIPPED_MODELS` (the tests point it elsewhere), else the `shipped/` folder beside this file."""
    return Path(os.environ.get("CODECL_SHIPPED_MODELS") or Path(__file__).resolve().parent / "shipped")


def sha256_of(path: Path) -> str:
    return file_digest(path)


def read_record(folder: Path) -> dict | None:
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def checksum_problem(folder: Path) -> str | None:
    """None when the folder holds exactly the files `codecl_base.json` lists, each with its recorded sha256,
    and the record's key is the folder's (`tiny-<key>`); else the first problem, one line.

    A file the record does not list is a problem too: Hugging Face loads whatever it finds
    (`added_tokens.json`, `special_tokens_map.json`, ...), so an unlisted file could change the base unchecked."""
    record = read_record(folder)
    files = record.get("files") if record else None
    if not isinstance(files, dict) or WEIGHTS not in files:
        return f"{folder / RECORD}: missing or unreadable, or records no checksums (expected a 'files' mapping with {WEIGHTS})"
    folder_key = folder.name.removeprefix("tiny-")
    if "key" in record and record["key"] != folder_key:
        return f"{folder / RECORD}: records key {record['key']!r}, but the folder is that of key {folder_key!r}"
    unlisted = sorted({path.name for path in folder.iterdir()} - set(files) - {RECORD})
    if unlisted:
        return f"{folder}: holds {', '.join(unlisted)}, which {RECORD} does not list"
    for name, expected in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            return f"{path}: missing (expected sha256 {str(expected)[:12]}…)"
        actual = sha256_of(path)
        if actual != expected:
            return f"{path}: sha256 {actual[:12]}…, expected {str(expected)[:12]}… as {RECORD} records"
    return None


def pretraining_estimate(config: TinyModelConfig) -> str:
    """How long building takes, from a shipped base of the same tiny config (its corpus differs), if any."""
    for folder in base_folders(shipped_models_dir()):
        record = read_record(folder) or {}
        if record.get("config") == config.model_dump() and isinstance(record.get("total_seconds"), (int, float)):
            return f"about {record['total_seconds'] / 60:.0f} minutes on the machine that made the shipped one"
    return "minutes to hours on a CPU, depending on the config"


def ensure_tiny_model(
    config: TinyModelConfig, corpus_fingerprint: str,
    load_corpus: Callable[[], PretrainingCorpus], log: Log = log_to_stderr,
) -> Path:
    """The tiny base for this config and corpus: the shipped one if it matches, else the cached one, built
    and pretrained if absent or corrupt.

    `load_corpus` returns the train-split code to train the tokenizer on, the train-split examples to
    pretrain on, and a description of where they came from (`PretrainingCorpus`).
    """
    key = tiny_model_key(config, corpus_fingerprint)
    shipped = shipped_models_dir() / f"tiny-{key}"
    if shipped.is_dir():
        problem = checksum_problem(shipped)
        if problem:
            raise UserError(f"shipped tiny base {problem}; restore it with `git checkout -- {shipped}` or "
                            "rebuild it with `codecl pretrain CONFIG --ship`")
        return shipped
    directory = tiny_model_dir(config, corpus_fingerprint)
    if directory.is_dir():
        problem = checksum_problem(directory)
        if problem is None:
            return directory
        log(f"cached tiny base {problem}; deleting it and building it again")
        shutil.rmtree(directory)
    else:
        log(f"no shipped tiny base for this config and corpus (key {key}, corpus {corpus_fingerprint}); "
            f"building it here: pretraining takes {pretraining_estimate(config)}")
    return build_tiny_model(config, corpus_fingerprint, load_corpus(), directory, log)


def build_tiny_model(
    config: TinyModelConfig, corpus_fingerprint: str, corpus: PretrainingCorpus, directory: Path, log: Log,
    snapshot_every: int = 0,
) -> Path:
    """Train the tokenizer, pretrain the model and write them with their record into `directory`, replacing
    it in one rename so that an interrupted build never leaves a folder that looks finished.

    `snapshot_every` > 0 also saves the model every that many steps into `{directory}.snapshots/step-N/`,
    to measure score against pretraining time from one run; saving draws no random number, so the final
    weights are the same with or without snapshots."""
    log(f"building the tiny model: tokenizer on {len(corpus.tokenizer_texts):,} train-split functions, pretraining "
        f"on {len(corpus.code_texts):,} (into {directory})")
    started = time.perf_counter()
    tokenizer = train_tokenizer(corpus.tokenizer_texts, config.vocab_size)
    # The initial weights come from torch's global generator: seeded here, they no longer depend on
    # whatever drew from it earlier in the process, so a rebuild can reproduce a shipped base bit for bit.
    torch.manual_seed(0)
    model = build_model(config, tokenizer)
    snapshots = directory.with_name(directory.name + ".snapshots")

    def snapshot(steps_done: int, seconds: float) -> None:
        if snapshot_every and steps_done % snapshot_every == 0 and steps_done < config.pretrain_steps:
            folder = snapshots / f"step-{steps_done}"
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            (folder / "snapshot.json").write_text(json.dumps({"of": directory.name, "step": steps_done,
                                                              "pretraining_seconds": round(seconds, 1)}))
            log(f"snapshot after {steps_done} steps ({seconds / 60:.1f} min) in {folder}")

    record = pretrain(model, tokenizer, corpus, config, log=log, after_step=snapshot)
    # Per process: two builds of the same key would otherwise delete each other's staging folder.
    staging = directory.with_name(f"{directory.name}.partial{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)  # transformers 5 writes safetensors only
    tokenizer.save_pretrained(staging)
    if not (staging / WEIGHTS).is_file():
        raise RuntimeError(f"{staging}: save_pretrained wrote no {WEIGHTS}: {sorted(p.name for p in staging.iterdir())}")
    files = {path.name: sha256_of(path) for path in sorted(staging.iterdir()) if path.is_file()}
    record.update(
        recipe=f"codecl tiny v{TINY_VERSION}",
        key=tiny_model_key(config, corpus_fingerprint),
        parameters=sum(p.numel() for p in model.parameters()),
        config=config.model_dump(),
        corpus=corpus.description,
        corpus_fingerprint=corpus_fingerprint,
        total_seconds=round(time.perf_counter() - started, 1),
        # Float sums are ordered by the thread count, so a build is reproduced bit for bit only with as many.
        torch_threads=torch.get_num_threads(), torch_version=torch.__version__,
        weights_sha256=files[WEIGHTS],
        files=files,
    )
    (staging / RECORD).write_text(json.dumps(record, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    return directory


def tiny_model_identity(directory: Path) -> dict:
    """Where a base came from, its weights' sha256 and its corpus fingerprint: for results.json's base_model."""
    record = read_record(directory) or {}
    return {
        "origin": "shipped" if directory.parent == shipped_models_dir() else "built here",
        "weights_sha256": record.get("weights_sha256"),
        "corpus_fingerprint": record.get("corpus_fingerprint"),
    }


def superseded(old: dict, new: dict) -> bool:
    """An old shipped base that no codecl can ask for once `new` ships: another recipe version (the key
    holds it, and this codecl builds only its own).

    A base of the same recipe over another corpus is not superseded: the corpus depends on the machine
    (another Python's standard library, another npm pin), so machines that still build that corpus still
    ask for it."""
    return old.get("recipe") != new["recipe"]


def same_config_other_corpus(old: dict, new: dict) -> bool:
    """The same recipe, tiny config, data source and languages as `new`, over another corpus."""
    same_data = ("source", "pretraining_languages", "tokenizer_languages")
    return old.get("config") == new["config"] and all(
        (old.get("corpus") or {}).get(name) == new["corpus"].get(name) for name in same_data
    )


def ship_tiny_model(directory: Path, log: Log) -> Path:
    """Copy a built base into `shipped_models_dir()`, replacing the shipped base of the same key and removing
    those of another recipe version (`superseded`). Shipped bases of other tiny configs, data or corpora
    stay; one log line per base of this config over another corpus says how to remove it by hand."""
    shipped_root = shipped_models_dir()
    target = shipped_root / directory.name
    staging = target.with_name(f"{target.name}.partial{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(directory, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    record = read_record(target)
    for other in base_folders(shipped_root):
        old = read_record(other) if other != target else None
        if old is None:
            continue
        if superseded(old, record):
            shutil.rmtree(other)
            log(f"removed {other}: superseded by {target.name} ({old.get('recipe')}, corpus {old.get('corpus_fingerprint')})")
        elif same_config_other_corpus(old, record):
            log(f"kept {other}: the same config over another corpus ({old.get('corpus_fingerprint')}), which other "
                f"machines may still build; if none does, remove it with `git rm -r {other}`")
    return target


def comparison_with_shipped(built: dict, shipped: dict | None, ship: bool) -> list[str]:
    """Rebuilding what is shipped is the reproducibility check: one line saying whether the weights came
    out identical to the shipped base of the same key (none when nothing of that key is shipped)."""
    if shipped is None:
        return []
    return [
        f"the shipped base of this key had weights sha256 {str(shipped.get('weights_sha256'))[:16]}…: "
        + ("identical" if shipped.get("weights_sha256") == built["weights_sha256"] else "different")
        + ("" if ship else "; `codecl run` keeps using the shipped one (--ship replaces it)")
    ]


def pretrain_tiny_base(
    config: ExperimentConfig, config_path: Path, ship: bool, snapshot_every: int = 0, log: Log = log_to_stderr,
) -> str:
    """`codecl pretrain`: build the tiny base exactly as `codecl run` would ask for it (same key, same
    corpus), always anew, and optionally ship it; returns what was written, with its checksums."""
    if config.model.name != "tiny":
        raise UserError(f"config {config_path}: model.name is {config.model.name!r}; `codecl pretrain` builds "
                        "only the tiny preset (expected model.name: tiny)")
    request = tiny_model_request(config)
    directory = tiny_model_dir(request.config, request.corpus_fingerprint)
    build_tiny_model(request.config, request.corpus_fingerprint, request.load_corpus(), directory, log, snapshot_every)
    record = read_record(directory)
    comparison = comparison_with_shipped(record, read_record(shipped_models_dir() / directory.name), ship)
    written = ship_tiny_model(directory, log) if ship else directory
    lines = [
        f"wrote {written}" + (f" (built in {directory})" if ship else ""),
        f"{record['recipe']}, {record['parameters']:,} parameters, corpus {record['corpus_fingerprint']}, "
        f"built in {record['total_seconds'] / 60:.1f} min",
        *(f"  sha256 {digest}  {name}" for name, digest in record["files"].items()),
        *comparison,
    ]
    return "\n".join(lines)
