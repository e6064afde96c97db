"""Where a run's jobs go: `inline` (this process, one after another), `local` (worker processes on this
machine, each with its own torch threads or GPU) or `ray` (Ray tasks on a Ray cluster). Each yields
`(key, record or exception)` as jobs end, and the results are the same whichever runs them: a job is a
function of the config and its key alone (`job.run_job`)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Iterator

from codecl.config import ExperimentConfig, RunConfig
from codecl.errors import UserError
from codecl.job import run_job
from codecl.job_state import JobKey

Outcome = tuple[JobKey, "dict | BaseException"]


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def local_layout(run: RunConfig, jobs: int) -> tuple[int, int, list[int]]:
    """(workers, torch threads per worker, the GPU of each worker) for the `local` executor. By default
    one worker per GPU, else as many `run.threads`-thread workers as the cores hold: on the 2-core
    reference machine two 1-thread jobs get through the demo 1.25x faster than one 2-thread job (README,
    Running the grid). More workers than GPUs share them round-robin."""
    import torch

    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    workers = max(1, min(run.workers or len(gpus) or cpu_cores() // run.threads, jobs))
    return workers, run.threads, [gpus[i % len(gpus)] for i in range(workers)] if gpus else []


def execute_job(config_tree: dict, key: JobKey, run_dir: str, echo: bool, threads: int | None = None) -> dict:
    """A worker's entry point: the job, from plain data that pickles."""
    from codecl.cli import quiet_libraries

    quiet_libraries()  # a worker does not go through `codecl`'s main
    if threads:
        import torch

        torch.set_num_threads(threads)
    return run_job(ExperimentConfig(**config_tree), key, Path(run_dir), echo)


def _start_worker(threads: int, gpus) -> None:
    if gpus is not None:  # before anything touches CUDA in this process, so that it sees its one GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    import torch

    torch.set_num_threads(threads)


class Executor:
    """`with executor: executor.map(keys)`; one pool (or Ray connection) serves every `map`."""

    def __init__(self, config: ExperimentConfig, run_dir: Path, echo: bool, job_count: int):
        self.config, self.run_dir, self.echo, self.job_count = config, run_dir, echo, job_count
        self.tree = config.model_dump(mode="json")
        self.kind = config.run.executor
        self.pool, self.started_ray = None, False
        self.workers, self.threads, self.gpus = 1, None, []
        self.description = "inline: one process"

    def start_pool(self) -> None:
        """The worker processes; again after one died (a dead worker breaks its whole pool)."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        queue = None
        if self.gpus:
            queue = multiprocessing.get_context("spawn").Queue()
            for gpu in self.gpus:
                queue.put(gpu)
        # spawn, not fork: a forked child would inherit this process's torch threads and CUDA state.
        self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start_worker, initargs=(self.threads, queue))

    def __enter__(self) -> Executor:
        if self.kind == "inline":
            import torch

            # Every executor runs a job on `run.threads` threads: on the CPU the results depend on it.
            self.threads_before = torch.get_num_threads()
            torch.set_num_threads(self.config.run.threads)
            self.description = f"inline: one process, {self.config.run.threads} torch thread{'s' * (self.config.run.threads > 1)}"
        elif self.kind == "local":
            self.workers, self.threads, self.gpus = workers, threads, gpus = local_layout(self.config.run, self.job_count)
            self.start_pool()
            self.description = (f"local: {workers} worker{'s' * (workers > 1)} x {threads} torch "
                                f"thread{'s' * (threads > 1)}" + (", one GPU each" if gpus else ""))
        elif self.kind == "ray":
            self.ray = _import_ray()
            if not self.ray.is_initialized():
                self.started_ray = True
                address = self.config.run.address
                self.ray.init(address=address, include_dashboard=False, log_to_driver=self.echo,
                              **({} if address else {"num_cpus": cpu_cores()}))
            resources = self.ray.cluster_resources()
            self.description = (f"ray: {self.config.run.address or 'a local cluster'} "
                                f"({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs); "
                                f"each job {self.config.run.num_cpus:g} CPUs, {self.config.run.num_gpus:g} GPUs, "
                                f"{self.config.run.threads} torch threads")
        return self

    def __exit__(self, *exc_info) -> None:
        if self.kind == "inline":
            import torch

            torch.set_num_threads(self.threads_before)
        if self.pool is not None:
            self.pool.shutdown(wait=exc_info[0] is None, cancel_futures=True)
        if self.started_ray:
            self.ray.shutdown()

    def map(self, keys: list[JobKey]) -> Iterator[Outcome]:
        """Every job of `keys`, yielded as it ends with its record, or the exception that ended it."""
        if self.kind == "inline":
            for key in keys:
                try:
                    yield key, run_job(self.config, key, self.run_dir, self.echo)
                except Exception as error:  # the job's own failures are records; this is what escaped them
                    yield key, error
        elif self.kind == "local":
            yield from self._local(keys)
        else:
            yield from self._ray(keys)

    def _local(self, keys: list[JobKey]) -> Iterator[Outcome]:
        """A worker that dies (killed, out of memory) breaks the pool and every job in it. The jobs it broke
        go to a new pool once, where they go on from their checkpoints; a job caught in a second break is
        failed, so that one job that kills its worker cannot stop the grid."""
        broken_once: set[JobKey] = set()
        pending = {self.pool.submit(execute_job, self.tree, key, str(self.run_dir), self.echo): key for key in keys}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            broken = []
            for future in done:
                key = pending.pop(future)
                try:
                    yield key, future.result()
                except BrokenProcessPool as error:
                    if key in broken_once:
                        yield key, error
                    else:
                        broken.append(key)
                except Exception as error:
                    yield key, error
            if broken:
                broken_once.update(broken)
                again = broken + [pending.pop(future) for future in list(pending)]
                self.start_pool()
                pending = {self.pool.submit(execute_job, self.tree, key, str(self.run_dir), self.echo): key for key in again}

    def _ray(self, keys: list[JobKey]) -> Iterator[Outcome]:
        run = self.config.run
        remote = self.ray.remote(num_cpus=run.num_cpus, num_gpus=run.num_gpus)(execute_job)
        threads = run.threads
        # Absolute: a worker on another machine has another working directory.
        run_dir = str(self.run_dir.resolve())
        pending = {remote.remote(self.tree, key, run_dir, self.echo, threads): key for key in keys}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            key = pending.pop(done[0])
            try:
                yield key, self.ray.get(done[0])
            except Exception as error:  # RayTaskError wraps what the job raised; WorkerCrashedError, ...
                yield key, error


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("run.executor: ray needs Ray installed: pip install 'codecl[ray]'") from None
    return ray


def describe_error(error: BaseException) -> str:
    """One line for a job that an executor could not finish."""
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    return text[0] if text else type(error).__name__
