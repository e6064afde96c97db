"""The experiment config: YAML, validated by typed models, with dotted `key=value` overrides.

Every option is a typed field with a default and a one-line description; an unknown key, a wrong type
or an unknown method is a one-line `UserError` that names it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import yaml
from pydantic import (
    BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, ValidationInfo, field_validator, model_validator,
)

from codecl.data.miner import LANGUAGES as MINED_LANGUAGES
from codecl.errors import UserError
from codecl.methods import METHODS, MethodConfig

# CodeSearchNet's six languages (Husain et al. 2019); the mined corpus has only MINED_LANGUAGES.
Language = Literal["python", "javascript", "go", "java", "php", "ruby"]
LANGUAGES = get_args(Language)
TaskFormat = Literal["docstring-to-code", "completion", "code-to-docstring"]
# A task's name names files (predictions/<after>/<name>.jsonl) and is given to `codecl export --task`.
TASK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class TaskSpec(NamedTuple):
    """One task of the stream, resolved: its name, the language its functions come from, and its format."""

    name: str
    language: str
    format: str


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamTask(Section):
    """A stream entry written as a mapping: a task with a format, or a name, of its own."""

    language: Language = Field(..., description="the CodeSearchNet language the task's functions come from")
    format: TaskFormat | None = Field(None, description="the task's format; null: data.task_format")
    name: str | None = Field(
        None, pattern=TASK_NAME_PATTERN,
        description="the task's name; null: the language, or `<language>-<format>` when the format is not "
        "data.task_format",
    )


class DataConfig(Section):
    source: Literal["mined", "local", "hub"] = Field(
        "mined",
        description="mined: corpus codecl mines from local code; local: a CodeSearchNet-layout folder; "
        "hub: the Hugging Face hub's code_search_net",
    )
    path: Path | None = Field(None, description="the folder for source=local")
    # Before `stream`: the stream's validation reads it to name the tasks.
    task_format: TaskFormat = Field(
        "docstring-to-code",
        description="the format of every stream entry that names none: docstring-to-code: first docstring "
        "paragraph -> code; completion: first part of a function -> the rest; code-to-docstring: code without "
        "its docstring -> the docstring's first paragraph",
    )
    stream: list[Language | StreamTask] = Field(
        ["python", "javascript"], min_length=1,
        description="the tasks, in order: a language (in data.task_format), or a mapping {language, format, name}",
    )
    input_prefix: Literal["none", "language"] = Field(
        "none",
        description="language: every input starts with its task's language, `python: <input>`, T5's `task: ` "
        "prefix form, as CodeTask-CL and O-LoRA tell a shared model which task an input is for; none: no prefix",
    )
    completion_prompt_fraction: float = Field(
        0.5, gt=0, lt=1, description="for completion: the fraction of a function's lines given as prompt"
    )
    train_examples: int = Field(15000, ge=1, description="training examples per task (at most)")
    valid_examples: int = Field(5000, ge=1, description="validation examples per task (at most)")
    test_examples: int = Field(1000, ge=1, description="test examples per task (at most)")
    min_examples: int = Field(
        10, ge=1, description="a split with fewer usable examples than this fails the run"
    )
    max_source_tokens: int = Field(64, ge=8, description="inputs are cut to this many tokens")
    max_target_tokens: int = Field(256, ge=8, description="targets are cut to this many tokens")

    @model_validator(mode="after")
    def _path_for_local(self) -> DataConfig:
        if self.source == "local" and self.path is None:
            raise ValueError("data.path is required when data.source is 'local'")
        return self

    @field_validator("stream", mode="before")
    @classmethod
    def _stream_entries(cls, value: Any) -> Any:
        # Checked here, entry by entry, so a mistake is one line naming the entry rather than a union's errors.
        if not isinstance(value, list):
            return value  # pydantic's own "Input should be a valid list"
        return [_stream_entry(entry, index) for index, entry in enumerate(value)]

    @field_validator("stream")
    @classmethod
    def _stream_tasks(cls, stream: list, info: ValidationInfo) -> list:
        if "task_format" not in info.data or "source" not in info.data:
            return stream  # their own error is the one reported
        tasks = resolve_tasks(stream, info.data["task_format"])
        names = [task.name for task in tasks]
        twice = next((name for name in names if names.count(name) > 1), None)
        if twice:
            raise ValueError(f"two tasks are named {twice!r} ({', '.join(names)}); give one a `name:`")
        unmined = next((task.language for task in tasks if task.language not in MINED_LANGUAGES), None)
        if info.data["source"] == "mined" and unmined:
            raise ValueError(
                f"{unmined} is not in the mined corpus, which has only {' and '.join(MINED_LANGUAGES)}; "
                f"use data.source: local or hub for {unmined}"
            )
        return stream

    def tasks(self) -> list[TaskSpec]:
        """The stream's tasks in order, each with its name, language and format."""
        return resolve_tasks(self.stream, self.task_format)

    def languages(self) -> list[str]:
        """The distinct languages of the stream, in the order they first appear."""
        return list(dict.fromkeys(task.language for task in self.tasks()))


