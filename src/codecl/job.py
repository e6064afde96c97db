"""One job of a run: one method, one seed, one task order. `for task in order: train, then evaluate every task`.

A job is a function of the config and its key alone. It writes under its own folders of the run (its
record, predictions, checkpoints, and its resumable state under `jobs/METHOD/FOLDER/`), every file
atomically, and shares nothing in memory with other jobs, so any executor may run it anywhere the run
folder is reachable.

The base job comes first: it scores the base model once (row 0 of every accuracy matrix, shared by every
method and seed: decoding is deterministic and every method starts function-preserving) and computes the
router's features. A task for which a method trains nothing leaves the model unchanged, so its row repeats
the previous one instead of decoding it all again.

A method with per-task parameters is scored twice: task-aware, where the oracle selects the scored task's
parameters (`use_task`), and task-agnostic, where a router (`evaluate/router.py`) picks a trained task for
each input from the input alone.

Resume: after every task the job saves what going on needs (`method.save`, its rows so far, the RNG
states), and with `train.checkpoint_every` the training loop's own state every so many steps. A restarted
job goes on from the latest, and its results equal an uninterrupted job's.
"""

from __future__ import annotations

import copy
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch
from accelerate.utils import set_seed
from safetensors.torch import save_file

from codecl.config import ExperimentConfig, TrainConfig
from codecl.data.tasks import Task
from codecl.evaluate.decode import DEGENERATION, METRICS, NATURAL_LANGUAGE_TARGET, Evaluation
from codecl.evaluate.functional import FunctionalEvaluation, FunctionalTask
from codecl.evaluate.router import RoutedRows, RouterFeatures, evaluate_task_agnostic
from codecl.memory import PeakMemory
from codecl.methods import METHODS
from codecl.methods.base import ContinualMethod, TaskData
from codecl.metrics import eval_only_summary
from codecl.results import (
    atomic_path, run_folder, save_torch_atomically, summarize_run, write_json_atomically,
    write_jsonl_atomically, write_text_atomically,
)
from codecl.job_state import (
    JobFiles, JobKey, JobProgress, JobState, fingerprint, digests, latest_state, restore_rng, rng_states, save_state,
)
from codecl.setting import Log, Setting, setting_for
from codecl.tracking import JobTrackers
from codecl.train import LogPoint, LoopState, TrainResult, train_task

class MethodFailed(Exception):
    pass


def train_method_on_task(
    method: ContinualMethod, model, task: TaskData, config: TrainConfig, *, learning_rate: float,
    accelerator, seed: int, log: Log, save_loop: Callable[[LoopState], None] | None = None,
    resume_from: LoopState | None = None, on_log: Callable[[LogPoint], None] | None = None,
) -> tuple[list, TrainResult | None]:
    """One task of a stream, the hooks in their order: `begin_task`, the loop on `train_examples` with
    `mix_batch` and `extra_loss`, then `end_task`. Returns the parameters trained and the loop's result
    (None when the method trains nothing on this task). A failed loop skips `end_task`."""
    parameters = method.begin_task(model, task.index)
    trained = None
    if parameters:
        log(f"training {sum(p.numel() for p in parameters):,} parameters"
            + (f", from step {resume_from.step}" if resume_from else ""))
        trained = train_task(
            model, parameters, method.train_examples(task), config, learning_rate=learning_rate,
            accelerator=accelerator, pad_id=task.pad_id, seed=seed, extra_loss=method.extra_loss,
            mix_batch=method.mix_batch, log=log, checkpoint_every=config.checkpoint_every if save_loop else 0,
            save_state=save_loop, resume_from=resume_from, on_log=on_log,
        )
        if trained.failure:
            return parameters, trained
    method.end_task(model, task)
    return parameters, trained


def base_outputs(run_dir: Path) -> dict:
    return torch.load(run_dir / "jobs" / "base" / "start.pt", weights_only=False)


