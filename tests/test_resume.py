"""Resuming a run: killed with SIGKILL at random points, a job that crashes, a config that changed."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codecl.config import load_config
from codecl.errors import UserError
from codecl.methods import METHODS
from codecl.runner import Run
from conftest import codecl

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
# Two per-task LoRA methods, one with EWC's Fisher to carry over; the prototype router; step checkpoints
# after every step, so that a kill lands mid-task as often as between tasks.
OVERRIDES = [
    "seeds=[0]", "eval.humaneval=[python]", "eval.humaneval_limit=2", "eval.routers=[prototype]",
    "train.checkpoint_every=1",
    "methods={lora: {per_task: true, r: 4}, ewc-lora: {method: ewc, base: lora, r: 4, fisher_examples: 8}}",
]
# What a rerun may change: wall-clock times and rates, memory, the history of attempts, how it ran.
MEASURED = {"created", "finished", "seconds", "tokens_per_second", "peak_memory_mb", "memory_at_start_mb",
            "sessions", "config_path", "run"}


def comparable(value):
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k not in MEASURED}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def assert_every_file_whole(run_dir: Path) -> None:
    """No temporary left, and every file reads back in its own format."""
    files = [path for path in run_dir.rglob("*") if path.is_file()]
    assert files and not [path for path in files if path.name.endswith(".tmp")]
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            assert all(json.loads(line) is not None for line in path.read_text().split("\n") if line)
        elif path.suffix == ".safetensors":
            load_file(path)
        elif path.suffix in (".pt", ".bin"):
            torch.load(path, weights_only=False)
        elif path.suffix in (".md", ".txt"):
            path.read_text(encoding="utf-8")


def start(out: Path, corpus: Path, cache: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """`codecl run` (or `--resume` once the folder holds a run) in its own process group, so that killing
    the group kills any workers it started; its stderr goes to the file returned."""
    command = ["run", "--resume", str(out), *args] if (out / "config.json").exists() else \
        ["run", str(SMOKE), f"data.path={corpus}", *OVERRIDES, *args, "--out", str(out)]
    log = out.parent / f"stderr-{time.monotonic_ns()}.txt"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "codecl.cli", *command], cwd=out.parent,
                                   stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                   env={**os.environ, "CODECL_CACHE": str(cache)})
    return process, log


def kill_after_line(started: tuple[subprocess.Popen, Path], line: int, delay: float) -> None:
    """SIGKILL to the run's process group `delay` seconds after its stderr's `line`-th line: points drawn
    along the run's own log, so that a slower or faster machine moves them with it."""
    process, log = started
    while log.read_text().count("\n") < line:
        assert process.poll() is None, f"the run ended before line {line}: nothing was tested"
        time.sleep(0.01)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill: nothing was tested"


