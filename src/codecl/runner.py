"""The experiment: for every seed and method, `for task in stream: train, then evaluate every task`.

Row 0 of every accuracy matrix is the base model before any training, evaluated once and shared by all
methods and seeds (decoding is deterministic and every method starts function-preserving). Row i is
every task's score after training task i. A task for which a method trains nothing leaves the model
unchanged, so its row repeats the previous one instead of decoding it all again.

A method with per-task parameters is scored twice: task-aware, where the oracle selects the scored task's
parameters (`use_task`), and task-agnostic, where a router (`evaluate/router.py`) picks a trained task for
each input from the input alone. Both have the same rows and columns.
"""

from __future__ import annotations

import copy
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import save_file

from codecl import __version__
from codecl.config import EvalConfig, ExperimentConfig, TrainConfig
from codecl.data.miner import corpus_manifest
from codecl.data.tasks import Task, build_stream, data_root
from codecl.errors import UserError
from codecl.evaluate.code_metrics import CODE_BLEU_VARIANT, SMOOTHED_BLEU_VARIANT
from codecl.evaluate.decode import (
    DEGENERATION, METRICS, NATURAL_LANGUAGE_TARGET, Evaluation, Generation, evaluate_task, generations, score,
)
from codecl.evaluate.degeneration import DISTINCT_DEFINITION, LOOP_DEFINITION, distinct_share, loop_share
from codecl.evaluate.functional import FunctionalEvaluation, build_humaneval_tasks, pass_at_1
from codecl.evaluate.router import (
    Prototypes, build_prototypes, confusion_counts, encoder_features, output_nll, route_by_loss, router_accuracy,
    sample_inputs,
)
from codecl.evaluate.sandbox import sandbox_isolation
from codecl.evaluate.text import bleu_statistics, corpus_bleu_from_statistics
from codecl.methods import METHODS
from codecl.methods.base import ContinualMethod, TaskData
from codecl.memory import PeakMemory
from codecl.metrics import eval_only_summary
from codecl.models.load import BaseModel, load_pretrained
from codecl.models.store import ensure_tiny_model, log_to_stderr, tiny_model_identity, tiny_model_request
from codecl.report import write_report
from codecl.results import (
    aggregate_seeds, aggregate_task_agnostic, git_commit, now, package_versions, run_folder, summarize_run,
    write_json_atomically, write_jsonl_atomically,
)
from codecl.statistics import two_level_bootstrap_p
from codecl.train import TrainResult, train_task

BOOTSTRAP_RESAMPLES = 1000
ROUTER_SAMPLE_SEED = 0  # which training inputs estimate the prototype router, the same in every run

Log = Callable[[str], None]


def load_base(config: ExperimentConfig, log: Log) -> BaseModel:
    if config.model.name != "tiny":
        return load_pretrained(config.model.name)
    directory = ensure_tiny_model(*tiny_model_request(config), log)
    base = load_pretrained(directory)
    base.provenance.update(tiny_model_identity(directory))  # where it came from and its checksums, easy to find
    return base


def degeneration_line(task_names: list[str], degeneration: list[dict[str, float]]) -> str:
    """For the log, so a collapsed model shows while the run goes: `python distinct 12%, loops 80%`."""
    return ", ".join(f"{name} distinct {d['distinct']:.0f}%, loops {d['loop']:.0f}%" for name, d in zip(task_names, degeneration))


def corpus_record(config: ExperimentConfig) -> dict:
    """Where the stream's examples come from: a mined corpus's manifest (sources with versions and counts,
    the pins it departs from, checksums), else the source and its folder."""
    if config.data.source == "mined":
        return {"source": "mined", **corpus_manifest(data_root(config.data))}
    return {"source": config.data.source, "path": str(config.data.path) if config.data.path else None}