def run_base_job(setting: Setting, files: JobFiles, log: Log) -> dict:
    """Row 0 (the base model on every task and eval-only task) and the prototype router's features."""
    base, tasks = setting.base.model, setting.tasks
    start_row = setting.evaluate_all(base, tasks, lambda j: None)
    start_eval_only = setting.evaluate_eval_only(base, tasks, lambda j: None)
    bleu = ", ".join(f"{t.name} BLEU {e.scores['bleu']:.2f}" for t, e in zip(tasks, start_row))
    bleu += "; " + degeneration_line([t.name for t in tasks], [e.degeneration for e in start_row])
    functional = "".join(f", {t.name} pass@1 {e.pass_at_1:.1f}%" for t, e in zip(setting.eval_only, start_eval_only))
    log(f"base model: {bleu}{functional}")
    config = setting.config
    per_task = any(METHODS[m.method].build(m).per_task_parameters for m in config.methods.values())
    features = RouterFeatures.compute(setting) if per_task and "prototype" in config.eval.routers else None
    record = {
        "bleu_signature": start_row[0].bleu_signature,
        # A natural-language target has no CodeBLEU by design; that is not the package being unavailable.
        "codebleu_unavailable": next((e.problems["codebleu"] for e in start_row if e.problems.get(
            "codebleu", NATURAL_LANGUAGE_TARGET) != NATURAL_LANGUAGE_TARGET), None),
        "prototypes_stored": save_prototypes(setting, features, files.run_dir) if features else None,
    }
    save_torch_atomically(files.root / "start.pt", {"row": start_row, "eval_only": start_eval_only,
                                                    "features": (features.train, features.evaluation) if features else None})
    return record


def save_prototypes(setting: Setting, features: RouterFeatures, run_dir: Path) -> dict:
    """router/prototypes.safetensors (float32): every task's mean feature ("means", stream order) and the
    shrunk shared covariance of each set of tasks a router knows in some order ("covariance:a+b")."""
    names = [t.name for t in setting.tasks]
    tensors = {"means": torch.stack([f.mean(0) for f in features.train]).float()}
    shrinkage = {}
    for order in setting.orders:
        for position in range(1, len(order)):
            known = tuple(sorted(order[: position + 1]))  # the pooled covariance does not depend on order
            key = "+".join(names[i] for i in known)
            prototypes = features.prototypes(known)
            tensors[f"covariance:{key}"] = prototypes.covariance.float().contiguous()
            shrinkage[key] = prototypes.shrinkage
    path = run_dir / "router" / "prototypes.safetensors"
    with atomic_path(path, "wb") as handle:
        handle.close()
        save_file(tensors, handle.name, metadata={"tasks": ",".join(names)})
    d = features.train[0].shape[1]
    # What a router over the whole stream keeps: one mean per task and one covariance.
    return {"file": "router/prototypes.safetensors", "bytes": path.stat().st_size,
            "values": len(names) * d + d * d, "shrinkage": shrinkage}


def degeneration_line(task_names: list[str], degeneration: list[dict[str, float]]) -> str:
    """For the log, so a collapsed model shows while the run goes: `python distinct 12%, loops 80%`."""
    return ", ".join(f"{name} distinct {d['distinct']:.0f}%, loops {d['loop']:.0f}%" for name, d in zip(task_names, degeneration))


def steps_done(record: dict) -> int:
    """The trackers' step axis: the planned steps of the tasks the job has trained. (A state saved before
    records kept `planned_steps` has the steps that ran, the same but for skipped steps.)"""
    return sum(trained.get("planned_steps", trained["steps"]) for trained in record["train"])