@pytest.fixture(scope="module")
def reference(mined_corpus, smoke_run, tmp_path_factory):
    """An uninterrupted run and how many lines it logs (kill points are drawn along them). The smoke run's
    cache already holds the tiny base, so that no run here pretrains it."""
    work = tmp_path_factory.mktemp("reference")
    cache = smoke_run.parent / "cache"
    process, log = start(work / "out", mined_corpus, cache)
    assert process.wait() == 0, log.read_text()[-3000:]
    return json.loads((work / "out" / "results.json").read_text()), log.read_text().count("\n"), cache


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2))
def test_killed_twice_at_random_points_then_resumed_equals_the_uninterrupted_run(seed, reference, mined_corpus, tmp_path):
    """Four kills in all: each run is killed once, its resumed run is killed again within what is left,
    then it resumes to the end. The lines are those the uninterrupted run logged: the header's 3, the
    base model's, then the jobs' training steps and outcomes."""
    expected, lines, cache = reference
    rng = random.Random(seed)
    out = tmp_path / "out"
    first = rng.randint(3, lines - 3)
    kill_after_line(start(out, mined_corpus, cache), first, rng.uniform(0, 0.1))
    # The resumed run logs its 3 header lines, then at least what is left of the jobs.
    kill_after_line(start(out, mined_corpus, cache), rng.randint(3, 3 + (lines - first) // 2), rng.uniform(0, 0.1))

    resumed = codecl("run", "--resume", str(out), cwd=tmp_path, CODECL_CACHE=str(cache))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert comparable(results) == comparable(expected)
    assert_every_file_whole(out)


def test_a_crashed_job_is_recorded_failed_and_resume_retries_only_it(mined_corpus, tmp_path, monkeypatch):
    config = load_config(SMOKE, [f"data.path={mined_corpus}", *OVERRIDES, "seeds=[0]"])
    reference = Run(config, tmp_path / "reference", log=lambda line: None).execute()

    ewc = METHODS["ewc"].build

    def crashing(method_config):  # its attach raises, as a method's own bug would
        method = ewc(method_config)
        method.attach = lambda model: (_ for _ in ()).throw(RuntimeError("disk on fire"))
        return method

    monkeypatch.setitem(METHODS, "ewc", dataclasses.replace(METHODS["ewc"], build=crashing))
    out = tmp_path / "run"
    crashed = Run(config, out, log=lambda line: None).execute()
    failed = crashed["methods"]["ewc-lora"]["runs"][0]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: disk on fire"
    assert crashed["methods"]["lora"]["runs"][0]["status"] == "ok"
    assert "RuntimeError: disk on fire" in (out / "errors" / "ewc-lora-seed0.txt").read_text()
    assert failed["matrices"]["bleu"] == reference["methods"]["ewc-lora"]["runs"][0]["matrices"]["bleu"][:1]

    monkeypatch.undo()
    lora_record = out / "jobs" / "lora" / "seed0" / "record.json"
    before = lora_record.stat().st_mtime_ns
    lines = []
    resumed = Run(config, out, log=lines.append, resume=True).execute()
    assert lora_record.stat().st_mtime_ns == before  # kept, not run again
    assert any("1 kept from the earlier attempt" in line for line in lines)
    assert comparable(resumed) == comparable(reference)
    assert not (out / "errors" / "ewc-lora-seed0.txt").exists()  # the failed attempt's, gone with it

    # A kept job's file that no longer has its recorded hash: that job runs again, and only it.
    predictions = out / "predictions" / "lora" / "seed0" / "after2-javascript" / "python.jsonl"
    predictions.write_text(predictions.read_text()[:-20])
    ewc_record = out / "jobs" / "ewc-lora" / "seed0" / "record.json"
    ewc_before, lora_before = ewc_record.stat().st_mtime_ns, lora_record.stat().st_mtime_ns
    again = Run(config, out, log=lambda line: None, resume=True).execute()
    assert ewc_record.stat().st_mtime_ns == ewc_before and lora_record.stat().st_mtime_ns != lora_before
    assert comparable(again) == comparable(reference)
    assert json.loads(predictions.read_text().splitlines()[-1])  # whole again


def test_resuming_with_a_changed_config_is_refused_naming_the_key(mined_corpus, tmp_path):
    config = load_config(SMOKE, [f"data.path={mined_corpus}", "seeds=[0]", "eval.humaneval=[]",
                                 "methods={frozen: {}}"])
    Run(config, tmp_path / "run", log=lambda line: None).execute()
    changed = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 2.0})})
    with pytest.raises(UserError, match=r"differs from the run's at train\.epochs \(the run's: 1\.0, now: 2\.0\)"):
        Run(changed, tmp_path / "run", log=lambda line: None, resume=True).execute()
    # How it runs may change: another executor, step checkpoints.
    Run(config.model_copy(update={"train": config.train.model_copy(update={"checkpoint_every": 3})}),
        tmp_path / "run", log=lambda line: None, resume=True).execute()

    refused = codecl("run", "--resume", str(tmp_path / "run"), "eval.max_new_tokens=9", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "differs from the run's at eval.max_new_tokens (the run's: 16, now: 9)" in refused.stderr