def _stream_entry(entry: Any, index: int) -> str | StreamTask:
    """One `data.stream` entry checked: a known language, or a mapping that is a valid `StreamTask`."""
    if isinstance(entry, StreamTask):
        return entry
    if isinstance(entry, str):
        if entry not in LANGUAGES:
            raise ValueError(f"entry {index}: unknown language {entry!r} (expected one of {', '.join(LANGUAGES)})")
        return entry
    if not isinstance(entry, dict):
        raise ValueError(f"entry {index}: expected a language or a mapping {{language, format, name}}")
    try:
        return StreamTask(**entry)
    except ValidationError as error:
        raise ValueError(f"entry {index}: {_first_problem(error)}") from None


def resolve_tasks(stream: list[str | StreamTask], task_format: str) -> list[TaskSpec]:
    """Each entry's (name, language, format): a task in `task_format` is named by its language, one in
    another format `<language>-<format>` (e.g. `python-code-to-docstring`), unless the entry names it."""
    tasks = []
    for entry in stream:
        if isinstance(entry, str):
            entry = StreamTask(language=entry)
        form = entry.format or task_format
        name = entry.name or (entry.language if form == task_format else f"{entry.language}-{form}")
        tasks.append(TaskSpec(name, entry.language, form))
    return tasks


class PretrainObjectives(Section):
    """Each objective's share of the pretraining batches (weights, normalised over those above 0; each batch is
    drawn from one objective)."""

    span_corruption: float = Field(1.0, ge=0, description="T5's span corruption of code with its docstring")
    identifier_masking: float = Field(
        0.0, ge=0, description="CodeT5's masked identifier prediction: every name masked, the names predicted"
    )
    docstring_to_code: float = Field(1.0, ge=0, description="CodeT5's dual generation: docstring summary -> code")
    code_to_docstring: float = Field(1.0, ge=0, description="CodeT5's dual generation: code -> docstring summary")

    @model_validator(mode="after")
    def _some_objective(self) -> PretrainObjectives:
        if not any(weight > 0 for weight in self.model_dump().values()):
            raise ValueError("at least one pretraining objective needs a weight above 0")
        return self


class TinyModelConfig(Section):
    vocab_size: int = Field(4096, ge=300, description="byte-level BPE vocabulary, sentinels included")
    d_model: int = Field(128, ge=8, description="hidden size")
    d_ff: int = Field(512, ge=8, description="feed-forward width")
    num_heads: int = Field(4, ge=1, description="attention heads")
    num_layers: int = Field(2, ge=1, description="encoder layers (the decoder has as many)")
    pretrain_steps: int = Field(1200, ge=1, description="pretraining steps")
    pretrain_batch_size: int = Field(32, ge=1, description="sequences per pretraining step")
    pretrain_sequence_tokens: int = Field(128, ge=16, description="tokens per pretraining sequence")
    pretrain_summary_tokens: int = Field(
        48, ge=8, description="docstring summaries are cut to this many tokens in pretraining, as inputs are in the "
        "default task (data.max_source_tokens): longer ones would pad whole batches for a few rare summaries",
    )
    pretrain_learning_rate: float = Field(3e-3, gt=0, description="peak pretraining learning rate")
    pretrain_languages: list[Language] | None = Field(
        None, min_length=1,
        description="stream languages whose train split the model is pretrained on; null: the stream's first "
        "language only, so every later task's language is new to it (the tokenizer sees every stream language)",
    )
    objectives: PretrainObjectives = Field(default_factory=PretrainObjectives, description="the pretraining mixture")
    noise_density: float = Field(0.15, gt=0, lt=1, description="fraction of tokens corrupted (T5)")
    mean_span_length: float = Field(3.0, ge=1, description="mean corrupted span length (T5)")


class ModelConfig(Section):
    name: str = Field("tiny", description="'tiny' (built and pretrained by codecl), a hub id or a local folder")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="mixed precision for training and decoding; base weights keep their dtype"
    )
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="the tiny preset")