def tracked_scores(tasks: list[Task], row: list[Evaluation], eval_only: list[FunctionalTask],
                   eval_only_row: list[FunctionalEvaluation], routed: dict[str, RoutedRows]) -> dict[str, float]:
    """A row's scores as tracker values: `eval/<metric>/<task>`, `eval/pass_at_1/<HumanEval task>` and
    `eval_task_agnostic/<router>/<metric>/<task>`."""
    values = {f"eval/{metric}/{task.name}": score for task, e in zip(tasks, row) for metric, score in e.scores.items()}
    values |= {f"eval/pass_at_1/{task.name}": e.pass_at_1 for task, e in zip(eval_only, eval_only_row)}
    for router, routed_rows in routed.items():
        values |= {f"eval_task_agnostic/{router}/{metric}/{task.name}": score
                   for task, e in zip(tasks, routed_rows.rows[-1]) for metric, score in e.scores.items()}
    return values


def run_method_job(setting: Setting, files: JobFiles, log: Log, progress: JobProgress) -> dict:
    """Train one method with one seed through one task order, evaluating every task after every task.
    Rows and columns follow the order."""
    config, key, device = setting.config, files.key, setting.accelerator.device
    method_config = config.methods[key.method]
    order = setting.orders[key.order]
    tasks = [setting.tasks[i] for i in order]
    folder = run_folder(key.seed, key.order, len(setting.orders))
    start = base_outputs(files.run_dir)
    errors = files.run_dir / "errors" / f"{key.method}-{folder}.txt"
    errors.unlink(missing_ok=True)  # an earlier attempt's
    features = RouterFeatures(*start["features"]) if start["features"] else None
    memory = PeakMemory(device)
    memory.start()
    rows = [[start["row"][i] for i in order]]
    eval_only_rows, routed = [start["eval_only"]], {}
    record = {"seed": key.seed, "order": [t.name for t in tasks], "status": "ok", "error": None, "train": [],
              "per_task_parameters": None, "seconds": {"evaluate": 0.0, "humaneval": 0.0}}
    step_file = files.state / "step.pt"
    trackers = None

    def save_loop(position: int) -> Callable[[LoopState], None]:
        return lambda loop_state: save_torch_atomically(step_file, {"done": position, "loop": loop_state})

    def timed(phase: str, work: Callable[[], list]) -> list:
        """`work()`, its seconds added to the record's `phase`, shown in progress.json meanwhile."""
        progress.update(phase=phase)
        started = time.perf_counter()
        result = work()
        record["seconds"][phase] += time.perf_counter() - started
        return result

    try:
        set_seed(key.seed)
        method = METHODS[method_config.method].build(method_config)
        model = method.attach(copy.deepcopy(setting.base.model)).to(device)
        record["per_task_parameters"] = method.per_task_parameters
        # Per router, the rows scored without the task id; a method whose one model serves every task has none.
        routed = {r: RoutedRows([rows[0]], [[None] * len(tasks)]) for r in config.eval.routers if method.per_task_parameters}
        if routed:
            record["seconds"]["task_agnostic"] = 0.0
        state = JobState(0, record, rows, eval_only_rows, routed)
        resumed = latest_state(files)
        if resumed:
            method.load(model, resumed[0] / "method")
            state = resumed[1]
            restore_rng(state.rng)
            record, rows, eval_only_rows, routed = state.record, state.rows, state.eval_only_rows, state.routed
            log(f"resumed after task {state.done} of {len(tasks)}")
        loop = torch.load(step_file, weights_only=False) if step_file.is_file() else None
        # A resumed job's trackers go on from the step its state left off at, in the runs it opened.
        resume_step = (steps_done(record) + (loop["loop"].step if loop and loop["done"] == state.done else 0)
                       if resumed or loop else None)
        trackers = JobTrackers(config.tracking, files.run_dir, key.label(len(setting.orders)), config.name,
                               config.model_dump(mode="json"), warn=log, state=files.state, resume_step=resume_step)
        for position in range(state.done, len(tasks)):
            task = tasks[position]
            use_task = lambda j: method.use_task(model, j)  # noqa: E731
            progress.update(task=task.name, position=position, phase="train", step=0, steps=0)
            steps_before = steps_done(record)

            def on_log(point: LogPoint) -> None:
                progress.update(step=point.step, steps=point.steps)
                trackers.log({"train/loss": point.loss, "train/learning_rate": point.learning_rate,
                              "train/tokens_per_second": point.tokens_per_second}, steps_before + point.step)

            data = TaskData(position, task.splits["train"], [t.splits["train"] for t in tasks[:position]],
                            setting.base.tokenizer.pad_token_id, device)
            parameters, trained = train_method_on_task(
                method, model, data, config.train,
                learning_rate=method_config.learning_rate or config.train.learning_rate,
                accelerator=setting.accelerator, seed=key.seed * 1000 + task.index,
                log=lambda line: log(f"[{task.name}] {line}"), save_loop=save_loop(position),
                resume_from=loop["loop"] if loop and loop["done"] == position else None,
                on_log=on_log,
            )
            state.trainable.append(sum(p.numel() for p in parameters))
            if trained is not None:
                record["train"].append({
                    "task": task.name, "seconds": round(trained.seconds, 2), "steps": trained.steps,
                    "skipped_steps": trained.skipped_steps, "skipped_by_cause": trained.skipped_by_cause,
                    "tokens": trained.tokens,
                    "tokens_per_second": round(trained.tokens_per_second, 1), "final_loss": trained.final_loss,
                    "final_learning_rate": trained.final_learning_rate, "planned_steps": trained.planned_steps,
                    # Every `train.log_every` steps: the mean loss since the previous point, for the report's curves.
                    "curve": [{"step": p.step, "loss": p.loss, "learning_rate": p.learning_rate,
                               "tokens_per_second": round(p.tokens_per_second, 1)} for p in trained.curve],
                })
                if trained.failure:
                    raise MethodFailed(f"task {task.name}: {trained.failure}")
            if parameters:
                rows.append(timed("evaluate", lambda: setting.evaluate_all(model, tasks, use_task)))
                eval_only_rows.append(timed("humaneval", lambda: setting.evaluate_eval_only(model, tasks, use_task)))
                for router, routed_rows in routed.items():
                    progress.update(phase="task-agnostic")
                    started = time.perf_counter()
                    routed_rows.add(*evaluate_task_agnostic(
                        setting, features, router, model, use_task, tasks, order, position, rows[-1],
                    ), known=position + 1, seconds=time.perf_counter() - started)
                if routed:
                    record["seconds"]["task_agnostic"] = sum(r.seconds for r in routed.values())
                trackers.log(tracked_scores(tasks, rows[-1], setting.eval_only, eval_only_rows[-1], routed),
                             steps_done(record))
            else:
                rows.append(rows[-1])
                eval_only_rows.append(eval_only_rows[-1])
                for routed_rows in routed.values():
                    routed_rows.repeat()
            state.done, state.rng = position + 1, rng_states()
            save_state(files, state, method, model)
        total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        base = setting.base.parameter_count
        record["parameters"] = {
            "base": base, "total": total, "added": total - base,
            "added_percent": 100.0 * (total - base) / base, "trainable_per_task": state.trainable,
        }
        if files.checkpoint.exists():
            shutil.rmtree(files.checkpoint)  # what an interrupted attempt left half-written
        method.save(model, files.checkpoint, len(tasks))
    except MethodFailed as failure:
        record.update(status="failed", error=str(failure))
    except Exception as error:  # a method that crashes is a result to report, not a crashed run
        record.update(status="failed", error=f"{type(error).__name__}: {error}".splitlines()[0])
        write_text_atomically(errors, traceback.format_exc())
    record["seconds"] = {k: round(v, 2) for k, v in record["seconds"].items()}
    record["matrices"] = {m: [[e.scores[m] for e in row] for row in rows] for m in METRICS}
    record["degeneration"] = {d: [[e.degeneration[d] for e in row] for row in rows] for d in DEGENERATION}
    record["summary"] = summarize_run(record["matrices"]) if record["status"] == "ok" else None
    if setting.eval_only:
        record["eval_only_matrices"] = {"pass@1": [[e.pass_at_1 for e in row] for row in eval_only_rows]}
        if record["status"] == "ok":
            summaries = eval_only_summary(record["eval_only_matrices"]["pass@1"], setting.eval_only_trained_at(tasks))
            for task, summary in zip(setting.eval_only, summaries):
                record["summary"][f"pass@1 {task.name}"] = summary
    if routed:
        record["task_agnostic"] = {router: r.record(record["status"] == "ok") for router, r in routed.items()}
    record.update(memory.read())
    if trackers:
        trackers.finish(failed=record["status"] != "ok")
    write_predictions(setting, files, tasks, rows, eval_only_rows, routed)
    return record


