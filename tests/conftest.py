import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "codesearchnet"


def codecl(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """The real command line, in a child process; keyword arguments are extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "codecl.cli", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **env}
    )


@pytest.fixture(scope="session")
def mined_corpus(tmp_path_factory) -> Path:
    """A small corpus mined by `codecl data mine` from synthetic sources."""
    from corpus import write_sources

    root = tmp_path_factory.mktemp("sources")
    python_dir, javascript_dir = write_sources(root)
    out = root / "corpus"
    done = codecl("data", "mine", "--out", str(out), "--no-stdlib", "--no-npm",
                  "--python-dir", str(python_dir), "--javascript-dir", str(javascript_dir), cwd=root)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module", autouse=True)
def collections_skip_the_imports():
    """The training loop frees memory after every task (accelerate's free_memory), and gc.collect walks every
    object alive: the 400,000 that importing torch, transformers and PEFT left, 0.2 s a task, most of a
    two-step task's time. Frozen, they are skipped (as `setting_for` does in a run); what the tests create
    is still collected."""
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test builds into its own cache, never the user's."""
    monkeypatch.setenv("CODECL_CACHE", str(tmp_path_factory.mktemp("codecl-cache")))


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"no CodeSearchNet fixtures at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_base():
    """A very small random T5 and a byte-level BPE tokenizer: the shape of the `tiny` preset."""
    import torch

    from codecl.config import TinyModelConfig
    from codecl.models.tiny import build_model, train_tokenizer

    texts = [f"def f{i}(x):\n    return x + {i}\n" for i in range(50)] + ["function g(a) { return a * 2; }"] * 5
    tokenizer = train_tokenizer(texts, vocab_size=320)
    torch.manual_seed(0)
    model = build_model(TinyModelConfig(d_model=32, d_ff=64, num_heads=2, num_layers=2), tokenizer)
    return model.eval(), tokenizer


@pytest.fixture
def tiny_batch(tiny_base):
    _, tokenizer = tiny_base
    sources = tokenizer(["add one to x", "double the value a"], padding=True, return_tensors="pt")
    labels = tokenizer(["def f(x):\n    return x + 1", "function g(a) { return a * 2; }"], padding=True, return_tensors="pt")
    label_ids = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
    return {"input_ids": sources["input_ids"], "attention_mask": sources["attention_mask"], "labels": label_ids}


@pytest.fixture(scope="session")
def smoke_run(mined_corpus, tmp_path_factory) -> Path:
    """`codecl run configs/smoke.yaml` (the inline executor) on the mined corpus, once for every test."""
    work = tmp_path_factory.mktemp("run")
    done = codecl("run", str(REPO / "configs" / "smoke.yaml"), f"data.path={mined_corpus}", "--out", str(work / "out"),
                  cwd=work, CODECL_CACHE=str(work / "cache"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| rank | method |" in done.stdout
    assert done.stdout.rstrip().endswith(f"the report with its figures: {work / 'out' / 'report.html'}")
    return work / "out"
