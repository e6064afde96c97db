"""The experiment: for every seed and method, `for task in stream: train, then evaluate every task`.

Row 0 of every accuracy matrix is the base model before any training, evaluated once and shared by all
methods and seeds (decoding is deterministic and every method starts function-preserving). Row i is
every task's score after training task i. A task for which a method trains nothing leaves the model
unchanged, so its row repeats the previous one instead of decoding it all again.
"""

from __future__ import annotations

import copy
import time
import traceback
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from codecl import __version__
from codecl.config import ExperimentConfig
from codecl.data.miner import corpus_manifest
from codecl.data.tasks import build_stream, data_root
from codecl.errors import UserError
from codecl.evaluate.code_metrics import CODE_BLEU_VARIANT, SMOOTHED_BLEU_VARIANT
from codecl.evaluate.decode import DEGENERATION, METRICS, Evaluation, evaluate_task
from codecl.evaluate.degeneration import DISTINCT_DEFINITION, LOOP_DEFINITION
from codecl.evaluate.functional import FunctionalEvaluation, build_humaneval_tasks, pass_at_1
from codecl.evaluate.sandbox import sandbox_isolation
from codecl.evaluate.text import bleu_statistics, corpus_bleu_from_statistics
from codecl.methods import METHODS
from codecl.memory import PeakMemory
from codecl.metrics import eval_only_summary
from codecl.models.load import BaseModel, load_pretrained
from codecl.models.store import ensure_tiny_model, log_to_stderr, tiny_model_identity, tiny_model_request
from codecl.report import write_report
from codecl.results import (
    aggregate_seeds, git_commit, now, package_versions, summarize_run, write_json_atomically,
    write_jsonl_atomically,
)
from codecl.statistics import two_level_bootstrap_p
from codecl.train import train_task

