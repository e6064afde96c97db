"""The executors: worker processes on this machine and a local Ray cluster give exactly the inline run's
results, and the local executor shares the cores out as documented."""

import json
from pathlib import Path

import pytest

from codecl import executors
from codecl.config import RunConfig
from conftest import codecl
from test_resume import comparable

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def predictions(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): p.read_text() for p in sorted((run_dir / "predictions").rglob("*.jsonl"))}


# Three of the smoke config's methods, as it writes them: a job's results depend on its own method's config
# alone (the config fingerprint leaves the others out), so these jobs must equal the inline run's.
SUBSET = "methods={heads: {heads: 1}, ewc-lora: {method: ewc, base: lora, r: 4, fisher_examples: 8}, " \
         "replay-balanced: {method: replay, sampling: balanced, base: lora, r: 4}}"


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_every_executor_gives_the_inline_results(executor, smoke_run, mined_corpus, tmp_path):
    out = tmp_path / "out"
    done = codecl("run", str(SMOKE), f"data.path={mined_corpus}", SUBSET, "--executor", executor, "--out", str(out),
                  cwd=tmp_path, CODECL_CACHE=str(smoke_run.parent / "cache"))  # the inline run's tiny base
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    inline = json.loads((smoke_run / "results.json").read_text())
    assert results["sessions"][0]["executor"].startswith(f"{executor}:")
    assert results["config"]["run"]["executor"] == executor and inline["config"]["run"]["executor"] == "inline"
    # The run as a whole, less its methods (the subset) and the p-values against the best (which depend on them).
    assert list(results["methods"]) == ["heads", "ewc-lora", "replay-balanced"]  # config order, whichever ended first
    def whole(run: dict) -> dict:
        return comparable({k: v for k, v in run.items() if k not in ("methods", "config", "git")})
    assert whole(results) == whole(inline)
    for method, entry in results["methods"].items():
        ours, theirs = (comparable({k: v for k, v in e.items() if k != "bleu_vs_best"})
                        for e in (entry, inline["methods"][method]))
        assert ours == theirs, method
    inline_predictions = {path: text for path, text in predictions(smoke_run).items()
                          if path.split("/")[1] in results["methods"]}
    assert predictions(out) == inline_predictions and len(inline_predictions) > 40


@pytest.mark.parametrize("run, jobs, cores, expected", [
    ({}, 36, 2, (2, 1)),  # one single-threaded worker per core
    ({}, 36, 16, (16, 1)),
    ({}, 1, 16, (1, 1)),  # never more workers than jobs, and the threads stay what results depend on
    ({"threads": 2}, 36, 8, (4, 2)),  # 8 cores shared out: 4 workers of 2 threads
    ({"threads": 3}, 36, 2, (1, 3)),  # at least one worker
    ({"workers": 4, "threads": 3}, 36, 8, (4, 3)),  # as asked, even oversubscribed
])
def test_local_layout_shares_out_the_cores(run, jobs, cores, expected, monkeypatch):
    monkeypatch.setattr(executors, "cpu_cores", lambda: cores)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    workers, threads, gpus = executors.local_layout(RunConfig(**run), jobs)
    assert (workers, threads) == expected and gpus == []


def test_local_layout_gives_each_worker_its_own_gpu(monkeypatch):
    monkeypatch.setattr(executors, "cpu_cores", lambda: 16)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 4)
    assert executors.local_layout(RunConfig(), 36) == (4, 1, [0, 1, 2, 3])
    assert executors.local_layout(RunConfig(threads=4), 2) == (2, 4, [0, 1])
    assert executors.local_layout(RunConfig(workers=6), 36) == (6, 1, [0, 1, 2, 3, 0, 1])  # round-robin


def test_ray_missing_is_one_clear_line(monkeypatch):
    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "ray" else real_import(name, *a, **k))
    with pytest.raises(Exception, match=r"pip install 'codecl\[ray\]'"):
        executors._import_ray()