class TrainConfig(Section):
    epochs: float = Field(1.0, gt=0, description="passes over each task's training examples")
    batch_size: int = Field(16, ge=1, description="examples per optimiser step")
    learning_rate: float = Field(1e-4, gt=0, description="peak AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_fraction: float = Field(0.06, ge=0, lt=1, description="fraction of steps of linear warmup")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    max_bad_steps: int = Field(
        10, ge=1, description="consecutive steps that update nothing (non-finite loss or gradient, fp16 scaler "
        "overflow) after which a method fails"
    )
    log_every: int = Field(50, ge=1, description="steps between training log lines")
    checkpoint_every: int = Field(
        0, ge=0, description="steps between mid-task checkpoints that `--resume` goes on from (0: only at the "
        "end of every task); each holds the trained parameters and the optimiser's state",
    )


class EvalConfig(Section):
    split: Literal["valid", "test"] = Field("test", description="the split every task is scored on")
    batch_size: int = Field(64, ge=1, description="sequences decoded together")
    num_beams: int = Field(1, ge=1, description="1 is greedy decoding")
    max_new_tokens: int = Field(128, ge=1, description="the most tokens generated per example")
    max_new_tokens_per_language: dict[Language, int] = Field(
        {}, description="overrides max_new_tokens for a language"
    )
    humaneval: list[Literal["python", "javascript"]] = Field(
        [], description="HumanEval languages scored after every task as eval-only tasks (pass@1, greedy)"
    )
    humaneval_signature: bool = Field(False, description="give the model the function signature with the docstring")
    humaneval_timeout_s: float = Field(10.0, gt=0, description="wall-clock limit per HumanEval program")
    humaneval_limit: int | None = Field(None, ge=1, description="score only the first N problems (tests); null: all")
    routers: list[Literal["prototype", "loss"]] = Field(
        ["prototype", "loss"], description="routers that score each method with per-task parameters task-agnostic "
        "(prototype: nearest task mean of base-encoder features; loss: lowest NLL of each task's own output); [] for none",
    )
    router_examples: int = Field(
        1000, ge=1, description="training inputs per task (a fixed-seed sample) that estimate the prototype router"
    )

    def new_tokens(self, language: str) -> int:
        return self.max_new_tokens_per_language.get(language, self.max_new_tokens)


class RunConfig(Section):
    """How the grid of jobs runs. Only `threads` changes a result (in its last bits, on the CPU); a resumed run
    may change the rest."""

    executor: Literal["inline", "local", "ray"] = Field(
        "local", description="inline: one process, one job after another; local: worker processes on this "
        "machine; ray: Ray tasks on a Ray cluster (`pip install codecl[ray]`)",
    )
    workers: int | None = Field(
        None, ge=1, description="local: worker processes (null: one per GPU, else the CPU cores over `threads`)",
    )
    threads: int = Field(
        1, ge=1, description="torch threads of every job, whatever the executor. On the CPU the last bits of a "
        "result depend on it (BLAS splits its sums by thread), so a resumed run keeps it",
    )
    address: str | None = Field(
        None, description="ray: the cluster to join, as for ray.init (null: start a local one)",
    )
    num_cpus: float = Field(1.0, gt=0, description="ray: CPUs each job asks for (set it to `threads`)")
    num_gpus: float = Field(0.0, ge=0, description="ray: GPUs per job (0: the job runs on the CPU)")