def router_descriptions(config: EvalConfig, tasks: list[Task], d_model: int) -> dict:
    """results.json's account of each task-agnostic router of `eval.routers`."""
    humaneval = ("HumanEval eval-only tasks stay task-aware: their language picks the parameters. "
                 "At row i a router knows only the tasks trained so far.")
    about = {
        "prototype": {
            "description": "nearest task prototype (mean feature of the task's training inputs) in Mahalanobis "
                           "distance under the covariance pooled within the known tasks (EPI, Wang et al. ACL 2023; "
                           f"MoCL, Wang et al. NAACL 2024). {humaneval}",
            "features": f"the frozen base model's encoder last hidden states, mean over non-pad tokens (d={d_model})",
            "examples": {"limit": config.router_examples, "seed": ROUTER_SAMPLE_SEED,
                         "per_task": {t.name: min(config.router_examples, len(t.splits["train"])) for t in tasks}},
            "shrinkage": "Ledoit-Wolf: S' = (1-a) S + a (tr S / d) I with a estimated from the data (Ledoit & Wolf "
                         "2004); the covariance is singular when d >= n and noisy when n is a few times d",
        },
        "loss": {
            "description": "the known task whose parameters give the input's own output the lowest loss, as AdapterCL "
                           f"picks the least perplexing adapter (Madotto et al., EMNLP 2021). {humaneval}",
            "score": "mean per-token NLL of task k's greedy output (EOS included when emitted) under task k's "
                     "parameters, teacher-forced; every input is decoded with every known task's parameters",
            "examples": None,
            "shrinkage": None,
        },
    }
    return {router: about[router] for router in config.routers}


@dataclass
class RoutedRows:
    """One router's task-agnostic rows of one run, shaped like the task-aware ones."""

    rows: list[list[Evaluation]]
    accuracy: list[list[float | None]]
    routes: list[list[int]] | None = None  # the last row's: per task (column), per input, the task routed to
    seconds: float = 0.0

    def add(self, row: list[Evaluation], routes: list[list[int]], known: int, seconds: float) -> None:
        self.rows.append(row)
        self.accuracy.append(router_accuracy(routes, known))
        self.routes = routes
        self.seconds += seconds

    def repeat(self) -> None:
        self.rows.append(self.rows[-1])
        self.accuracy.append(self.accuracy[-1])

    def record(self, ok: bool) -> dict:
        matrices = {m: [[e.scores[m] for e in row] for row in self.rows] for m in METRICS}
        return {
            "matrices": matrices,
            "degeneration": {d: [[e.degeneration[d] for e in row] for row in self.rows] for d in DEGENERATION},
            "summary": summarize_run(matrices) if ok else None,
            "router_accuracy": self.accuracy,
            "confusion": confusion_counts(self.routes, len(self.routes)) if self.routes else None,
            "seconds": round(self.seconds, 2),
        }


def make_accelerator(precision: str) -> Accelerator:
    if precision == "fp16" and not torch.cuda.is_available():
        raise UserError("model.precision: fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
    return Accelerator(mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision])


