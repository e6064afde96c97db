"""`codecl export`: a finished run's method, for one task, as a plain Hugging Face checkpoint.

The method is rebuilt on the run's base model from its saved state; its `export` merges what it
learned for the task into stock T5 weights (LoRA merged, wider FFNs as a larger `d_ff`, added heads as
more `num_heads`, added blocks as a deeper stack). `T5ForConditionalGeneration.from_pretrained(DIR)`
then loads it without codecl. `--check` decodes the run's test inputs with the exported checkpoint and
compares with the predictions the run saved for that method after its last task.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator
from pydantic import ValidationError
from torch import nn
from transformers import T5ForConditionalGeneration

from codecl.config import ExperimentConfig
from codecl.errors import UserError
from codecl.methods import METHODS
from codecl.models.load import load_pretrained
from codecl.results import read_results, run_folder


@dataclass
class TrainedMethod:
    """One method of a finished run, rebuilt on the run's base model from its saved state."""

    config: ExperimentConfig
    task_names: list[str]  # in the order this run trained them: `use_task` and `export` take positions in it
    seed: int
    method: object  # a `codecl.methods.base.Method`
    model: nn.Module
    tokenizer: object
    folder: str  # the run's folder under checkpoints/METHOD and predictions/METHOD


def load_trained(
    run_dir: Path, method_name: str, task: str, seed: int | None = None, what: str = "export", order: int = 0,
) -> TrainedMethod:
    """The method ``method_name`` of the run in ``run_dir`` after its whole stream, for one seed and one of
    the run's task orders (an index into its `orders`); ``task`` is checked against the stream. ``what``
    names the command in error messages."""
    results = read_results(run_dir, what)
    try:
        config = ExperimentConfig(**results["config"])
    except ValidationError as error:
        raise UserError(f"{what} {run_dir}/results.json: its config no longer validates ({error.errors()[0]['msg']})") from None
    if method_name not in config.methods:
        raise UserError(f"{what}: method {method_name} is not in this run (it has {', '.join(config.methods)})")
    task_names = [t["name"] for t in results["tasks"]]
    if task not in task_names:
        raise UserError(f"{what}: task {task} is not in this run's stream ({', '.join(task_names)})")
    orders = config.stream_orders()
    if not 0 <= order < len(orders):
        raise UserError(f"{what}: --order {order}: this run has {len(orders)} task order(s), 0 to {len(orders) - 1}")
    trained_in = [task_names[i] for i in orders[order]]
    runs = {r["seed"]: r for r in results["methods"].get(method_name, {}).get("runs", [])
            if (r.get("order") or task_names) == trained_in}
    seed = seed if seed is not None else min(runs, default=config.seeds[0])
    if runs.get(seed, {}).get("status") != "ok":
        raise UserError(f"{what}: method {method_name}, seed {seed}: that run did not finish (status {runs.get(seed, {}).get('status', 'absent')})")
    base = load_pretrained(results["base_model"]["name"])
    method_config = config.methods[method_name]
    method = METHODS[method_config.method].build(method_config)
    model = method.attach(copy.deepcopy(base.model))
    folder = run_folder(seed, order, len(orders))
    method.load(model, run_dir / "checkpoints" / method_name / folder)
    return TrainedMethod(config, trained_in, seed, method, model, base.tokenizer, folder)


def export_run(
    run_dir: Path, method_name: str, task: str, out: Path, seed: int | None = None, check: bool = False, order: int = 0,
) -> str:
    trained = load_trained(run_dir, method_name, task, seed, order=order)
    plain = trained.method.export(trained.model, trained.task_names.index(task))
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out)
    trained.tokenizer.save_pretrained(out)
    lines = [f"wrote {out}: a plain {type(plain).__name__} ({sum(p.numel() for p in plain.parameters()):,} parameters)"]
    if check:
        lines.append(check_against_predictions(run_dir, trained, method_name, task, out))
    return "\n".join(lines)


def check_against_predictions(run_dir: Path, trained: TrainedMethod, method_name: str, task: str, out: Path) -> str:
    from codecl.data.tasks import build_stream
    from codecl.evaluate.decode import generate

    exported = load_pretrained(out)
    if type(exported.model) is not T5ForConditionalGeneration:
        raise UserError(f"export {out}: loads as {type(exported.model).__name__}, not a plain T5")
    config, task_names = trained.config, trained.task_names
    stream = build_stream(config.data, exported.tokenizer, config.eval.split)
    examples = next(t for t in stream if t.name == task).splits[config.eval.split]
    saved = (run_dir / "predictions" / method_name / trained.folder / f"after{len(task_names)}-{task_names[-1]}"
             / f"{task}.jsonl")
    if not saved.is_file():
        raise UserError(f"export --check: {saved} is missing: the run's predictions are needed to compare with")
    expected = [json.loads(line)["prediction"] for line in saved.open()]
    accelerator = Accelerator(mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[config.model.precision])
    exported.model.to(accelerator.device)
    predictions = generate(exported.model, exported.tokenizer, examples, config.eval, accelerator)
    same = sum(p == e for p, e in zip(predictions, expected))
    line = f"check: greedy outputs of the export on {task} {config.eval.split}: {same}/{len(expected)} equal the run's predictions"
    if same != len(expected) or len(predictions) != len(expected):
        raise UserError(f"{line}; the export does not reproduce the run")
    return line
