"""Task-agnostic inference: a router picks, for each input alone, the trained task whose parameters decode it.

Two routers:

- `prototype` (the default). Features are the frozen base model's encoder states, mean-pooled; each task
  is the mean of its training inputs' features, and an input goes to the nearest mean in Mahalanobis
  distance under one covariance shared by the tasks, as in EPI (Wang et al., ACL 2023, "Rehearsal-free
  Continual Language Learning via Efficient Parameter Isolation") and MoCL (Wang et al., NAACL 2024).
  The base never changes, so the features are the same for every method and seed.
- `loss`, as AdapterCL picks the adapter under which the input is least perplexing (Madotto et al.,
  EMNLP 2021, "Continual Learning in Task-Oriented Dialogue Systems"). An encoder-decoder has no target
  at inference, so each task scores its own greedy output instead (`output_nll`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from accelerate import Accelerator
from torch import nn

from codecl.data.batching import collate
from codecl.data.tasks import Example, Task
from codecl.evaluate.decode import DEGENERATION, METRICS, Evaluation, Generation, generations, score
from codecl.evaluate.degeneration import distinct_share, loop_share
from codecl.results import summarize_run

if TYPE_CHECKING:
    from codecl.setting import Setting

ROUTER_SAMPLE_SEED = 0  # which training inputs estimate the prototype router, the same in every run


def sample_inputs(examples: Sequence[Example], limit: int, seed: int = 0) -> list[Example]:
    """At most `limit` of `examples`, drawn without replacement by a fixed seed (all of them when fewer)."""
    if len(examples) <= limit:
        return list(examples)
    return random.Random(seed).sample(list(examples), limit)


@torch.no_grad()
def encoder_features(model: nn.Module, examples: Sequence[Example], pad_id: int, batch_size: int,
                     device: torch.device) -> torch.Tensor:
    """(n, d) float64: the encoder's last hidden states averaged over each input's non-pad tokens,
    f(x) = sum_t m_t h_t / sum_t m_t, in the examples' order."""
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].source_ids))  # little padding
    features = torch.empty(len(examples), model.config.d_model, dtype=torch.float64)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch = collate([examples[i].source_ids for i in indices], [[0]] * len(indices), pad_id)
        mask = batch["attention_mask"].to(device)
        hidden = model.get_encoder()(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
        pooled = (hidden.double() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        features[indices] = pooled.cpu()
    return features


def ledoit_wolf(residuals: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The covariance of centred `residuals` (n, d) shrunk toward a scaled identity, and the shrinkage.

    S = X^T X / n, mu = tr(S) / d, Sigma' = (1 - a) S + a mu I with Ledoit & Wolf's estimate of the
    a that minimises the expected squared Frobenius error (Ledoit & Wolf 2004, "A well-conditioned
    estimator for large-dimensional covariance matrices", as in scikit-learn's `ledoit_wolf`):
    a = min(b2, d2) / d2 with d2 = ||S - mu I||_F^2 / d and b2 = (sum_i ||x_i||^4 / n - ||S||_F^2) / (n d).
    Why shrink: with d >= n, S is singular and Mahalanobis distance undefined; with n a few times d,
    its small eigenvalues are underestimated and their directions dominate the distance. A data-driven a
    is strong when examples are few per dimension and fades as they grow, which a fixed a cannot do
    across the tiny model (d = 32, tens of examples) and CodeT5 (d = 512 or 768, a thousand per task).
    """
    n, d = residuals.shape
    covariance = residuals.T @ residuals / n
    mu = torch.trace(covariance) / d
    if mu <= 0:  # every input equals its task's mean: no spread to measure, distances are Euclidean
        return torch.eye(d, dtype=covariance.dtype), 1.0
    target = mu * torch.eye(d, dtype=covariance.dtype)
    distance = ((covariance - target) ** 2).sum() / d
    spread = ((residuals**2).sum(1) ** 2).sum() / n - (covariance**2).sum()
    spread = spread / (n * d)
    shrinkage = 0.0 if distance <= 0 else float(min(spread, distance) / distance)
    return (1 - shrinkage) * covariance + shrinkage * target, shrinkage


def mahalanobis(features: torch.Tensor, means: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
    """(n, k) squared distances D2[i, k] = (x_i - mu_k)^T Sigma^{-1} (x_i - mu_k), through the Cholesky
    factor Sigma = L L^T: D2 = ||L^{-1} (x_i - mu_k)||^2 (no explicit inverse)."""
    factor = torch.linalg.cholesky(covariance)
    differences = features[:, None, :] - means[None, :, :]  # (n, k, d)
    whitened = torch.linalg.solve_triangular(factor, differences.reshape(-1, features.shape[1]).T, upper=False)
    return (whitened**2).sum(0).reshape(features.shape[0], means.shape[0])


@dataclass(frozen=True)
class Prototypes:
    """The `prototype` router over some known tasks: their mean features and the shrunk shared covariance."""

    means: torch.Tensor  # (k, d), one row per known task
    covariance: torch.Tensor  # (d, d)
    shrinkage: float

    def route(self, features: torch.Tensor) -> list[int]:
        """Per input, the known task (row of `means`) at the smallest Mahalanobis distance."""
        return mahalanobis(features, self.means, self.covariance).argmin(1).tolist()


def build_prototypes(train_features: Sequence[torch.Tensor]) -> Prototypes:
    """Per task the mean of its training features; one covariance pooled within the tasks,
    S = 1/N sum_k sum_i (x_ki - mu_k)(x_ki - mu_k)^T, shrunk by `ledoit_wolf`. A shared covariance
    (linear discriminant analysis) needs N samples for d^2 / 2 values instead of per task."""
    means = torch.stack([f.mean(0) for f in train_features])
    residuals = torch.cat([f - mean for f, mean in zip(train_features, means)])
    covariance, shrinkage = ledoit_wolf(residuals)
    return Prototypes(means, covariance, shrinkage)


@torch.no_grad()
def output_nll(model: nn.Module, examples: Sequence[Example], generated: Sequence[Generation], eos_id: int,
               pad_id: int, batch_size: int, accelerator: Accelerator) -> list[float]:
    """Per input x, the mean per-token negative log-likelihood of the model's own greedy output y,
    -1/|y| sum_t log p(y_t | y_<t, x), teacher-forced in one forward. y is the generated tokens with the
    EOS that ended them (none when the token limit did), so stopping is scored too."""
    model.eval()
    targets = [g.token_ids + ([] if g.hit_limit else [eos_id]) for g in generated]
    order = sorted(range(len(examples)), key=lambda i: (len(targets[i]), len(examples[i].source_ids)))
    nll = [0.0] * len(examples)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch = collate([examples[i].source_ids for i in indices], [targets[i] for i in indices], pad_id)
        batch = {key: value.to(accelerator.device) for key, value in batch.items()}
        with accelerator.autocast():
            logits = model(**batch).logits.float()
        labels = batch["labels"]
        per_token = nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        means = per_token.sum(1) / (labels != -100).sum(1)
        for position, i in enumerate(indices):
            nll[i] = float(means[position])
    return nll


def route_by_loss(nll: Sequence[Sequence[float]]) -> list[int]:
    """Per input, the known task k with the lowest `nll[k][input]` (the first on a tie)."""
    return torch.tensor(nll).argmin(0).tolist()



def router_accuracy(routes: Sequence[Sequence[int]], known: int) -> list[float | None]:
    """Per task j (column), the percent of its inputs routed to its own parameters, 100 |{i: r_ji = j}| / n_j;
    None for a task not trained yet (j >= known: it has none) and for every task when fewer than 2 are known."""
    if known < 2:
        return [None] * len(routes)
    return [100.0 * sum(r == j for r in column) / len(column) if j < known else None for j, column in enumerate(routes)]


def confusion_counts(routes: Sequence[Sequence[int]], known: int) -> list[list[int]]:
    """counts[j][k]: how many inputs of task j went to task k's parameters, for the `known` trained tasks."""
    return [[sum(r == k for r in column) for k in range(known)] for column in routes]


@dataclass
class RouterFeatures:
    """Per stream task, the frozen base model's features of its sampled training inputs and of its
    evaluation inputs. The base never changes, so they are the same for every method and seed."""

    train: list[torch.Tensor]
    evaluation: list[torch.Tensor]
    built: dict[tuple[int, ...], Prototypes] = field(default_factory=dict)

    @classmethod
    def compute(cls, setting: Setting) -> RouterFeatures:
        config, base = setting.config, setting.base

        def features(examples):
            return encoder_features(base.model, examples, base.tokenizer.pad_token_id, config.eval.batch_size,
                                    setting.accelerator.device)

        limit, split = config.eval.router_examples, config.eval.split
        return cls([features(sample_inputs(t.splits["train"], limit, ROUTER_SAMPLE_SEED)) for t in setting.tasks],
                   [features(t.splits[split]) for t in setting.tasks])

    def prototypes(self, known: tuple[int, ...]) -> Prototypes:
        """The prototype router over the stream tasks `known`; its routes are positions in `known`."""
        if known not in self.built:
            self.built[known] = build_prototypes([self.train[i] for i in known])
        return self.built[known]


@dataclass
class RoutedRows:
    """One router's task-agnostic rows of one run, shaped like the task-aware ones."""

    rows: list[list[Evaluation]]
    accuracy: list[list[float | None]]
    routes: list[list[int]] | None = None  # the last row's: per task (column), per input, the task routed to
    seconds: float = 0.0

    def add(self, row: list[Evaluation], routes: list[list[int]], known: int, seconds: float) -> None:
        self.rows.append(row)
        self.accuracy.append(router_accuracy(routes, known))
        self.routes = routes
        self.seconds += seconds

    def repeat(self) -> None:
        self.rows.append(self.rows[-1])
        self.accuracy.append(self.accuracy[-1])

    def record(self, ok: bool) -> dict:
        matrices = {m: [[e.scores[m] for e in row] for row in self.rows] for m in METRICS}
        return {
            "matrices": matrices,
            "degeneration": {d: [[e.degeneration[d] for e in row] for row in self.rows] for d in DEGENERATION},
            "summary": summarize_run(matrices) if ok else None,
            "router_accuracy": self.accuracy,
            "confusion": confusion_counts(self.routes, len(self.routes)) if self.routes else None,
            "seconds": round(self.seconds, 2),
        }


def route(
    setting: Setting, features: RouterFeatures | None, router: str, model, use_task: Callable[[int], None],
    tasks: list[Task], order: list[int], position: int, aware_row: list[Evaluation],
) -> tuple[list[list[int]], dict[tuple[int, int], list[Generation]]]:
    """Per task of `tasks` (column), each evaluation input's routed task among the trained 0..`position`;
    and for the loss router, its decodes by (task, column). A column's decodes with the parameters the
    oracle gives it are the task-aware row's own, reused."""
    config, tokenizer, accelerator = setting.config.eval, setting.base.tokenizer, setting.accelerator
    columns = [task.splits[config.split] for task in tasks]
    known = position + 1
    if router == "prototype":
        prototypes = features.prototypes(tuple(order[:known]))
        return [prototypes.route(features.evaluation[i]) for i in order], {}
    decoded, nll = {}, {}
    for k in range(known):
        use_task(k)
        for j, task in enumerate(tasks):
            decoded[k, j] = aware_row[j].generations if k == min(j, position) else generations(
                model, tokenizer, columns[j], config, accelerator, task.target_language)
            nll[k, j] = output_nll(model, columns[j], decoded[k, j], tokenizer.eos_token_id, tokenizer.pad_token_id,
                                   config.batch_size, accelerator)
    return [route_by_loss([nll[k, j] for k in range(known)]) for j in range(len(tasks))], decoded


def evaluate_task_agnostic(
    setting: Setting, features: RouterFeatures | None, router: str, model, use_task: Callable[[int], None],
    tasks: list[Task], order: list[int], position: int, aware_row: list[Evaluation],
) -> tuple[list[Evaluation], list[list[int]]]:
    """Every task of `tasks` scored without its id: `router` sends each input to one of the tasks trained
    so far (0..`position`), whose parameters decode it. Returns the row and the routes.

    An input routed where the oracle sends it (its own task's parameters; for a task not trained yet,
    `use_task`'s choice, the most recent: min(j, position)) keeps its task-aware prediction from
    `aware_row`. So a perfect router scores exactly the task-aware row, and the prototype router costs
    only the decoding of the inputs it misroutes; the loss router has decoded every input with every
    known task's parameters to score them anyway."""
    config = setting.config.eval
    columns = [task.splits[config.split] for task in tasks]
    if position == 0:  # one known task: every input goes to it, where the oracle sends it too
        return aware_row, [[0] * len(column) for column in columns]
    own = [min(j, position) for j in range(len(tasks))]
    routes, decoded = route(setting, features, router, model, use_task, tasks, order, position, aware_row)

    def decode(k: int, j: int, indices: list[int]) -> list[Generation]:
        if (k, j) in decoded:
            return [decoded[k, j][i] for i in indices]
        # The token budget stays the scored task's (max_new_tokens_per_language): it belongs to the
        # evaluation of that task's references, not to the model's choice.
        return generations(model, setting.base.tokenizer, [columns[j][i] for i in indices], config,
                           setting.accelerator, tasks[j].target_language)

    misrouted: dict[tuple[int, int], Generation] = {}  # (column, input) -> its decoding
    for k in range(position + 1):
        wanted = {j: [i for i, r in enumerate(routes[j]) if r == k != own[j]] for j in range(len(tasks))}
        if not any(wanted.values()):
            continue
        use_task(k)
        for j, indices in wanted.items():
            if indices:
                misrouted.update(zip([(j, i) for i in indices], decode(k, j, indices)))
    row = []
    for j, task in enumerate(tasks):
        if all(r == own[j] for r in routes[j]):
            row.append(aware_row[j])
            continue
        every = aware_row[j].generations  # the task-aware tokens, for counting loops
        every = [misrouted.get((j, i), g) for i, g in enumerate(every)]
        predictions = [aware_row[j].predictions[i] if r == own[j] else every[i].text
                       for i, r in enumerate(routes[j])]
        degeneration = {"distinct": distinct_share(predictions),
                        "loop": loop_share([g.token_ids for g in every], [g.hit_limit for g in every])}
        row.append(replace(score(predictions, columns[j], task.target_language), degeneration=degeneration,
                           generations=every))
    return row, routes
