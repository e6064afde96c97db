"""Length-grouped batches: pairs of similar length share a batch, so little of it is padding.

Random pad-to-longest batches of docstring→code pairs waste most of their tokens on padding, since
function lengths are long-tailed (`benchmarks/padding.py` measures it). Following the usual
"mega-batch" recipe (as in Hugging Face's LengthGroupedSampler), examples are shuffled, cut into
chunks of `batch_size * group_factor`, sorted by length inside a chunk and split into batches, and the
batches are shuffled: similar lengths together, yet a different order every epoch. The training loop
sorts by target length first, then source length: the decoder side costs the most per padded token.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

import torch


def length_grouped_batches(
    lengths: Sequence[Any], batch_size: int, rng: random.Random, group_factor: int = 50
) -> list[list[int]]:
    """Batches of indices; `lengths` are sort keys (ints, or tuples such as (target, source) lengths)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * group_factor
    batches = []
    for start in range(0, len(order), chunk):
        group = sorted(order[start : start + chunk], key=lambda i: lengths[i], reverse=True)
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of a batch's padded token slots that are padding: 1 - sum(len) / sum(max_len * size)."""
    used = sum(lengths[i] for batch in batches for i in batch)
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return 1.0 - used / padded if padded else 0.0


def collate(sources: list[list[int]], targets: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest in the batch; padded label positions are -100 so the loss skips them."""
    width = max(map(len, sources))
    input_ids = torch.full((len(sources), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(sources):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    labels = torch.full((len(targets), max(map(len, targets))), -100, dtype=torch.long)
    for row, ids in enumerate(targets):
        labels[row, : len(ids)] = torch.tensor(ids)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
