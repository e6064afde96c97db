"""A live view of a grid of jobs, read from the progress file that each job writes.

The orchestrator hears nothing from a job between its start and its end: the job may run in a worker
process or on another machine of a Ray cluster. So each job rewrites its own `progress.json`
atomically, and this view polls those files. On a terminal the view is a rich `Live` display: a header
and one row per running job. Elsewhere (CI logs, or `live=False`) it writes only the orchestrator's own
lines, one to a line, so that a log holds no cursor movement and no redraws.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

FINISHED = ("done", "failed")
_NUMBERS = ("position", "tasks", "step", "steps")


def read_progress(path: Path) -> dict | None:
    """A job's progress, or None when its file is missing, partly written or not in the schema."""
    try:
        progress = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    numbers = [progress.get(key, 0) for key in _NUMBERS] if isinstance(progress, dict) else [None]
    if all(isinstance(number, (int, float)) and math.isfinite(number) for number in numbers):
        return progress if progress.get("state") in ("running", *FINISHED) else None
    return None


def job_fraction(progress: dict | None) -> float:
    """How much of one job is done: 1 once finished, 0 before it starts, else
    `(position + step/steps) / tasks`, where `step/steps` counts only while training."""
    if progress is None:
        return 0.0
    if progress["state"] in FINISHED:
        return 1.0
    tasks, steps = progress.get("tasks", 0), progress.get("steps", 0)
    if tasks <= 0:
        return 0.0
    within = progress.get("step", 0) / steps if progress.get("phase") == "train" and steps > 0 else 0.0
    return min(max((progress.get("position", 0) + min(max(within, 0.0), 1.0)) / tasks, 0.0), 1.0)


def grid_fraction(progress: Iterable[dict | None], already_done: int = 0) -> float:
    """How much of the grid is done: the mean of `job_fraction` over its jobs, where each of the
    `already_done` jobs kept from an earlier attempt counts 1."""
    fractions = [job_fraction(job) for job in progress]
    total = len(fractions) + already_done
    return (sum(fractions) + already_done) / total if total else 1.0


def eta_seconds(fraction: float, start_fraction: float, elapsed: float) -> float | None:
    """Seconds left at the rate seen since the view started, `elapsed * (1 - f) / (f - f0)`.

    `f0`, the fraction done when the view started, keeps an earlier attempt's jobs out of the rate;
    None until there is progress to extrapolate from.
    """
    if fraction <= start_fraction:
        return None
    return elapsed * (1.0 - fraction) / (fraction - start_fraction)