class Run:
    """One experiment writing into one folder."""

    def __init__(self, config: ExperimentConfig, out_dir: Path, config_path: Path | None = None, log: Log = log_to_stderr):
        self.config, self.out_dir, self.log = config, out_dir, log
        self.accelerator = make_accelerator(config.model.precision)
        self.base = load_base(config, log)
        self.base.model.to(self.accelerator.device)
        self.tasks = build_stream(config.data, self.base.tokenizer, config.eval.split)
        self.orders = config.stream_orders()  # lists of stream indices (the stream's own order when unset)
        self.eval_only = build_humaneval_tasks(config.eval, self.base.tokenizer, config.data.max_source_tokens,
                                               config.data.input_prefix)
        # The prototype router's base-model features, computed when a router first needs them.
        self.features: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self.prototypes: dict[tuple[int, ...], Prototypes] = {}  # stream indices of the known tasks -> router
        if "javascript" in config.eval.humaneval and not any(t.language == "javascript" for t in self.eval_only):
            log("node is not installed: HumanEval-JavaScript pass@1 is skipped")
        self.results = {
            "codecl_version": __version__,
            "created": now(),
            "config_path": str(config_path) if config_path else None,
            "config": config.model_dump(mode="json"),
            "git": git_commit(),
            "packages": package_versions(),
            "device": str(self.accelerator.device),
            "seeds": config.seeds,
            "base_model": {**self.base.provenance, "parameters": self.base.parameter_count},
            "corpus": corpus_record(config),
            "tasks": [
                {"name": t.name, "language": t.language, "format": t.format,
                 "examples": {s: len(e) for s, e in t.splits.items()}}
                for t in self.tasks
            ],
            "evaluation": {
                "split": config.eval.split,
                "examples_per_task": {t.name: len(t.splits[config.eval.split]) for t in self.tasks},
                "decoding": "greedy" if config.eval.num_beams == 1 else f"beam search, {config.eval.num_beams} beams",
                "max_new_tokens": config.eval.max_new_tokens,
                "metrics": {
                    "bleu": {"variant": "sacrebleu corpus BLEU", "signature": None},
                    "bleu_codexglue": {"variant": SMOOTHED_BLEU_VARIANT},
                    "bleu_codexglue_code": {"variant": CODE_BLEU_VARIANT},
                    "codebleu": {"variant": "CodeBLEU (codebleu package), weights 0.25 each, x 100", "unavailable": None},
                    "exact_match": {"variant": "whitespace-normalised exact match, percent"},
                    "edit_similarity": {"variant": "1 - character Levenshtein / max length, mean, percent"},
                    "syntax": {"variant": "parses cleanly: Python ast, tree-sitter for the other languages; percent; "
                                         "not computed for natural-language targets"},
                },
                # Per run in "degeneration", shaped like "matrices"; diagnostics, never summarised.
                "degeneration": {"distinct": f"{DISTINCT_DEFINITION}, percent", "loop": f"{LOOP_DEFINITION}, percent"},
                "routers": router_descriptions(config.eval, self.tasks, self.base.model.config.d_model),
                "bootstrap": {
                    "metric": "average final sacrebleu BLEU", "resamples": BOOTSTRAP_RESAMPLES, "seed": 0,
                    "method": "two-level: each method's seeds resampled with replacement, and the test examples, "
                              "paired across methods; the best method is chosen on the same data",
                },
            },
            "eval_only_tasks": [
                {"name": t.name, "language": t.language, "problems": len(t.task_ids), "skipped": len(t.skipped),
                 "skipped_problems": [{"task_id": i, "reason": r} for i, r in t.skipped],
                 "dropped_assertions": [{"task_id": i, "assertion": a} for i, a in t.dropped],
                 "metric": "pass@1, greedy, sandboxed execution, percent", "sandbox": str(sandbox_isolation())}
                for t in self.eval_only
            ],
            "methods": {},
        }
        self.final_rows: dict[str, list[list[Evaluation]]] = {}  # method -> per seed, the last row

    def significance_against_best(self) -> None:
        """Two-level bootstrap of each method's average BLEU against the best method's, over seeds and
        test examples (`two_level_bootstrap_p`)."""
        averages = {
            name: entry["summary"]["bleu"]["average"]["mean"] for name, entry in self.results["methods"].items()
            if entry.get("status") == "ok" and name in self.final_rows
        }
        if len(averages) < 2:
            return
        best = max(averages, key=averages.get)
        references = [[e.target for e in t.splits[self.config.eval.split]] for t in self.tasks]
        statistics = {
            name: [[bleu_statistics(e.predictions, refs) for e, refs in zip(row, references)] for row in self.final_rows[name]]
            for name in averages
        }

        def average_bleu(name: str) -> Callable[[list[int], list[list[int]]], float]:
            def score(seeds: list[int], indices: list[list[int]]) -> float:
                per_seed = [
                    sum(corpus_bleu_from_statistics(task[picked]) for task, picked in zip(statistics[name][s], indices)) / len(indices)
                    for s in seeds
                ]
                return sum(per_seed) / len(per_seed)
            return score

        sizes = [len(refs) for refs in references]
        for name in averages:
            p_value = 1.0 if name == best else two_level_bootstrap_p(
                average_bleu(name), average_bleu(best), len(statistics[name]), len(statistics[best]), sizes,
                BOOTSTRAP_RESAMPLES,
            )
            self.results["methods"][name]["bleu_vs_best"] = {"best": best, "p_value": p_value}

    def eval_only_trained_at(self, tasks: list[Task]) -> list[int | None]:
        """Per eval-only task, the row after which its language was trained: the first task that writes
        code in it (a code -> docstring task in that language does not)."""
        languages = [t.target_language for t in tasks]
        return [languages.index(t.language) + 1 if t.language in languages else None for t in self.eval_only]

    def evaluate_eval_only(self, model, tasks: list[Task], use_task: Callable[[int], None]) -> list[FunctionalEvaluation]:
        """pass@1 of every HumanEval task, with the parameters of the first of `tasks` that writes code in
        its language (the last task's where none does)."""
        evaluations = []
        languages = [t.target_language for t in tasks]
        for task in self.eval_only:
            use_task(languages.index(task.language) if task.language in languages else len(languages) - 1)
            evaluations.append(pass_at_1(model, self.base.tokenizer, task, self.config.eval, self.accelerator))
        return evaluations

    def evaluate_all(self, model, tasks: list[Task], use_task: Callable[[int], None]) -> list[Evaluation]:
        """Every task of `tasks`, each with the parameters `use_task` selects for its position."""
        row = []
        for position, task in enumerate(tasks):
            use_task(position)
            evaluation = evaluate_task(
                model, self.base.tokenizer, task.splits[self.config.eval.split], task.target_language,
                self.config.eval, self.accelerator,
            )
            self.results["evaluation"]["metrics"]["bleu"]["signature"] = evaluation.bleu_signature
            # A natural-language target has no CodeBLEU by design; that is not the package being unavailable.
            if evaluation.problems.get("codebleu", NATURAL_LANGUAGE_TARGET) != NATURAL_LANGUAGE_TARGET:
                self.results["evaluation"]["metrics"]["codebleu"]["unavailable"] = evaluation.problems["codebleu"]
            row.append(evaluation)
        return row

    def router_features(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per stream task, the frozen base model's features of its sampled training inputs and of its
        evaluation inputs. The base never changes, so they are computed once for every method and seed,
        and the prototypes of every set of tasks a router will know are saved with them."""
        if self.features is None:
            def features(examples):
                return encoder_features(self.base.model, examples, self.base.tokenizer.pad_token_id,
                                        self.config.eval.batch_size, self.accelerator.device)

            limit, split = self.config.eval.router_examples, self.config.eval.split
            self.features = (
                [features(sample_inputs(t.splits["train"], limit, ROUTER_SAMPLE_SEED)) for t in self.tasks],
                [features(t.splits[split]) for t in self.tasks],
            )
            self.save_prototypes()
        return self.features

    def prototype_router(self, known: tuple[int, ...]) -> Prototypes:
        """The prototype router over the stream tasks `known`; its routes are positions in `known`."""
        if known not in self.prototypes:
            self.prototypes[known] = build_prototypes([self.router_features()[0][i] for i in known])
        return self.prototypes[known]

    def save_prototypes(self) -> None:
        """router/prototypes.safetensors (float32): every task's mean feature ("means", stream order) and the
        shrunk shared covariance of each set of tasks a router knows in some order ("covariance:a+b"); its
        size goes to results.json."""
        train = self.router_features()[0]
        names = [t.name for t in self.tasks]
        tensors = {"means": torch.stack([f.mean(0) for f in train]).float()}
        shrinkage = {}
        for order in self.orders:
            for position in range(1, len(order)):
                known = tuple(sorted(order[: position + 1]))  # the pooled covariance does not depend on order
                key = "+".join(names[i] for i in known)
                prototypes = self.prototype_router(known)
                tensors[f"covariance:{key}"] = prototypes.covariance.float().contiguous()
                shrinkage[key] = prototypes.shrinkage
        path = self.out_dir / "router" / "prototypes.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, path, metadata={"tasks": ",".join(names)})
        d = train[0].shape[1]
        self.results["evaluation"]["routers"]["prototype"]["stored"] = {
            "file": "router/prototypes.safetensors", "bytes": path.stat().st_size,
            # What a router over the whole stream keeps: one mean per task and one covariance.
            "values": len(train) * d + d * d, "shrinkage": shrinkage,
        }

    def route(
        self, router: str, model, use_task: Callable[[int], None], tasks: list[Task], order: list[int], position: int,
        aware_row: list[Evaluation],
    ) -> tuple[list[list[int]], dict[tuple[int, int], list[Generation]]]:
        """Per task of `tasks` (column), each evaluation input's routed task among the trained 0..`position`;
        and for the loss router, its decodes by (task, column). A column's decodes with the parameters the
        oracle gives it are the task-aware row's own, reused."""
        columns = [task.splits[self.config.eval.split] for task in tasks]
        known = position + 1
        if router == "prototype":
            prototypes = self.prototype_router(tuple(order[:known]))
            return [prototypes.route(self.router_features()[1][i]) for i in order], {}
        tokenizer, decoded, nll = self.base.tokenizer, {}, {}
        for k in range(known):
            use_task(k)
            for j, task in enumerate(tasks):
                decoded[k, j] = aware_row[j].generations if k == min(j, position) else generations(
                    model, tokenizer, columns[j], self.config.eval, self.accelerator, task.target_language)
                nll[k, j] = output_nll(model, columns[j], decoded[k, j], tokenizer.eos_token_id, tokenizer.pad_token_id,
                                       self.config.eval.batch_size, self.accelerator)
        return [route_by_loss([nll[k, j] for k in range(known)]) for j in range(len(tasks))], decoded

    def evaluate_task_agnostic(
        self, router: str, model, use_task: Callable[[int], None], tasks: list[Task], order: list[int],
        position: int, aware_row: list[Evaluation],
    ) -> tuple[list[Evaluation], list[list[int]]]:
        """Every task of `tasks` scored without its id: `router` sends each input to one of the tasks trained
        so far (0..`position`), whose parameters decode it. Returns the row and the routes.

        An input routed where the oracle sends it (its own task's parameters; for a task not trained yet,
        `use_task`'s choice, the most recent: min(j, position)) keeps its task-aware prediction from
        `aware_row`. So a perfect router scores exactly the task-aware row, and the prototype router costs
        only the decoding of the inputs it misroutes; the loss router has decoded every input with every
        known task's parameters to score them anyway."""
        columns = [task.splits[self.config.eval.split] for task in tasks]
        if position == 0:  # one known task: every input goes to it, where the oracle sends it too
            return aware_row, [[0] * len(column) for column in columns]
        own = [min(j, position) for j in range(len(tasks))]
        routes, decoded = self.route(router, model, use_task, tasks, order, position, aware_row)

        def decode(k: int, j: int, indices: list[int]) -> list[Generation]:
            if (k, j) in decoded:
                return [decoded[k, j][i] for i in indices]
            # The token budget stays the scored task's (max_new_tokens_per_language): it belongs to the
            # evaluation of that task's references, not to the model's choice.
            return generations(model, self.base.tokenizer, [columns[j][i] for i in indices], self.config.eval,
                               self.accelerator, tasks[j].target_language)

        misrouted: dict[tuple[int, int], Generation] = {}  # (column, input) -> its decoding
        for k in range(position + 1):
            wanted = {j: [i for i, r in enumerate(routes[j]) if r == k != own[j]] for j in range(len(tasks))}
            if not any(wanted.values()):
                continue
            use_task(k)
            for j, indices in wanted.items():
                if indices:
                    misrouted.update(zip([(j, i) for i in indices], decode(k, j, indices)))
        row = []
        for j, task in enumerate(tasks):
            if all(r == own[j] for r in routes[j]):
                row.append(aware_row[j])
                continue
            every = aware_row[j].generations  # the task-aware tokens, for counting loops
            every = [misrouted.get((j, i), g) for i, g in enumerate(every)]
            predictions = [aware_row[j].predictions[i] if r == own[j] else every[i].text
                           for i, r in enumerate(routes[j])]
            degeneration = {"distinct": distinct_share(predictions),
                            "loop": loop_share([g.token_ids for g in every], [g.hit_limit for g in every])}
            row.append(replace(score(predictions, columns[j], task.target_language), degeneration=degeneration,
                               generations=every))
        return row, routes

    def write_predictions(
        self, method: str, run_folder: str, tasks: list[Task], rows: list[list[Evaluation]],
        eval_only_rows: list[list[FunctionalEvaluation]],
    ) -> None:
        after_names = ["start"] + [t.name for t in tasks]
        for i, (row, functional_row) in enumerate(zip(rows, eval_only_rows)):
            folder = self.out_dir / "predictions" / method / run_folder / f"after{i}-{after_names[i]}"
            for task, evaluation in zip(tasks, row):
                examples = task.splits[self.config.eval.split]
                write_jsonl_atomically(
                    folder / f"{task.name}.jsonl",
                    [{"input": e.source, "reference": e.target, "prediction": p} for e, p in zip(examples, evaluation.predictions)],
                )
            for task, evaluation in zip(self.eval_only, functional_row):
                write_jsonl_atomically(
                    folder / f"{task.name}.jsonl",
                    [{"task_id": t, "input": e.source, "completion": c, "passed": ok}
                     for t, e, c, ok in zip(task.task_ids, task.examples, evaluation.completions, evaluation.passed)],
                )

    def write_routed_predictions(
        self, method: str, run_folder: str, router: str, tasks: list[Task], routed: RoutedRows,
    ) -> None:
        """The last task-agnostic row's predictions, each with the task its input was routed to."""
        folder = self.out_dir / "predictions" / method / run_folder / f"task-agnostic-{router}"
        for task, evaluation, routes in zip(tasks, routed.rows[-1], routed.routes):
            examples = task.splits[self.config.eval.split]
            write_jsonl_atomically(folder / f"{task.name}.jsonl", [
                {"input": e.source, "reference": e.target, "prediction": p, "routed_task": tasks[r].name}
                for e, p, r in zip(examples, evaluation.predictions, routes)
            ])

    def run_method(
        self, name: str, seed: int, order: list[int], start_row: list[Evaluation],
        start_eval_only: list[FunctionalEvaluation],
    ) -> dict:
        """Train one method with one seed through the tasks in `order` (stream indices), evaluating every
        task after every task. Rows and columns follow the order; `final_rows` keeps the stream's."""
        method_config = self.config.methods[name]
        tasks = [self.tasks[i] for i in order]
        label = f"{name} seed {seed}" + (f" order {'>'.join(t.name for t in tasks)}" if len(self.orders) > 1 else "")
        set_seed(seed)
        memory = PeakMemory(self.accelerator.device)
        memory.start()
        method = METHODS[method_config.method].build(method_config)
        record = {"seed": seed, "order": [t.name for t in tasks], "status": "ok", "error": None, "train": [],
                  "per_task_parameters": method.per_task_parameters, "seconds": {"evaluate": 0.0, "humaneval": 0.0}}
        rows, eval_only_rows = [[start_row[i] for i in order]], [start_eval_only]
        # Per router, the rows scored without the task id; a method whose one model serves every task has none.
        routed = {router: RoutedRows([rows[0]], [[None] * len(tasks)]) for router in self.config.eval.routers
                  if method.per_task_parameters}
        if routed:
            record["seconds"]["task_agnostic"] = 0.0
        folder = run_folder(seed, self.orders.index(order), len(self.orders))
        try:
            model = method.attach(copy.deepcopy(self.base.model)).to(self.accelerator.device)
            trainable = []
            for position, task in enumerate(tasks):
                data = TaskData(position, task.splits["train"], [t.splits["train"] for t in tasks[:position]],
                                self.base.tokenizer.pad_token_id, self.accelerator.device)
                parameters, trained = train_method_on_task(
                    method, model, data, self.config.train,
                    learning_rate=method_config.learning_rate or self.config.train.learning_rate,
                    accelerator=self.accelerator, seed=seed * 1000 + task.index,
                    log=lambda line: self.log(f"[{label} {task.name}] {line}"),
                )
                trainable.append(sum(p.numel() for p in parameters))
                if trained is not None:
                    record["train"].append({
                        "task": task.name, "seconds": round(trained.seconds, 2), "steps": trained.steps,
                        "skipped_steps": trained.skipped_steps, "skipped_by_cause": trained.skipped_by_cause,
                        "tokens": trained.tokens,
                        "tokens_per_second": round(trained.tokens_per_second, 1), "final_loss": trained.final_loss,
                        "final_learning_rate": trained.final_learning_rate,
                    })
                    if trained.failure:
                        raise MethodFailed(f"task {task.name}: {trained.failure}")
                if parameters:
                    started = time.perf_counter()
                    rows.append(self.evaluate_all(model, tasks, lambda j: method.use_task(model, j)))
                    record["seconds"]["evaluate"] += time.perf_counter() - started
                    started = time.perf_counter()
                    eval_only_rows.append(self.evaluate_eval_only(model, tasks, lambda j: method.use_task(model, j)))
                    record["seconds"]["humaneval"] += time.perf_counter() - started
                    for router, routed_rows in routed.items():
                        started = time.perf_counter()
                        routed_rows.add(*self.evaluate_task_agnostic(
                            router, model, lambda j: method.use_task(model, j), tasks, order, position, rows[-1],
                        ), known=position + 1, seconds=time.perf_counter() - started)
                    if routed:
                        record["seconds"]["task_agnostic"] = sum(r.seconds for r in routed.values())
                else:
                    rows.append(rows[-1])
                    eval_only_rows.append(eval_only_rows[-1])
                    for routed_rows in routed.values():
                        routed_rows.repeat()
            total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
            base = self.base.parameter_count
            record["parameters"] = {
                "base": base, "total": total, "added": total - base,
                "added_percent": 100.0 * (total - base) / base, "trainable_per_task": trainable,
            }
            method.save(model, self.out_dir / "checkpoints" / name / folder, len(tasks))
        except MethodFailed as failure:
            record.update(status="failed", error=str(failure))
        except Exception as error:  # a method that crashes is a result to report, not a crashed run
            record.update(status="failed", error=f"{type(error).__name__}: {error}".splitlines()[0])
            trace = self.out_dir / "errors" / f"{name}-{folder}.txt"
            trace.parent.mkdir(parents=True, exist_ok=True)
            trace.write_text(traceback.format_exc())
        record["matrices"] = {m: [[e.scores[m] for e in row] for row in rows] for m in METRICS}
        record["degeneration"] = {d: [[e.degeneration[d] for e in row] for row in rows] for d in DEGENERATION}
        if record["status"] == "ok":
            # Back in stream order, so that runs of every order pair up example by example.
            self.final_rows.setdefault(name, []).append([rows[-1][order.index(i)] for i in range(len(order))])
        record["summary"] = summarize_run(record["matrices"]) if record["status"] == "ok" else None
        if self.eval_only:
            record["eval_only_matrices"] = {"pass@1": [[e.pass_at_1 for e in row] for row in eval_only_rows]}
            if record["status"] == "ok":
                summaries = eval_only_summary(record["eval_only_matrices"]["pass@1"], self.eval_only_trained_at(tasks))
                for task, summary in zip(self.eval_only, summaries):
                    record["summary"][f"pass@1 {task.name}"] = summary
        if routed:
            record["task_agnostic"] = {router: r.record(record["status"] == "ok") for router, r in routed.items()}
        record.update(memory.read())
        self.write_predictions(name, folder, tasks, rows, eval_only_rows)
        for router, routed_rows in routed.items():
            if routed_rows.routes:
                self.write_routed_predictions(name, folder, router, tasks, routed_rows)
        return record

    def execute(self) -> dict:
        counts = ", ".join(f"{t.name} n={len(t.splits[self.config.eval.split])}" for t in self.tasks)
        self.log(f"tasks: {' -> '.join(t.name for t in self.tasks)}; scored on {self.config.eval.split} ({counts})")
        started = time.perf_counter()
        start_row = self.evaluate_all(self.base.model, self.tasks, lambda j: None)
        start_eval_only = self.evaluate_eval_only(self.base.model, self.tasks, lambda j: None)
        bleu = ", ".join(f"{t.name} BLEU {e.scores['bleu']:.2f}" for t, e in zip(self.tasks, start_row))
        bleu += "; " + degeneration_line([t.name for t in self.tasks], [e.degeneration for e in start_row])
        functional = "".join(f", {t.name} pass@1 {e.pass_at_1:.1f}%" for t, e in zip(self.eval_only, start_eval_only))
        self.log(f"base model: {bleu}{functional}")
        for name in self.config.methods:
            entry = self.results["methods"].setdefault(
                name, {"config": self.config.methods[name].model_dump(mode="json"), "runs": []}
            )
            for seed, order in ((seed, order) for order in self.orders for seed in self.config.seeds):
                record = self.run_method(name, seed, order, start_row, start_eval_only)
                entry["runs"].append(record)
                entry["summary"] = aggregate_seeds(entry["runs"])
                if "task_agnostic" in record:
                    entry["summary_task_agnostic"] = aggregate_task_agnostic(entry["runs"])
                entry["status"] = "ok" if all(r["status"] == "ok" for r in entry["runs"]) else "failed"
                average = (record["summary"] or {}).get("bleu", {}).get("average")
                outcome = f"average BLEU {average:.2f}" if average is not None else record["error"]
                if record["status"] == "ok":
                    final_row = self.final_rows[name][-1]
                    outcome += "; " + degeneration_line([t.name for t in self.tasks], [e.degeneration for e in final_row])
                order_label = f" order {'>'.join(record['order'])}" if len(self.orders) > 1 else ""
                self.log(f"[{name} seed {seed}{order_label}] {record['status']}: {outcome}")
                for router, routed in (record.get("task_agnostic", {}) if record["status"] == "ok" else {}).items():
                    final = zip(record["order"], routed["router_accuracy"][-1])
                    accuracy = ", ".join(f"{task} {value:.0f}%" for task, value in final if value is not None)
                    average = routed["summary"]["bleu"]["average"]
                    self.log(f"[{name} seed {seed}{order_label}] task-agnostic ({router}): average BLEU {average:.2f}"
                             + (f"; router accuracy {accuracy}" if accuracy else ""))
                self.results["seconds"] = round(time.perf_counter() - started, 1)
                write_json_atomically(self.out_dir / "results.json", self.results)
        self.significance_against_best()
        self.results["finished"] = now()
        write_json_atomically(self.out_dir / "results.json", self.results)
        write_report(self.results, self.out_dir / "report.md")
        return self.results


class MethodFailed(Exception):
    pass


def train_method_on_task(
    method: ContinualMethod, model, task: TaskData, config: TrainConfig, *, learning_rate: float,
    accelerator: Accelerator, seed: int, log: Log,
) -> tuple[list, TrainResult | None]:
    """One task of a stream, the hooks in their order: `begin_task`, the loop on `train_examples` with
    `mix_batch` and `extra_loss`, then `end_task`. Returns the parameters trained and the loop's result
    (None when the method trains nothing on this task). A failed loop skips `end_task`."""
    parameters = method.begin_task(model, task.index)
    trained = None
    if parameters:
        log(f"training {sum(p.numel() for p in parameters):,} parameters")
        trained = train_task(
            model, parameters, method.train_examples(task), config, learning_rate=learning_rate,
            accelerator=accelerator, pad_id=task.pad_id, seed=seed, extra_loss=method.extra_loss,
            mix_batch=method.mix_batch, log=log,
        )
        if trained.failure:
            return parameters, trained
    method.end_task(model, task)
    return parameters, trained
