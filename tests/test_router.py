"""Task-agnostic inference: the routers on constructed cases, and through the runner on the smoke config."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from torch import nn

from codecl.config import EvalConfig, load_config
from codecl.data.tasks import Example
from codecl.evaluate.decode import METRICS, evaluate_task, generations, score
from codecl.evaluate.router import (
    build_prototypes, confusion_counts, ledoit_wolf, mahalanobis, output_nll, route_by_loss, router_accuracy,
)
import codecl.evaluate.router
from codecl.runner import Run

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def gaussian_tasks(means: list[torch.Tensor], count: int, seed: int) -> list[torch.Tensor]:
    """`count` features per task from N(mean, C), C = M^T M with one random, full M for every call."""
    d = means[0].shape[0]
    mixing = torch.randn(d, d, generator=torch.Generator().manual_seed(1234), dtype=torch.float64) / math.sqrt(d)
    generator = torch.Generator().manual_seed(seed)
    return [mean + torch.randn(count, d, generator=generator, dtype=torch.float64) @ mixing for mean in means]


def test_prototype_router_separates_separable_tasks_even_with_more_dimensions_than_examples():
    d = 96  # 2 x 40 training examples: the pooled covariance has rank 78 < d and needs the shrinkage
    means = [torch.zeros(d, dtype=torch.float64), torch.full((d,), 1.0, dtype=torch.float64)]
    prototypes = build_prototypes(gaussian_tasks(means, 40, seed=0))
    assert 0 < prototypes.shrinkage < 1
    evaluated = gaussian_tasks(means, 200, seed=1)
    routes = [prototypes.route(features) for features in evaluated]
    assert router_accuracy(routes, 2) == [100.0, 100.0]
    assert confusion_counts(routes, 2) == [[200, 0], [0, 200]]


def test_prototype_router_is_at_chance_on_two_tasks_drawn_from_the_same_data():
    """Whatever the prototypes, an input of either task goes to task 0 with the same probability p, so the
    accuracy over both tasks' inputs, (p + (1 - p)) / 2, has mean 1/2 and standard deviation at most
    sqrt(1/4 / 1000) = 1.6% over their 2 x 500 inputs: it stays within 3 of them, 4.7 points of 50%."""
    d = 16
    means = [torch.zeros(d, dtype=torch.float64)] * 2
    prototypes = build_prototypes(gaussian_tasks(means, 200, seed=2))
    routes = [prototypes.route(features) for features in gaussian_tasks(means, 500, seed=3)]
    accuracy = sum(router_accuracy(routes, 2)) / 2
    assert abs(accuracy - 50.0) <= 3 * 100 * math.sqrt(0.25 / 1000)


def test_mahalanobis_distance_by_hand():
    """Sigma = [[2, 1], [1, 2]], Sigma^-1 = 1/3 [[2, -1], [-1, 2]]: (1, 1) is at 2/3 and (1, -1) at 2,
    though both are sqrt(2) away in Euclidean distance."""
    covariance = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    features = torch.tensor([[1.0, 1.0], [1.0, -1.0], [3.0, 1.0]], dtype=torch.float64)
    means = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    # (3, 1) - (2, 0) = (1, 1): 2/3; (3, 1) - (0, 0): (2*9 - 2*3 + 2*1) / 3 = 14/3.
    expected = torch.tensor([[2 / 3, 2.0], [2.0, 2 / 3], [14 / 3, 2 / 3]], dtype=torch.float64)
    assert torch.allclose(mahalanobis(features, means, covariance), expected)


def test_ledoit_wolf_shrinkage_by_hand():
    """X = (±2, 0), (0, ±1): S = diag(2, 1/2), mu = 5/4, d2 = ||S - mu I||^2 / 2 = 9/16,
    b2 = (sum ||x||^4 / n - ||S||^2) / (n d) = (34/4 - 17/4) / 8 = 17/32, a = b2 / d2 = 17/18."""
    residuals = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-2.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    covariance, shrinkage = ledoit_wolf(residuals)
    assert shrinkage == pytest.approx(17 / 18)
    a = 17 / 18
    expected = torch.diag(torch.tensor([(1 - a) * 2 + a * 1.25, (1 - a) * 0.5 + a * 1.25], dtype=torch.float64))
    assert torch.allclose(covariance, expected)


class ScaledHead(nn.Module):
    """The LM head with its logits multiplied by `scale`: the same greedy output, sharper or flatter."""

    def __init__(self, head: nn.Module, scale: float):
        super().__init__()
        self.head, self.scale = head, scale

    def forward(self, hidden):
        return self.head(hidden) * self.scale


def test_loss_router_picks_the_parameters_under_which_the_own_output_is_likelier(tiny_base):
    model, tokenizer = tiny_base
    model = copy.deepcopy(model)
    texts = ["add one to x", "double the value a", "return x", "def f(x):"]
    examples = [Example(t, t, tokenizer(t)["input_ids"], tokenizer(t)["input_ids"]) for t in texts]
    config, accelerator = EvalConfig(max_new_tokens=6, batch_size=3), Accelerator(cpu=True)
    original = model.lm_head
    heads = [ScaledHead(original, 1.0), ScaledHead(original, 3.0)]  # task 1's parameters are sharper

    def use_task(k):
        model.lm_head = heads[k]

    decoded, nll = [], []
    for k in range(2):
        use_task(k)
        decoded.append(generations(model, tokenizer, examples, config, accelerator))
        nll.append(output_nll(model, examples, decoded[-1], tokenizer.eos_token_id, tokenizer.pad_token_id, 3, accelerator))
    assert [g.token_ids for g in decoded[0]] == [g.token_ids for g in decoded[1]]  # scaling keeps the argmax
    assert route_by_loss(nll) == [1, 1, 1, 1]
    assert route_by_loss(nll[::-1]) == [0, 0, 0, 0]  # follows the parameters, not the position

    # Each value is the model's own mean token loss on its output (with EOS when it emitted one).
    use_task(0)
    for example, generated, value in zip(examples, decoded[0], nll[0]):
        labels = generated.token_ids + ([] if generated.hit_limit else [tokenizer.eos_token_id])
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([example.source_ids]), labels=torch.tensor([labels])).loss
        assert value == pytest.approx(float(loss), rel=1e-5)
    model.lm_head = original


def smoke_config(mined_corpus, *overrides: str, **eval_options):
    smoke = load_config(SMOKE, [f"data.path={mined_corpus}", "seeds=[0]", "eval.humaneval=[]", *overrides])
    return smoke.model_copy(update={
        "methods": {"lora": smoke.methods["lora"], "frozen": smoke.methods["frozen"]},
        "eval": smoke.eval.model_copy(update=eval_options),
    })


THREE_TASKS = "data.stream=[python, javascript, {language: python, format: code-to-docstring}]"


def test_task_agnostic_rows_reuse_the_oracle_and_decode_the_misrouted(monkeypatch, mined_corpus, tmp_path):
    """With a router that is always right, the task-agnostic matrices are the task-aware ones. With one that
    sends every javascript input to task 0 (python), javascript scores what its inputs score decoded with
    task 0's parameters. That router also sends the odd inputs of python to task 1 and those of the third
    task to task 0; their even inputs keep the task-aware predictions."""
    odd_to = {0: 1, 2: 0}  # column -> the task its odd inputs go to
    references = {}

    def route(setting, features, router, model, use_task, tasks, order, position, aware_row):
        columns = [task.splits[setting.config.eval.split] for task in tasks]
        own = [min(j, position) for j in range(len(tasks))]
        if router == "prototype":  # the oracle
            return [[own[j]] * len(column) for j, column in enumerate(columns)], {}
        use_task(0)
        references[1, position] = evaluate_task(
            model, setting.base.tokenizer, columns[1], tasks[1].target_language, setting.config.eval, setting.accelerator)
        for j, k in odd_to.items():
            use_task(k)
            odd = [e for i, e in enumerate(columns[j]) if i % 2]
            references[j, position] = generations(
                model, setting.base.tokenizer, odd, setting.config.eval, setting.accelerator, tasks[j].target_language)
        return [[0] * len(column) if j == 1 else [odd_to[j] if i % 2 else own[j] for i in range(len(column))]
                for j, column in enumerate(columns)], {}

    monkeypatch.setattr(codecl.evaluate.router, "route", route)
    out = tmp_path / "run"
    # A base pretrained long enough to write a different output for each input (the smoke base writes one
    # for all), so that a prediction taken from the wrong input or parameters shows.
    config = smoke_config(mined_corpus, THREE_TASKS, "model.tiny.pretrain_steps=400", "model.tiny.num_layers=2")
    experiment = Run(config, out, log=lambda line: None)
    results = experiment.execute()
    run = results["methods"]["lora"]["runs"][0]
    assert run["status"] == "ok", run["error"]
    tasks = experiment.tasks

    oracle = run["task_agnostic"]["prototype"]  # row 2 scores the third task, not trained yet, with task 1's
    assert oracle["matrices"] == run["matrices"] and oracle["degeneration"] == run["degeneration"]
    assert oracle["summary"] == {m: s for m, s in run["summary"].items() if m in METRICS}
    assert oracle["router_accuracy"] == [[None] * 3, [None] * 3, [100.0, 100.0, None], [100.0] * 3]

    routed = run["task_agnostic"]["loss"]
    assert {m: routed["matrices"][m][:2] for m in METRICS} == {m: run["matrices"][m][:2] for m in METRICS}
    javascript = references[1, 2]
    assert {m: routed["matrices"][m][-1][1] for m in METRICS} == javascript.scores
    assert {d: routed["degeneration"][d][-1][1] for d in ("distinct", "loop")} == javascript.degeneration
    written = out / "predictions" / "lora" / "seed0" / "task-agnostic-loss"
    rows = [json.loads(line) for line in (written / "javascript.jsonl").read_text().splitlines()]
    assert [row["prediction"] for row in rows] == javascript.predictions
    assert {row["routed_task"] for row in rows} == {"python"}

    changed = []  # whether the other parameters change the predictions (so reusing instead would show)
    for j, k in odd_to.items():
        name = tasks[j].name
        aware = [json.loads(line)["prediction"] for line in
                 (out / "predictions" / "lora" / "seed0" / f"after3-{tasks[2].name}" / f"{name}.jsonl").read_text().splitlines()]
        odd = iter(g.text for g in references[j, 2])
        expected = [next(odd) if i % 2 else prediction for i, prediction in enumerate(aware)]
        assert len(set(expected)) >= 4  # inputs tell apart, so a prediction of the wrong input shows
        changed.append(expected != aware)
        rows = [json.loads(line) for line in (written / f"{name}.jsonl").read_text().splitlines()]
        assert [row["prediction"] for row in rows] == expected
        assert [row["routed_task"] for row in rows] == [name, tasks[k].name] * 4
        assembled = score(expected, tasks[j].splits["test"], tasks[j].target_language)
        assert {m: routed["matrices"][m][-1][j] for m in METRICS} == assembled.scores
    assert any(changed)
    assert routed["router_accuracy"][-1] == [50.0, 0.0, 50.0]
    assert routed["confusion"] == [[4, 4, 0], [8, 0, 0], [4, 0, 4]]


def test_results_carry_the_task_agnostic_schema(mined_corpus, tmp_path):
    """Three tasks, the third with natural-language targets: after task 2 of 3 the router knows two tasks
    and the third task's inputs go to one of them."""
    lines = []
    config = smoke_config(mined_corpus, THREE_TASKS, router_examples=20)
    results = Run(config, tmp_path / "run", log=lines.append).execute()
    names = [task["name"] for task in results["tasks"]]
    assert len(names) == 3

    routers = results["evaluation"]["routers"]
    assert list(routers) == ["prototype", "loss"]
    assert routers["prototype"]["examples"]["per_task"] == dict.fromkeys(names, 20)
    stored = load_file(tmp_path / "run" / "router" / "prototypes.safetensors")
    d = stored["means"].shape[1]
    assert f"d={d})" in routers["prototype"]["features"]
    known = ["python+javascript", "+".join(names)]
    assert stored["means"].shape == (3, d) and set(stored) == {"means", *(f"covariance:{k}" for k in known)}
    assert all(stored[f"covariance:{k}"].shape == (d, d) for k in known)
    assert routers["prototype"]["stored"]["values"] == 3 * d + d * d
    assert set(routers["prototype"]["stored"]["shrinkage"]) == set(known)

    frozen = results["methods"]["frozen"]
    assert "task_agnostic" not in frozen["runs"][0] and "summary_task_agnostic" not in frozen
    entry = results["methods"]["lora"]
    run = entry["runs"][0]
    assert run["status"] == "ok", run["error"]
    assert set(entry["summary_task_agnostic"]) == {"prototype", "loss"}
    for router, routed in run["task_agnostic"].items():
        assert set(routed["matrices"]) == set(run["matrices"]) and set(routed["degeneration"]) == set(run["degeneration"])
        for matrix in [*routed["matrices"].values(), *routed["degeneration"].values()]:
            assert len(matrix) == 4 and all(len(row) == 3 for row in matrix)
        assert routed["matrices"]["bleu"][:2] == run["matrices"]["bleu"][:2]  # one known task: the oracle's rows
        assert routed["matrices"]["syntax"][-1][2] is None  # natural-language targets, as in the oracle's row
        assert set(routed["summary"]) == set(METRICS)
        assert set(entry["summary_task_agnostic"][router]["bleu"]) == set(entry["summary"]["bleu"])
        accuracy = routed["router_accuracy"]
        assert accuracy[:2] == [[None] * 3] * 2 and accuracy[2][2] is None  # a task not trained has no parameters
        assert all(0 <= value <= 100 for value in accuracy[2][:2] + accuracy[3])
        assert [sum(row) for row in routed["confusion"]] == [8, 8, 8]
        assert accuracy[3] == [100 * routed["confusion"][j][j] / 8 for j in range(3)]
        written = tmp_path / "run" / "predictions" / "lora" / "seed0" / f"task-agnostic-{router}"
        rows = [json.loads(line) for line in (written / f"{names[2]}.jsonl").read_text().splitlines()]
        assert len(rows) == 8 and {row["routed_task"] for row in rows} <= set(names)
        assert sum(line.startswith(f"[lora seed 0] task-agnostic ({router}): average BLEU") for line in lines) == 1
    assert run["seconds"]["task_agnostic"] == pytest.approx(sum(r["seconds"] for r in run["task_agnostic"].values()), abs=0.02)
