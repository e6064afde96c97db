"""The orchestrator: a run is a grid of jobs (`job.py`), one per method x seed x task order, after the base
job. It plans them, keeps those a resumed run already finished, hands the rest to an executor
(`executors.py`), and does only what needs every job: aggregating over seeds and orders, the bootstrap
against the best method, `results.json` and the report.
"""

from __future__ import annotations

import fcntl
import json
import sys
import time
from pathlib import Path
from typing import Callable

from codecl import __version__
from codecl.config import ExperimentConfig, EvalConfig, first_difference
from codecl.data.miner import corpus_manifest
from codecl.data.tasks import Task, data_root
from codecl.errors import UserError
from codecl.evaluate.code_metrics import CODE_BLEU_VARIANT, SMOOTHED_BLEU_VARIANT
from codecl.evaluate.degeneration import DISTINCT_DEFINITION, LOOP_DEFINITION
from codecl.evaluate.router import ROUTER_SAMPLE_SEED
from codecl.evaluate.sandbox import sandbox_isolation
from codecl.evaluate.text import bleu_statistics, corpus_bleu_from_statistics
from codecl.executors import Executor, describe_error
from codecl.job import degeneration_line
from codecl.job_state import JobFiles, JobKey, finished_record
from codecl.models.store import log_to_stderr
from codecl.progress import GridProgress
from codecl.report import write_reports
from codecl.results import (
    TEMPORARY, aggregate_seeds, aggregate_task_agnostic, git_commit, now, package_versions, run_folder,
    write_json_atomically,
)
from codecl.setting import Setting, setting_for
from codecl.statistics import two_level_bootstrap_p
from codecl.tracking import check_trackers, prepare_trackers

BOOTSTRAP_RESAMPLES = 1000
BASE = JobKey(None)

Log = Callable[[str], None]


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


def results_header(setting: Setting, config_path: Path | None) -> dict:
    """What results.json says about the run before any job: config, provenance, tasks, metric variants."""
    config, base = setting.config, setting.base
    return {
        "codecl_version": __version__,
        "created": now(),
        "config_path": str(config_path) if config_path else None,
        "config": config.model_dump(mode="json"),
        "git": git_commit(),
        "packages": package_versions(),
        "device": str(setting.accelerator.device),
        "seeds": config.seeds,
        "base_model": {**base.provenance, "parameters": base.parameter_count},
        "corpus": corpus_record(config),
        "tasks": [
            {"name": t.name, "language": t.language, "format": t.format,
             "examples": {s: len(e) for s, e in t.splits.items()}}
            for t in setting.tasks
        ],
        "evaluation": {
            "split": config.eval.split,
            "examples_per_task": {t.name: len(t.splits[config.eval.split]) for t in setting.tasks},
            "decoding": "greedy" if config.eval.num_beams == 1 else f"beam search, {config.eval.num_beams} beams",
            "max_new_tokens": config.eval.max_new_tokens,
            "metrics": {
                "bleu": {"variant": "sacrebleu corpus BLEU", "signature": None},
                "bleu_codexglue": {"variant": SMOOTHED_BLEU_VARIANT},
                "bleu_codexglue_code": {"variant": CODE_BLEU_VARIANT},
                "codebleu": {"variant": "CodeBLEU (codebleu package), weights 0.25 each, x 100; each data-flow's "
                                        "parents taken in sorted order, not in the package's set order, which "
                                        "changes with each process's string hashes", "unavailable": None},
                "exact_match": {"variant": "whitespace-normalised exact match, percent"},
                "edit_similarity": {"variant": "1 - character Levenshtein / max length, mean, percent"},
                "syntax": {"variant": "parses cleanly: Python ast, tree-sitter for the other languages; percent; "
                                     "not computed for natural-language targets"},
            },
            # Per run in "degeneration", shaped like "matrices"; diagnostics, never summarised.
            "degeneration": {"distinct": f"{DISTINCT_DEFINITION}, percent", "loop": f"{LOOP_DEFINITION}, percent"},
            "routers": router_descriptions(config.eval, setting.tasks, base.model.config.d_model),
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
            for t in setting.eval_only
        ],
        "methods": {},
    }


def checked_config(run_dir: Path, config: ExperimentConfig) -> None:
    """Refuse to resume `run_dir` with a config that computes something else: name the first key."""
    try:
        theirs = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"--resume {run_dir}: no readable config.json in it (expected a folder written by `codecl run`)") from None
    found = first_difference(config.model_dump(mode="json"), theirs)
    if found:
        key, ours, run = found
        raise UserError(f"--resume {run_dir}: the config differs from the run's at {key} (the run's: {run!r}, "
                        f"now: {ours!r}); resume with the run's own config or start a new run")