def write_predictions(
    setting: Setting, files: JobFiles, tasks, rows: list[list[Evaluation]],
    eval_only_rows: list[list[FunctionalEvaluation]], routed: dict[str, RoutedRows],
) -> None:
    """Every row's predictions, `predictions/METHOD/FOLDER/afterI-TASK/`, and the last task-agnostic row's,
    each with the task its input was routed to."""
    split = setting.config.eval.split
    root = files.predictions
    after_names = ["start"] + [t.name for t in tasks]
    for i, (row, functional_row) in enumerate(zip(rows, eval_only_rows)):
        folder = root / f"after{i}-{after_names[i]}"
        for task, evaluation in zip(tasks, row):
            write_jsonl_atomically(folder / f"{task.name}.jsonl", [
                {"input": e.source, "reference": e.target, "prediction": p}
                for e, p in zip(task.splits[split], evaluation.predictions)
            ])
        for task, evaluation in zip(setting.eval_only, functional_row):
            write_jsonl_atomically(folder / f"{task.name}.jsonl", [
                {"task_id": t, "input": e.source, "completion": c, "passed": ok}
                for t, e, c, ok in zip(task.task_ids, task.examples, evaluation.completions, evaluation.passed)
            ])
    for router, routed_rows in routed.items():
        if routed_rows.routes:
            for task, evaluation, routes in zip(tasks, routed_rows.rows[-1], routed_rows.routes):
                write_jsonl_atomically(root / f"task-agnostic-{router}" / f"{task.name}.jsonl", [
                    {"input": e.source, "reference": e.target, "prediction": p, "routed_task": tasks[r].name}
                    for e, p, r in zip(task.splits[split], evaluation.predictions, routes)
                ])


