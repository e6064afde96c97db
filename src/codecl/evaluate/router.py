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
from dataclasses import dataclass
from typing import Sequence

import torch
from accelerate import Accelerator
from torch import nn

from codecl.data.batching import collate
from codecl.data.tasks import Example
from codecl.evaluate.decode import Generation


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