class ExperimentConfig(Section):
    name: str = Field("experiment", description="names the run folder")
    seeds: list[int] = Field([0], min_length=1, description="every method runs once per seed")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    # SerializeAsAny: dump each method's own fields, not just the base class's.
    methods: dict[str, SerializeAsAny[MethodConfig]] = Field(..., min_length=1, description="name -> method config")
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    run: RunConfig = Field(default_factory=RunConfig, description="how the jobs run (executor, workers)")
    tracking: list[Literal["tensorboard", "mlflow"]] = Field(
        [], description="experiment trackers each job logs to, in the run's tracking/ folder (optional extras: "
        "`pip install 'codecl[tensorboard]'` or `'codecl[mlflow]'`)",
    )
    orders: list[list[str]] | None = Field(
        None, min_length=1, description="task orders to run, each a permutation of the stream's task names; "
        "every method and seed runs once per order (null: the stream's own order)",
    )

    @model_validator(mode="after")
    def _orders_are_permutations(self) -> ExperimentConfig:
        names = self._task_names()
        for order in self.orders or []:
            if sorted(order) != sorted(names):
                raise ValueError(f"orders: {order} is not an order of the stream's tasks {names}")
        if self.orders and len({tuple(order) for order in self.orders}) < len(self.orders):
            raise ValueError("orders: an order is listed twice")
        return self

    def _task_names(self) -> list[str]:
        return [task.name for task in self.data.tasks()]

    def stream_orders(self) -> list[list[int]]:
        """Each order as stream indices; the stream's own order when `orders` is not set."""
        names = self._task_names()
        return [[names.index(name) for name in order] for order in (self.orders or [names])]

    @model_validator(mode="after")
    def _pretraining_languages_in_stream(self) -> ExperimentConfig:
        languages = self.model.tiny.pretrain_languages or []
        stream_languages = self.data.languages()
        outside = [language for language in languages if language not in stream_languages]
        if outside:
            raise ValueError(f"model.tiny.pretrain_languages: {outside[0]} is not in data.stream {stream_languages}")
        if len(set(languages)) < len(languages):
            raise ValueError(f"model.tiny.pretrain_languages: {languages} names a language twice")
        return self

    def pretraining_languages(self) -> list[str]:
        """The languages the tiny base is pretrained on: `model.tiny.pretrain_languages`, else the stream's first."""
        return list(self.model.tiny.pretrain_languages or self.data.languages()[:1])

    @field_validator("methods", mode="before")
    @classmethod
    def _methods_by_registry(cls, value: Any) -> dict[str, MethodConfig]:
        if not isinstance(value, dict):
            raise ValueError("expected a mapping of name -> method config")
        methods = {}
        for name, options in value.items():
            options = dict(options or {})
            method = options.setdefault("method", name)
            if method not in METHODS:
                known = ", ".join(sorted(METHODS))
                raise ValueError(f"{name}: unknown method {method!r} (known: {known})")
            try:
                methods[name] = METHODS[method].config_class(**options)
            except ValidationError as error:
                raise ValueError(f"{name}.{_first_problem(error)}") from None
        return methods


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem["loc"])
    if problem["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    message = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "value_error" and where == "methods":
        return f"methods.{message}"
    return f"{where}: {message}" if where else message


def apply_override(tree: dict, assignment: str) -> None:
    """Apply one `dotted.key=value` to a config tree; the value is read as YAML (`3`, `true`, `[1,2]`)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise UserError(f"override {assignment!r}: expected dotted.key=value")
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"override {assignment!r}: {part} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        node[parts[-1]] = raw


def load_config(path: Path, overrides: list[str] = ()) -> ExperimentConfig:
    """Read, override and validate a config file; every problem is one `UserError` line."""
    if not path.is_file():
        raise UserError(f"config {path}: no such file")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"config {path}:{where} invalid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(tree, dict):
        raise UserError(f"config {path}: expected a mapping at the top level")
    return validated(tree, overrides, path)


def validated(tree: dict, overrides: list[str], path: Path) -> ExperimentConfig:
    """`tree` with `overrides` applied, as a config; a problem is one `UserError` naming `path` and the key."""
    for assignment in overrides:
        apply_override(tree, assignment)
    try:
        return ExperimentConfig(**tree)
    except ValidationError as error:
        raise UserError(f"config {path}: {_first_problem(error)}") from None


class _Absent:
    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()  # a key one config has and the other has not

# Keys that say how a run goes, not what it computes: a resumed run may change them.
RESUMABLE_KEYS = ("run.executor", "run.workers", "run.address", "run.num_cpus", "run.num_gpus", "train.checkpoint_every",
                  "tracking")


def first_difference(ours: Any, theirs: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key (in `ours`'s order) where two config dumps differ, with both values; keys
    under `RESUMABLE_KEYS` do not count. None when they agree."""
    if where in RESUMABLE_KEYS:
        return None
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in [*ours, *(k for k in theirs if k not in ours)]:
            found = first_difference(ours.get(key, ABSENT), theirs.get(key, ABSENT), f"{where}.{key}".lstrip("."))
            if found:
                return found
        return None
    return None if ours == theirs else (where, ours, theirs)


def load_run_config(run_dir: Path, overrides: list[str] = ()) -> ExperimentConfig:
    """A run folder's own config (`config.json`, which `codecl run` writes first), with `overrides` applied:
    what `--resume RUN_DIR` runs when no config file is given."""
    path = run_dir / "config.json"
    try:
        tree = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"--resume {run_dir}: no readable config.json in it (expected a folder written by `codecl run`)") from None
    return validated(tree, overrides, path)