def clock_time(seconds: float | None) -> str:
    """M:SS, H:MM:SS from an hour on, and a dash when unknown."""
    if seconds is None:
        return "—"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class GridProgress:
    """The orchestrator's view of its grid: `with GridProgress(jobs) as view:`, then `view.message(line)`
    for its own lines and `view.finished(label, line)` as each job ends.

    `jobs` maps a label to that job's progress file, for the jobs this attempt runs; `already_done`
    counts the jobs kept from an earlier attempt (resume), shown as done but outside the ETA's rate.
    The live display is the default when `stream` is a terminal.
    """

    def __init__(self, jobs: dict[str, Path], *, stream: TextIO | None = None, live: bool | None = None,
                 poll_seconds: float = 0.5, already_done: int = 0, clock: Callable[[], float] = time.monotonic):
        self.jobs = {label: Path(path) for label, path in jobs.items()}
        self.stream = sys.stderr if stream is None else stream
        self.already_done = already_done
        self.clock = clock
        self._lock = threading.Lock()  # the poller thread and the orchestrator both read the files
        self._last_good: dict[str, dict | None] = dict.fromkeys(self.jobs)
        self._ended: set[str] = set()
        self.started = clock()
        self.start_fraction = grid_fraction(self._poll().values(), already_done)
        self._shown: RenderableType = Text("")
        live = self.stream.isatty() if live is None else live
        # Live polls through `_render` on its own refresh thread, every `poll_seconds`.
        self._live = Live(console=Console(file=self.stream, force_terminal=True), get_renderable=self._render,
                          refresh_per_second=1 / poll_seconds) if live else None

    def __enter__(self) -> GridProgress:
        if self._live is not None:
            self._live.start(refresh=True)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._live is not None:
            self._live.stop()  # leaves the last view on screen

    def message(self, line: str) -> None:
        """Prints an orchestrator line, above the live view when there is one."""
        if self._live is not None:
            self._live.console.print(Text(line))  # Text, so a "[...]" in the line is not read as markup
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def finished(self, label: str, line: str) -> None:
        """Counts the job `label` as ended and prints `[done/total] line · ETA M:SS`."""
        if label not in self.jobs:
            raise ValueError(f"{label!r} is not a job of this grid: {sorted(self.jobs)}")
        with self._lock:
            self._ended.add(label)
        counts, _, eta = self._tally(self._poll())
        self.message(f"[{counts['done']}/{len(self.jobs) + self.already_done}] {line} · ETA {clock_time(eta)}")

    def _poll(self) -> dict[str, dict | None]:
        """Every job's progress: a fresh read where the file parses, else the last good read."""
        snapshot = {}
        with self._lock:
            for label, path in self.jobs.items():
                progress = read_progress(path) or self._last_good[label]
                self._last_good[label] = progress
                if label in self._ended and (progress is None or progress["state"] not in FINISHED):
                    # The executor's word wins: the job may have died before writing it, or its files
                    # may sit on a worker machine that this process cannot read.
                    progress = {"state": "done"}
                snapshot[label] = progress
        return snapshot

    def _tally(self, snapshot: dict[str, dict | None]) -> tuple[dict[str, int], float, float | None]:
        """Jobs done (failed and kept ones included), running, left and failed; seconds elapsed; the ETA."""
        states = [progress["state"] if progress else None for progress in snapshot.values()]
        counts = {"done": self.already_done + sum(state in FINISHED for state in states),
                  "running": states.count("running"), "left": states.count(None), "failed": states.count("failed")}
        elapsed = self.clock() - self.started
        fraction = grid_fraction(snapshot.values(), self.already_done)
        return counts, elapsed, eta_seconds(fraction, self.start_fraction, elapsed)

    def _header(self, snapshot: dict[str, dict | None]) -> str:
        """`jobs: D done, R running, L left (F failed) · elapsed M:SS · ETA M:SS`, "(F failed)" only when F > 0."""
        counts, elapsed, eta = self._tally(snapshot)
        failures = f" ({counts['failed']} failed)" if counts["failed"] else ""
        return (f"jobs: {counts['done']} done, {counts['running']} running, {counts['left']} left{failures}"
                f" · elapsed {clock_time(elapsed)} · ETA {clock_time(eta)}")

    def _render(self) -> RenderableType:
        """The header and a row per running job. It runs on Live's refresh thread, where an exception
        would end the display and come back at exit, so a failure keeps the last view and says why."""
        try:
            snapshot = self._poll()
            rows = Table.grid(padding=(0, 2))
            for label, progress in snapshot.items():
                if progress is not None and progress["state"] == "running":
                    rows.add_row(*_row(label, progress))
            self._shown = Group(Text(self._header(snapshot), style="bold"), rows)
            return self._shown
        except Exception as error:  # a display fault must never stop the grid
            return Group(self._shown, Text(f"progress view: {error!r}", style="dim"))


def _row(label: str, progress: dict) -> list[RenderableType]:
    """Label, task (position+1/tasks), phase, and a bar with step/steps while training."""
    task = f"{progress.get('task') or '—'} {progress.get('position', 0) + 1}/{progress.get('tasks', 0)}"
    phase, step, steps = progress.get("phase") or "", progress.get("step", 0), progress.get("steps", 0)
    cells: list[RenderableType] = [Text(str(label)), Text(task), Text(str(phase))]
    if phase == "train" and steps > 0:
        return [*cells, ProgressBar(total=steps, completed=step, width=24), Text(f"{step}/{steps}")]
    return [*cells, Text(""), Text("")]
