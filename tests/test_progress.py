"""The grid's live view: its fraction and ETA by hand, its plain lines for logs, its live header."""

import io
import json
import re

import pytest

from codecl.progress import GridProgress, clock_time, eta_seconds, grid_fraction, job_fraction, read_progress

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def running(position: int, tasks: int, phase: str, step: int = 0, steps: int = 0, task: str = "python") -> dict:
    return {"state": "running", "task": task, "position": position, "tasks": tasks, "phase": phase,
            "step": step, "steps": steps, "updated": 0.0}


def write(path, progress) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(progress if isinstance(progress, str) else json.dumps(progress))


def ticking(*times: float):
    """A clock that returns `times` in turn, then the last one for ever."""
    remaining = list(times)
    return lambda: remaining.pop(0) if len(remaining) > 1 else remaining[0]


def test_job_fraction_by_hand():
    assert job_fraction(None) == 0.0
    assert job_fraction({"state": "done"}) == 1.0
    assert job_fraction({"state": "failed"}) == 1.0
    assert job_fraction(running(1, 2, "train", 5, 10)) == pytest.approx(0.75)  # (1 + 5/10) / 2
    assert job_fraction(running(0, 3, "train", 3, 4)) == pytest.approx(0.25)  # (0 + 3/4) / 3
    assert job_fraction(running(1, 2, "evaluate")) == pytest.approx(0.5)  # (1 + 0) / 2
    # Steps count only while training, even if a job leaves them in its file.
    assert job_fraction(running(1, 4, "humaneval", 9, 10)) == pytest.approx(0.25)


def test_grid_fraction_and_eta_by_hand_with_resumed_jobs():
    jobs = [{"state": "done"}, running(1, 2, "train", 5, 10), None]  # None: its file is missing
    # One job kept from an earlier attempt: (1 + 0.75 + 0 + 1) / 4.
    assert grid_fraction(jobs, already_done=1) == pytest.approx(0.6875)
    start = grid_fraction([None, None, None], already_done=1)
    assert start == pytest.approx(0.25)
    # 100 s for 0.4375 of the grid, so 0.3125 more takes 100 * 0.3125 / 0.4375 = 71.43 s.
    assert eta_seconds(0.6875, start, 100.0) == pytest.approx(71.428571)
    assert eta_seconds(0.25, start, 100.0) is None  # no progress since the start: no rate yet
    assert eta_seconds(1.0, start, 100.0) == 0.0
    assert (clock_time(71.43), clock_time(3725), clock_time(None)) == ("1:11", "1:02:05", "—")


def test_unreadable_files_read_as_not_started(tmp_path):
    assert read_progress(tmp_path / "missing.json") is None
    write(tmp_path / "partial.json", '{"state": "running", "posi')
    assert read_progress(tmp_path / "partial.json") is None
    write(tmp_path / "wrong.json", {**running(0, 2, "train"), "step": "five"})
    assert read_progress(tmp_path / "wrong.json") is None
    write(tmp_path / "nan.json", {**running(0, 2, "train"), "step": float("nan")})
    assert read_progress(tmp_path / "nan.json") is None
    write(tmp_path / "list.json", "[1, 2]")
    assert read_progress(tmp_path / "list.json") is None
    write(tmp_path / "state.json", {**running(0, 2, "train"), "state": "paused"})
    assert read_progress(tmp_path / "state.json") is None
    write(tmp_path / "good.json", running(0, 2, "train", 5, 10))
    assert read_progress(tmp_path / "good.json")["step"] == 5


def test_plain_mode_writes_only_the_orchestrators_lines(tmp_path):
    paths = {label: tmp_path / label / "progress.json" for label in ("a", "b", "c")}
    stream = io.StringIO()  # not a terminal, so plain by default
    # Started at t=1000 with nothing written and one job kept from before: f0 = 1/4.
    view = GridProgress(paths, stream=stream, already_done=1, clock=ticking(1000, 1100, 1200, 1300))
    with view:
        view.message("grid: 3 jobs, 1 kept")
        write(paths["a"], {"state": "done"})
        write(paths["b"], running(1, 2, "train", 5, 10))
        # t=1100, f = (1 + 0.75 + 0 + 1) / 4 = 0.6875: ETA 100 * 0.3125 / 0.4375 = 71 s.
        view.finished("a", "a: done")
        # b's file is caught half written, so its last good read (0.75) stands; c wrote "failed".
        write(paths["b"], '{"state": "running", "pos')
        write(paths["c"], {"state": "failed"})
        # t=1200, f = (1 + 0.75 + 1 + 1) / 4 = 0.9375: ETA 200 * 0.0625 / 0.6875 = 18 s.
        view.finished("c", "c: failed")
        # t=1300: the executor says b ended, though its file never said so.
        view.finished("b", "b: done")
    assert stream.getvalue() == (
        "grid: 3 jobs, 1 kept\n"
        "[2/4] a: done · ETA 1:11\n"
        "[3/4] c: failed · ETA 0:18\n"
        "[4/4] b: done · ETA 0:00\n"
    )
    with pytest.raises(ValueError, match="not a job"):
        view.finished("d", "d: done")


def test_live_mode_shows_counts_and_running_jobs(tmp_path):
    labels = ["lora seed 0", "lora seed 1", "lora seed 2", "ewc seed 0"]
    paths = {label: tmp_path / str(index) / "progress.json" for index, label in enumerate(labels)}
    write(paths["lora seed 0"], {"state": "done"})
    write(paths["ewc seed 0"], {"state": "failed"})
    stream = io.StringIO()
    # Two of four jobs had ended when the view started at t=0: f0 = 0.5.
    view = GridProgress(paths, stream=stream, live=True, poll_seconds=60, clock=ticking(0, 30))
    write(paths["lora seed 1"], running(0, 2, "train", 5, 10))
    with view:
        pass
    output = stream.getvalue()
    assert ESCAPE.search(output)  # it drew on the terminal
    text = ESCAPE.sub("", output)
    # At t=30, f = (1 + 0.25 + 0 + 1) / 4 = 0.5625: ETA 30 * 0.4375 / 0.0625 = 210 s.
    assert "jobs: 2 done, 1 running, 1 left (1 failed) · elapsed 0:30 · ETA 3:30" in text
    row = next(line for line in text.splitlines() if "lora seed 1" in line)
    assert re.search(r"lora seed 1\s+python 1/2\s+train\s+.*5/10", row)
    assert "lora seed 2" not in text  # not started: counted as left, no row


def test_a_failing_render_keeps_the_view_and_never_raises(tmp_path, monkeypatch):
    stream = io.StringIO()
    view = GridProgress({"a": tmp_path / "a.json"}, stream=stream, live=True, poll_seconds=60)
    with view:
        monkeypatch.setattr(GridProgress, "_header", lambda self, snapshot: 1 / 0)
        view.message("still here")
    text = ESCAPE.sub("", stream.getvalue())
    assert "still here" in text
    assert "jobs: 0 done, 0 running, 1 left" in text  # the last good view
    assert "progress view: ZeroDivisionError" in text
