"""How much a base model's pretraining buys: score after fine-tuning against pretraining minutes and size.

    python benchmarks/base_frontier.py BASE_DIR [BASE_DIR ...] [--config default] [key=value ...]

Each BASE_DIR is a Hugging Face folder: a base `codecl pretrain` wrote (its `codecl_base.json` gives the
pretraining time) or one of its snapshots (`codecl pretrain --snapshot-every N`, with `snapshot.json`).
Every base gets the same run: the config's first task only, `full-ft`, one seed, no HumanEval; the
table gives the test split's sacreBLEU, CodeBLEU, syntax, distinct and loop shares before and after
fine-tuning, so a collapsed base shows as one (distinct low, loops high), not as a low score.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CODECL = Path(sys.executable).with_name("codecl")


def pretraining_minutes(base: Path) -> float | None:
    for name, key in (("snapshot.json", "pretraining_seconds"), ("codecl_base.json", "seconds")):
        if (base / name).is_file():
            return json.loads((base / name).read_text()).get(key, 0) / 60
    return None


def steps(base: Path) -> int | None:
    for name, key in (("snapshot.json", "step"), ("codecl_base.json", "steps")):
        if (base / name).is_file():
            return json.loads((base / name).read_text()).get(key)
    return None


def run_on(base: Path, config: str, overrides: list[str], out: Path) -> dict:
    command = [str(CODECL), "run", "--out", str(out), config, f"model.name={base}", "seeds=[0]",
               "eval.humaneval=[]", "methods={full-ft: {learning_rate: 0.002}}", *overrides]
    done = subprocess.run([*command, "data.stream=[python]"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{base}: codecl run failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads((out / "results.json").read_text())


def row(base: Path, results: dict) -> list[str]:
    run = results["methods"]["full-ft"]["runs"][0]
    matrices, degeneration = run["matrices"], run["degeneration"]
    cells = [base.name if base.name.startswith("step-") else f"{base.name} (final)",
             str(steps(base) or "—"), f"{pretraining_minutes(base) or 0:.1f}",
             f"{results['base_model']['parameters'] / 1e6:.1f}M"]
    for point in (0, 1):  # before any training, after the task
        cells += [f"{matrices['bleu'][point][0]:.2f}", f"{matrices['codebleu'][point][0]:.2f}",
                  f"{matrices['syntax'][point][0]:.0f}",
                  f"{degeneration['distinct'][point][0]:.0f}", f"{degeneration['loop'][point][0]:.0f}"]
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("items", nargs="+", metavar="BASE_DIR or key=value")
    parser.add_argument("--config", default="default")
    args = parser.parse_args()
    bases = [Path(item) for item in args.items if "=" not in item]
    overrides = [item for item in args.items if "=" in item]
    header = ["base", "steps", "pretraining min", "params"] + [
        f"{name} {when}" for when in ("base", "fine-tuned") for name in ("BLEU", "CodeBLEU", "syntax %", "distinct %", "loop %")
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    with tempfile.TemporaryDirectory() as scratch:
        for i, base in enumerate(bases):
            results = run_on(base.resolve(), args.config, overrides, Path(scratch) / f"run{i}")
            print("| " + " | ".join(row(base, results)) + " |", flush=True)


if __name__ == "__main__":
    main()
