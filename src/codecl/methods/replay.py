"""`replay`: experience replay from a small episodic memory (Chaudhry et al. 2019, "On Tiny Episodic
Memories in Continual Learning", arXiv:1902.10486), on full fine-tuning or one shared LoRA adapter.

The memory is filled after each task from that task's training examples, so while task i trains it
holds examples of tasks before i only. Every batch the loop draws gets k remembered examples added,
drawn uniformly without replacement with the loop's seeded generator:

    k = min(|memory|, max(1, round_half_up(replay_ratio · |batch|)))    (no replay while memory is empty)

The memory holds at most `buffer_size` examples, or by default 2% of the training examples seen so
far, rounded up, at least 1: ceil(2·n / 100) with n counted over the stream. Two ways to fill it:

- `reservoir`: Vitter's Algorithm R (1985) over every training example in stream order: example n
  enters with probability b/n for a bound b, into a free slot if there is one, else replacing a
  uniformly chosen member. With a fixed bound, every example seen is then in memory with probability
  b/n. The default bound grows with n, which Algorithm R does not cover: example n uses the bound as it
  stands after n examples, so the memory stays a near-uniform sample that runs about 5% under its
  bound (simulated, 5 tasks of 2,000 examples: 33, 38, 39, 40, 40 members per task where a uniform
  200 would hold 40 each). Filling a grown bound at once would not do: the slots would all go to the
  newest task.
- `balanced`: an equal share of the bound per task seen (shares differ by at most one, the earlier
  tasks taking the remainder), each share a uniform sample of its task; when a task arrives, older
  shares shrink by dropping random members. A share never grows: its task's other examples are gone.

Filling draws from `random.Random(MEMORY_SEED + task index)`, so a memory depends on the stream only,
never on the run's seed. `save` writes the memory (texts and token ids) to `replay_memory.json` beside
the inner method's files, so a loaded method continues identically.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from codecl.errors import UserError
from codecl.methods.base import register_method
from codecl.methods.on_base import OnBaseConfig, build_base

if TYPE_CHECKING:  # codecl.data imports the config, which imports the methods
    from codecl.data.tasks import Example

MEMORY = "replay_memory.json"
MEMORY_SEED = 1902_10486


class ReplayConfig(OnBaseConfig):
    buffer_size: int | None = Field(
        None, ge=1, description="examples the memory holds at most (null: 2% of the examples seen so far, rounded up)"
    )
    sampling: Literal["reservoir", "balanced"] = Field(
        "reservoir", description="reservoir: uniform over the stream (Algorithm R); balanced: an equal share per task"
    )
    replay_ratio: float = Field(
        0.25, gt=0, description="remembered examples added to each batch, as a fraction of it (rounded half up, at least 1)"
    )


def memory_bound(buffer_size: int | None, seen: int) -> int:
    """`buffer_size`, or ceil(2% of `seen`) and at least 1, in integers (0.02 * 350 is 7.000000000000001)."""
    return buffer_size if buffer_size is not None else max(1, (2 * seen + 99) // 100)


def replay_count(batch_size: int, replay_ratio: float, memory_size: int) -> int:
    """How many remembered examples join a batch of `batch_size`: round half up, at least 1, at most all."""
    return 0 if memory_size == 0 else min(memory_size, max(1, math.floor(replay_ratio * batch_size + 0.5)))


def reservoir_add(items: list, item, n: int, bound: int, rng: random.Random) -> None:
    """Algorithm R (Vitter 1985), one step: `item` is the n-th of the stream and `bound` the bound after n
    items. It enters with probability min(1, bound / n), into a free slot, else over a uniform member."""
    if rng.random() * n < bound:
        if len(items) < bound:
            items.append(item)
        else:
            items[rng.randrange(len(items))] = item


def balanced_shares(shares: list[list], new: list, bound: int, rng: random.Random) -> list[list]:
    """One more share for `new`; every share cut to bound // tasks, the first bound % tasks one more."""
    tasks = len(shares) + 1
    targets = [bound // tasks + (j < bound % tasks) for j in range(tasks)]
    return [rng.sample(share, min(len(share), target)) for share, target in zip(shares + [new], targets)]


class Replay:
    def __init__(self, config: ReplayConfig):
        self.config = config
        self.per_task_parameters = False
        self.inner = build_base(config)
        self.seen = 0  # training examples streamed so far, for the default bound
        self.reservoir: list[tuple[int, Example]] = []  # reservoir: (task index, example)
        self.shares: list[list[tuple[int, Example]]] = []  # balanced: one share per task, in stream order

    @property
    def memory(self) -> list[tuple[int, Example]]:
        """(task index, example) pairs remembered now."""
        if self.config.sampling == "reservoir":
            return self.reservoir
        return [pair for share in self.shares for pair in share]

    def attach(self, model):
        return self.inner.attach(model)

    def begin_task(self, model, task_index: int):
        return self.inner.begin_task(model, task_index)

    def train_examples(self, task):
        return self.inner.train_examples(task)

    def mix_batch(self, examples: list[Example], rng: random.Random) -> list[Example]:
        memory = self.memory
        count = replay_count(len(examples), self.config.replay_ratio, len(memory))
        return examples + [example for _, example in rng.sample(memory, count)]

    def extra_loss(self, model, batch):
        return None

    def end_task(self, model, task) -> None:
        self.inner.end_task(model, task)
        rng = random.Random(MEMORY_SEED + task.index)
        if self.config.sampling == "reservoir":
            for example in task.examples:
                self.seen += 1
                bound = memory_bound(self.config.buffer_size, self.seen)
                reservoir_add(self.reservoir, (task.index, example), self.seen, bound, rng)
        else:
            self.seen += len(task.examples)
            bound = memory_bound(self.config.buffer_size, self.seen)
            pairs = [(task.index, example) for example in task.examples]
            self.shares = balanced_shares(self.shares, pairs, bound, rng)

    def use_task(self, model, task_index: int) -> None:
        self.inner.use_task(model, task_index)

    def save(self, model, directory: Path, task_count: int) -> None:
        self.inner.save(model, directory, task_count)
        directory.mkdir(parents=True, exist_ok=True)
        rows = [{"task": task, **asdict(example)} for task, example in self.memory]
        state = {"sampling": self.config.sampling, "seen": self.seen, "tasks": len(self.shares), "memory": rows}
        (directory / MEMORY).write_text(json.dumps(state))

    def load(self, model, directory: Path) -> None:
        self.inner.load(model, directory)
        if not (directory / MEMORY).is_file():
            raise UserError(f"checkpoint {directory}: no {MEMORY} in it (the replay memory)")
        from codecl.data.tasks import Example  # here, not at the top: see TYPE_CHECKING above

        state = json.loads((directory / MEMORY).read_text())
        if state["sampling"] != self.config.sampling:
            raise UserError(f"checkpoint {directory}: its memory was filled by {state['sampling']} sampling, "
                            f"the config asks for {self.config.sampling}")
        pairs = [(row.pop("task"), Example(**row)) for row in state["memory"]]
        self.seen = state["seen"]
        if self.config.sampling == "reservoir":
            self.reservoir = pairs
        else:
            self.shares = [[(t, e) for t, e in pairs if t == task] for task in range(state["tasks"])]

    def export(self, model, task_index: int):
        return self.inner.export(model, task_index)


register_method("replay", ReplayConfig, Replay, "experience replay from a small memory (reservoir or balanced)")