def run_job(config: ExperimentConfig, key: JobKey, run_dir: Path, echo: bool = True) -> dict:
    """Run one job to its end and write its record.json (its record, the config fingerprint and the hash
    of every file it handed on). Returns the record. Its log goes to `jobs/.../log.txt`, and to stderr
    when `echo`. A method that fails or raises is a failed record, not an exception."""
    setting = setting_for(config)
    files = JobFiles(run_dir, key, len(setting.orders))
    files.root.mkdir(parents=True, exist_ok=True)
    files.record.unlink(missing_ok=True)  # an earlier attempt's, so that it never stands beside new files
    label = key.label(len(setting.orders))
    progress = JobProgress(files.progress, len(setting.tasks))

    with (files.root / "log.txt").open("a") as log_file:
        def log(line: str) -> None:
            line = f"[{label}] {line}" if key.method else line
            log_file.write(line + "\n")
            log_file.flush()
            if echo:
                print(line, file=sys.stderr, flush=True)

        progress.update()
        if key.method is None:
            record = run_base_job(setting, files, log)
        else:
            record = run_method_job(setting, files, log, progress)
    write_json_atomically(files.record, {"key": [key.method, key.seed, key.order],
                                         "fingerprint": fingerprint(config, key), "record": record,
                                         "files": digests(files)})
    ok = record.get("status", "ok") == "ok"
    if ok:
        shutil.rmtree(files.state, ignore_errors=True)  # a failed job keeps it: `--resume` goes on from it
    progress.update(state="done" if ok else "failed", phase=None)
    return record
