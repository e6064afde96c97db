"""Results files that describe themselves: config, git commit, package versions, seeds, metric variants.

`results.json` is rewritten atomically after every finished (method, seed), so an interrupted run keeps
everything it finished, and `codecl report` can rebuild the report from it at any time.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterator

from codecl import metrics
from codecl.errors import UserError
from codecl.statistics import t_interval

PACKAGES = (
    "codecl", "torch", "transformers", "peft", "accelerate", "tokenizers", "sacrebleu",
    "tree-sitter", "tree-sitter-python", "tree-sitter-javascript", "tree-sitter-go", "tree-sitter-java",
    "tree-sitter-php", "tree-sitter-ruby", "pydantic", "numpy",
)
SUMMARY_KEYS = ("average", "backward_transfer", "forgetting", "forward_transfer")


def package_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> dict[str, str | bool | None]:
    """The commit of the codecl source tree this runs from, if it is a git checkout."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None}


def run_folder(seed: int, order: int, order_count: int) -> str:
    """The folder of one (seed, order) run under checkpoints/METHOD/ and predictions/METHOD/: `seedS`, or
    `seedS-orderK` when the run has several task orders (K indexes `orders`)."""
    return f"seed{seed}" if order_count == 1 else f"seed{seed}-order{order}"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# Every file of a run is written beside its final path under a name ending in TEMPORARY, then renamed onto
# it (atomic on POSIX): a run killed at any instant leaves whole files and, at worst, temporaries, which
# `--resume` deletes.
TEMPORARY = ".tmp"
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: Path, mode: str = "w") -> Iterator:
    """An open temporary file that replaces `path` when the block ends without an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY, delete=False) as handle:
        os.chmod(handle.name, 0o666 & ~_UMASK)  # as open() would make it, not the temporary file's 0600
        try:
            yield handle
        except BaseException:
            handle.close()
            os.unlink(handle.name)
            raise
    os.replace(handle.name, path)


def read_results(run_dir: Path, command: str) -> dict:
    """A run folder's results.json; one line naming the file where there is none or it is not JSON."""
    path = run_dir / "results.json"
    if not path.is_file():
        raise UserError(f"{command} {run_dir}: no results.json in it (expected a folder written by `codecl run`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{command} {path}: not valid JSON (line {error.lineno}: {error.msg})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{command} {path}: not readable as JSON text ({error})") from None


def write_json_atomically(path: Path, data: dict) -> None:
    with atomic_path(path) as handle:
        json.dump(data, handle, indent=2, allow_nan=False, default=str)
        handle.write("\n")


def write_jsonl_atomically(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_path(path) as handle:
        handle.write(text)


def save_torch_atomically(path: Path, data) -> None:
    """`torch.save`, atomically (a job's resumable state: tensors, RNG states, its rows so far)."""
    import torch

    with atomic_path(path, "wb") as handle:
        torch.save(data, handle)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def summarize_run(matrices: dict[str, list[list[float]]]) -> dict[str, dict[str, float | None]]:
    """The CL summary (average, BWT, forgetting, FWT) of every metric's accuracy matrix, over the tasks the
    metric applies to: a column with no score in any row (CodeBLEU of a code -> docstring task) is left out,
    so it cannot void the others' summary; a column that misses some rows only still voids it."""
    summaries = {}
    for metric, matrix in matrices.items():
        scored = [j for j in range(len(matrix[0])) if any(row[j] is not None for row in matrix)]
        summaries[metric] = metrics.summarize(matrix, scored if scored else None)
    return summaries


def aggregate_seeds(runs: list[dict]) -> dict[str, dict[str, dict]]:
    """Mean ± 95% t-interval and n over the seeds that finished, per metric and summary key."""
    return aggregate_summaries([run["summary"] for run in runs if run["status"] == "ok"])


def aggregate_task_agnostic(runs: list[dict]) -> dict[str, dict[str, dict[str, dict]]]:
    """`aggregate_seeds` of each router's task-agnostic summaries, over the runs that finished."""
    finished = [run for run in runs if run["status"] == "ok" and "task_agnostic" in run]
    if not finished:
        return {}
    return {
        router: aggregate_summaries([run["task_agnostic"][router]["summary"] for run in finished])
        for router in finished[0]["task_agnostic"]
    }


def aggregate_summaries(summaries: list[dict]) -> dict[str, dict[str, dict]]:
    """Mean ± 95% t-interval and n of `summarize_run`'s values, per metric and summary key."""
    if not summaries:
        return {}
    aggregate: dict[str, dict[str, dict]] = {}
    for metric in summaries[0]:
        aggregate[metric] = {}
        for key in SUMMARY_KEYS:
            values = [summary[metric][key] for summary in summaries if summary[metric][key] is not None]
            aggregate[metric][key] = t_interval(values).as_dict() if values else {"mean": None, "ci95": None, "n": 0}
    return aggregate