BOOTSTRAP_RESAMPLES = 1000

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
        self.eval_only = build_humaneval_tasks(config.eval, self.base.tokenizer, config.data.max_source_tokens)
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
                {"name": t.name, "language": t.language, "examples": {s: len(e) for s, e in t.splits.items()}}
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
                    "syntax": {"variant": "parses cleanly: Python ast / tree-sitter JavaScript, percent"},
                },
                # Per run in "degeneration", shaped like "matrices"; diagnostics, never summarised.
                "degeneration": {"distinct": f"{DISTINCT_DEFINITION}, percent", "loop": f"{LOOP_DEFINITION}, percent"},
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

    def eval_only_trained_at(self) -> list[int | None]:
        """Per eval-only task, the row after which its language was trained: the first stream task in it."""
        languages = [t.language for t in self.tasks]
        return [languages.index(t.language) + 1 if t.language in languages else None for t in self.eval_only]

    def evaluate_eval_only(self, model, use_task: Callable[[int], None]) -> list[FunctionalEvaluation]:
        """pass@1 of every HumanEval task, with the parameters of the stream task in its language
        (the last task's where the stream has no task in that language)."""
        evaluations = []
        languages = [t.language for t in self.tasks]
        for task in self.eval_only:
            use_task(languages.index(task.language) if task.language in languages else len(languages) - 1)
            evaluations.append(pass_at_1(model, self.base.tokenizer, task, self.config.eval, self.accelerator))
        return evaluations

    def evaluate_all(self, model, use_task: Callable[[int], None]) -> list[Evaluation]:
        row = []
        for task in self.tasks:
            use_task(task.index)
            evaluation = evaluate_task(
                model, self.base.tokenizer, task.splits[self.config.eval.split], task.language,
                self.config.eval, self.accelerator,
            )
            self.results["evaluation"]["metrics"]["bleu"]["signature"] = evaluation.bleu_signature
            if "codebleu" in evaluation.problems:
                self.results["evaluation"]["metrics"]["codebleu"]["unavailable"] = evaluation.problems["codebleu"]
            row.append(evaluation)
        return row

    def write_predictions(
        self, method: str, seed: int, rows: list[list[Evaluation]], eval_only_rows: list[list[FunctionalEvaluation]]
    ) -> None:
        after_names = ["start"] + [t.name for t in self.tasks]
        for i, (row, functional_row) in enumerate(zip(rows, eval_only_rows)):
            folder = self.out_dir / "predictions" / method / f"seed{seed}" / f"after{i}-{after_names[i]}"
            for task, evaluation in zip(self.tasks, row):
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

    def run_method(
        self, name: str, seed: int, start_row: list[Evaluation], start_eval_only: list[FunctionalEvaluation]
    ) -> dict:
        method_config = self.config.methods[name]
        set_seed(seed)
        memory = PeakMemory(self.accelerator.device)
        memory.start()
        method = METHODS[method_config.method].build(method_config)
        record = {"seed": seed, "status": "ok", "error": None, "train": [], "seconds": {"evaluate": 0.0, "humaneval": 0.0}}
        rows, eval_only_rows = [start_row], [start_eval_only]
        try:
            model = method.attach(copy.deepcopy(self.base.model)).to(self.accelerator.device)
            trainable = []
            for task in self.tasks:
                parameters = method.begin_task(model, task.index)
                trainable.append(sum(p.numel() for p in parameters))
                if parameters:
                    self.log(f"[{name} seed {seed}] training on {task.name}: {trainable[-1]:,} parameters")
                    trained = train_task(
                        model, parameters, task.splits["train"], self.config.train,
                        learning_rate=method_config.learning_rate or self.config.train.learning_rate,
                        accelerator=self.accelerator, pad_id=self.base.tokenizer.pad_token_id,
                        seed=seed * 1000 + task.index, extra_loss=method.extra_loss,
                        log=lambda line: self.log(f"[{name} seed {seed} {task.name}] {line}"),
                    )
                    record["train"].append({
                        "task": task.name, "seconds": round(trained.seconds, 2), "steps": trained.steps,
                        "skipped_steps": trained.skipped_steps, "skipped_by_cause": trained.skipped_by_cause,
                        "tokens": trained.tokens,
                        "tokens_per_second": round(trained.tokens_per_second, 1), "final_loss": trained.final_loss,
                        "final_learning_rate": trained.final_learning_rate,
                    })
                    if trained.failure:
                        raise MethodFailed(f"task {task.name}: {trained.failure}")
                method.end_task(model, task.index)
                if parameters:
                    started = time.perf_counter()
                    rows.append(self.evaluate_all(model, lambda j: method.use_task(model, j)))
                    record["seconds"]["evaluate"] += time.perf_counter() - started
                    started = time.perf_counter()
                    eval_only_rows.append(self.evaluate_eval_only(model, lambda j: method.use_task(model, j)))
                    record["seconds"]["humaneval"] += time.perf_counter() - started
                else:
                    rows.append(rows[-1])
                    eval_only_rows.append(eval_only_rows[-1])
            total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
            base = self.base.parameter_count
            record["parameters"] = {
                "base": base, "total": total, "added": total - base,
                "added_percent": 100.0 * (total - base) / base, "trainable_per_task": trainable,
            }
            method.save(model, self.out_dir / "checkpoints" / name / f"seed{seed}", len(self.tasks))
        except MethodFailed as failure:
            record.update(status="failed", error=str(failure))
        except Exception as error:  # a method that crashes is a result to report, not a crashed run
            record.update(status="failed", error=f"{type(error).__name__}: {error}".splitlines()[0])
            trace = self.out_dir / "errors" / f"{name}-seed{seed}.txt"
            trace.parent.mkdir(parents=True, exist_ok=True)
            trace.write_text(traceback.format_exc())
        record["matrices"] = {m: [[e.scores[m] for e in row] for row in rows] for m in METRICS}
        record["degeneration"] = {d: [[e.degeneration[d] for e in row] for row in rows] for d in DEGENERATION}
        if record["status"] == "ok":
            self.final_rows.setdefault(name, []).append(rows[-1])
        record["summary"] = summarize_run(record["matrices"]) if record["status"] == "ok" else None
        if self.eval_only:
            record["eval_only_matrices"] = {"pass@1": [[e.pass_at_1 for e in row] for row in eval_only_rows]}
            if record["status"] == "ok":
                summaries = eval_only_summary(record["eval_only_matrices"]["pass@1"], self.eval_only_trained_at())
                for task, summary in zip(self.eval_only, summaries):
                    record["summary"][f"pass@1 {task.name}"] = summary
        record.update(memory.read())
        self.write_predictions(name, seed, rows, eval_only_rows)
        return record

    def execute(self) -> dict:
        counts = ", ".join(f"{t.name} n={len(t.splits[self.config.eval.split])}" for t in self.tasks)
        self.log(f"tasks: {' -> '.join(t.name for t in self.tasks)}; scored on {self.config.eval.split} ({counts})")
        started = time.perf_counter()
        start_row = self.evaluate_all(self.base.model, lambda j: None)
        start_eval_only = self.evaluate_eval_only(self.base.model, lambda j: None)
        bleu = ", ".join(f"{t.name} BLEU {e.scores['bleu']:.2f}" for t, e in zip(self.tasks, start_row))
        bleu += "; " + degeneration_line([t.name for t in self.tasks], [e.degeneration for e in start_row])
        functional = "".join(f", {t.name} pass@1 {e.pass_at_1:.1f}%" for t, e in zip(self.eval_only, start_eval_only))
        self.log(f"base model: {bleu}{functional}")
        for name in self.config.methods:
            entry = self.results["methods"].setdefault(
                name, {"config": self.config.methods[name].model_dump(mode="json"), "runs": []}
            )
            for seed in self.config.seeds:
                record = self.run_method(name, seed, start_row, start_eval_only)
                entry["runs"].append(record)
                entry["summary"] = aggregate_seeds(entry["runs"])
                entry["status"] = "ok" if all(r["status"] == "ok" for r in entry["runs"]) else "failed"
                average = (record["summary"] or {}).get("bleu", {}).get("average")
                outcome = f"average BLEU {average:.2f}" if average is not None else record["error"]
                if record["status"] == "ok":
                    final_row = self.final_rows[name][-1]
                    outcome += "; " + degeneration_line([t.name for t in self.tasks], [e.degeneration for e in final_row])
                self.log(f"[{name} seed {seed}] {record['status']}: {outcome}")
                self.results["seconds"] = round(time.perf_counter() - started, 1)
                write_json_atomically(self.out_dir / "results.json", self.results)
        self.significance_against_best()
        self.results["finished"] = now()
        write_json_atomically(self.out_dir / "results.json", self.results)
        write_report(self.results, self.out_dir / "report.md")
        return self.results


class MethodFailed(Exception):
    pass