class LogStream:
    """A text stream whose lines go to a `Log` function (for `GridProgress` when the caller logs itself)."""

    def __init__(self, log: Log):
        self.log = log

    def write(self, text: str) -> None:
        for line in text.splitlines():
            self.log(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class Run:
    """One experiment writing into one folder; `resume=True` goes on with the folder's unfinished jobs."""

    def __init__(self, config: ExperimentConfig, out_dir: Path, config_path: Path | None = None,
                 log: Log | None = None, resume: bool = False, live: bool | None = None):
        self.config, self.out_dir, self.config_path, self.resume = config, out_dir, config_path, resume
        self.log = log or log_to_stderr
        # Live view on a terminal, unless the caller takes the lines itself.
        self.stream = LogStream(log) if log else None
        self.live = False if log else live
        orders = config.stream_orders()
        self.keys = [JobKey(name, seed, order) for name in config.methods
                     for order in range(len(orders)) for seed in config.seeds]
        self.order_count = len(orders)
        self.records: dict[JobKey, dict] = {}
        self.final_predictions: dict[str, list[list[list[str]]]] = {}  # method -> per run, per stream task

    def files(self, key: JobKey) -> JobFiles:
        return JobFiles(self.out_dir, key, self.order_count)

    def prepare_folder(self) -> None:
        if self.resume:
            checked_config(self.out_dir, self.config)
            for temporary in self.out_dir.rglob(f"*{TEMPORARY}"):  # what a killed write left
                temporary.unlink()
        elif (self.out_dir / "config.json").exists() or (self.out_dir / "results.json").exists():
            raise UserError(f"--out {self.out_dir}: already holds a run; choose a new folder or --resume it")
        write_json_atomically(self.out_dir / "config.json", self.config.model_dump(mode="json"))

    def execute(self) -> dict:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with (self.out_dir / ".lock").open("w") as lock:
            try:  # two attempts writing one folder would break each other's files
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise UserError(f"{self.out_dir}: another codecl run is writing this folder") from None
            return self.execute_locked()

    def execute_locked(self) -> dict:
        check_trackers(self.config.tracking)
        self.prepare_folder()
        prepare_trackers(self.config.tracking, self.out_dir, self.config.name)
        started = time.perf_counter()
        self.setting = setting_for(self.config, self.log)
        self.tasks = self.setting.tasks
        self.results = results_header(self.setting, self.config_path)
        self.results.update({"sessions": [], **self.earlier_results()})
        if "javascript" in self.config.eval.humaneval and not any(t.language == "javascript" for t in self.setting.eval_only):
            self.log("node is not installed: HumanEval-JavaScript pass@1 is skipped")
        kept = {key: record for key in [BASE, *self.keys]
                if (record := finished_record(self.files(key), self.config)) is not None
                and record.get("status", "ok") == "ok"}
        to_run = [key for key in self.keys if key not in kept]
        for key in [BASE, *to_run]:
            self.files(key).progress.unlink(missing_ok=True)
        labels = {key.label(self.order_count): self.files(key).progress for key in to_run}
        counts = ", ".join(f"{t.name} n={len(t.splits[self.config.eval.split])}" for t in self.tasks)
        live = self.live if self.live is not None else sys.stderr.isatty()
        # Jobs echo their log lines unless the live view holds the terminal; each keeps them in its log.txt.
        with Executor(self.config, self.out_dir, echo=not live, job_count=len(to_run)) as executor, \
                GridProgress(labels, stream=self.stream, live=live, already_done=len(self.keys) - len(to_run)) as view:
            view.message(f"tasks: {' -> '.join(t.name for t in self.tasks)}; scored on {self.config.eval.split} ({counts})")
            view.message(f"{len(self.keys)} jobs ({executor.description})"
                         + (f"; {len(kept) - (BASE in kept)} kept from the earlier attempt" if self.resume else ""))
            self.results["sessions"].append({"started": now(), "executor": executor.description,
                                             "jobs_run": len(to_run), "jobs_kept": len(self.keys) - len(to_run)})
            base = kept.get(BASE)
            if base is None:
                (key, base), = executor.map([BASE])
                if isinstance(base, BaseException):
                    raise UserError(f"the base model's evaluation failed: {describe_error(base)}")
            self.use_base(base)
            for key, record in kept.items():
                if key != BASE:
                    self.records[key] = record
            self.write()
            for key, outcome in executor.map(to_run):
                if isinstance(outcome, BaseException):  # the job died before it could write its record
                    outcome = {"seed": key.seed, "order": self.order_names(key), "status": "failed",
                               "error": describe_error(outcome), "train": [], "matrices": {}, "degeneration": {},
                               "summary": None}
                self.records[key] = outcome
                first, *more = self.outcome_lines(key, outcome)
                view.finished(key.label(self.order_count), first)
                for line in more:
                    view.message(line)
                self.time_sessions(started)
                self.write()
        self.significance_against_best()
        self.results["sessions"][-1]["finished"] = self.results["finished"] = now()
        self.time_sessions(started)
        self.write()
        write_reports(self.results, self.out_dir)
        return self.results

    def earlier_results(self) -> dict:
        """What an earlier attempt's results.json says of the run as a whole (its start, its config file,
        its sessions)."""
        try:
            earlier = json.loads((self.out_dir / "results.json").read_text()) if self.resume else {}
        except (OSError, ValueError):
            earlier = {}
        return {key: earlier[key] for key in ("created", "config_path", "sessions") if key in earlier}

    def time_sessions(self, started: float) -> None:
        """This attempt's seconds so far; the run's `seconds` add up every attempt's."""
        self.results["sessions"][-1]["seconds"] = round(time.perf_counter() - started, 1)
        self.results["seconds"] = round(sum(s.get("seconds", 0.0) for s in self.results["sessions"]), 1)

    def order_names(self, key: JobKey) -> list[str]:
        return [self.tasks[i].name for i in self.setting.orders[key.order]]

    def use_base(self, base: dict) -> None:
        evaluation = self.results["evaluation"]
        evaluation["metrics"]["bleu"]["signature"] = base["bleu_signature"]
        evaluation["metrics"]["codebleu"]["unavailable"] = base["codebleu_unavailable"]
        if base["prototypes_stored"]:
            evaluation["routers"]["prototype"]["stored"] = base["prototypes_stored"]

    def write(self) -> None:
        """results.json from the records so far: the methods in config order (ties in the ranking and in
        the choice of the best method keep it), each with its runs in plan order and their aggregates."""
        earlier, self.results["methods"] = self.results["methods"], {}
        for name in self.config.methods:
            runs = [self.records[key] for key in self.keys if key.method == name and key in self.records]
            if not runs:
                continue
            entry = {"config": self.config.methods[name].model_dump(mode="json"), "runs": runs,
                     "summary": aggregate_seeds(runs)}
            if any("task_agnostic" in run for run in runs):
                entry["summary_task_agnostic"] = aggregate_task_agnostic(runs)
            entry["status"] = "ok" if all(r["status"] == "ok" for r in runs) else "failed"
            if "bleu_vs_best" in earlier.get(name, {}):
                entry["bleu_vs_best"] = earlier[name]["bleu_vs_best"]
            self.results["methods"][name] = entry
        write_json_atomically(self.out_dir / "results.json", self.results)

    def outcome_lines(self, key: JobKey, record: dict) -> list[str]:
        label = f"[{key.method} seed {key.seed}" + (f" order {'>'.join(record['order'])}" if self.order_count > 1 else "") + "]"
        average = (record.get("summary") or {}).get("bleu", {}).get("average")
        outcome = f"average BLEU {average:.2f}" if average is not None else record["error"]
        if record["status"] == "ok":
            final = [row[-1] for row in record["degeneration"].values()]
            degeneration = [{d: record["degeneration"][d][-1][j] for d in record["degeneration"]}
                            for j in range(len(final[0]))]
            outcome += "; " + degeneration_line(record["order"], degeneration)
        lines = [f"{label} {record['status']}: {outcome}"]
        for router, routed in (record.get("task_agnostic", {}) if record["status"] == "ok" else {}).items():
            accuracy = ", ".join(f"{task} {value:.0f}%" for task, value in zip(record["order"], routed["router_accuracy"][-1])
                                 if value is not None)
            lines.append(f"{label} task-agnostic ({router}): average BLEU {routed['summary']['bleu']['average']:.2f}"
                         + (f"; router accuracy {accuracy}" if accuracy else ""))
        return lines

    def final_rows(self, name: str) -> list[list[list[str]]]:
        """Per finished run of `name`, per stream task, its final predictions (read back from its files,
        which every executor leaves in the run folder), in stream order so that runs of every order pair up."""
        rows = []
        for key in self.keys:
            record = self.records.get(key)
            if key.method != name or record is None or record["status"] != "ok":
                continue
            folder = self.out_dir / "predictions" / name / run_folder(key.seed, key.order, self.order_count)
            last = folder / f"after{len(record['order'])}-{record['order'][-1]}"
            # split("\n"), not splitlines(): a prediction may hold U+2028 and the like, which JSON leaves as they are.
            rows.append([[json.loads(line)["prediction"] for line in (last / f"{t.name}.jsonl").read_text().split("\n") if line]
                         for t in self.tasks])
        return rows

    def significance_against_best(self) -> None:
        """Two-level bootstrap of each method's average BLEU against the best method's, over seeds and
        test examples (`two_level_bootstrap_p`)."""
        averages = {
            name: entry["summary"]["bleu"]["average"]["mean"] for name, entry in self.results["methods"].items()
            if entry.get("status") == "ok"
        }
        if len(averages) < 2:
            return
        best = max(averages, key=averages.get)
        references = [[e.target for e in t.splits[self.config.eval.split]] for t in self.tasks]
        self.final_predictions = {name: self.final_rows(name) for name in averages}
        statistics = {
            name: [[bleu_statistics(predictions, refs) for predictions, refs in zip(row, references)] for row in rows]
            for name, rows in self.final_predictions.items()
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
