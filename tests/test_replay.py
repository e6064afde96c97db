"""Replay's memory: its bound, the uniformity of its reservoir, balanced shares, what joins a batch, and a
checkpoint that continues identically. Most of it is pure Python: the memory needs no model."""

import copy
import random

import pytest
import torch
from accelerate import Accelerator

from codecl.config import TrainConfig
from codecl.data.tasks import Example
from codecl.methods import METHODS
from codecl.methods.base import TaskData
from codecl.methods.replay import memory_bound, replay_count, reservoir_add
from codecl.job import train_method_on_task

STREAM = [120, 37, 300, 5, 80]  # task sizes, uneven on purpose


def build(**options):
    entry = METHODS["replay"]
    return entry.build(entry.config_class(method="replay", **options))


def made_up(task: int, count: int) -> list[Example]:
    return [Example(f"task {task} #{i}", "t", [task, i], [i]) for i in range(count)]


def stream_through(method, sizes, check=lambda method, seen: None):
    """end_task for each task (the memory needs no model); `check` runs after each task."""
    seen = 0
    for index, size in enumerate(sizes):
        examples = made_up(index, size)
        seen += size
        method.end_task(None, TaskData(index, examples, [], 0, torch.device("cpu")))
        check(method, seen)


@pytest.mark.parametrize("sampling", ["reservoir", "balanced"])
@pytest.mark.parametrize("buffer_size", [None, 10])
def test_the_memory_never_exceeds_its_bound(sampling, buffer_size):
    def check(method, seen):
        assert 0 < len(method.memory) <= memory_bound(buffer_size, seen)

    stream_through(build(sampling=sampling, buffer_size=buffer_size), STREAM, check)


def test_the_default_bound_is_two_percent_of_the_examples_seen_rounded_up():
    assert memory_bound(None, 1000) == 20
    assert memory_bound(None, 1001) == 21
    assert memory_bound(None, 350) == 7  # 0.02 * 350 is 7.000000000000001 in floating point
    assert memory_bound(None, 1) == 1 and memory_bound(None, 49) == 1
    assert memory_bound(12, 1000) == 12
    method = build(sampling="balanced")
    stream_through(method, [1000])
    assert len(method.memory) == 20


def inclusion_chi_square(counts: list[int], trials: int, kept: int) -> float:
    """Σ (c_i − T·p)² / (T·p·(1−p)·n/(n−1)), p = kept/n: the inclusion counts of T uniform samples of `kept`
    out of n items. One sample's indicators have variance p(1−p) and covariance −p(1−p)/(n−1), so under
    uniformity the statistic is χ² with n − 1 degrees of freedom."""
    n = len(counts)
    p = kept / n
    return sum((c - trials * p) ** 2 for c in counts) / (trials * p * (1 - p) * n / (n - 1))


CHI_SQUARE_99_AT_0_001 = 148.23  # the χ² distribution's 0.999 quantile at 99 degrees of freedom


def test_reservoir_sampling_is_uniform():
    """100 items streamed into 10 slots, 2,000 times: every item's inclusion count against χ²(99) at 0.001."""
    rng, counts = random.Random(0), [0] * 100
    for _ in range(2000):
        items = []
        for n, item in enumerate(range(100), start=1):
            reservoir_add(items, item, n, 10, rng)
        assert len(items) == 10 and len(set(items)) == 10
        for item in items:
            counts[item] += 1
    assert inclusion_chi_square(counts, 2000, 10) < CHI_SQUARE_99_AT_0_001
    # The test has power: keeping the first ten items every time is far beyond the critical value.
    assert inclusion_chi_square([2000] * 10 + [0] * 90, 2000, 10) > 100 * CHI_SQUARE_99_AT_0_001


def test_balanced_keeps_equal_shares_each_a_sample_of_its_own_task():
    method = build(sampling="balanced", buffer_size=10)
    previous: list[set] = []

    def check(method, seen):
        sizes = [len(share) for share in method.shares]
        assert sum(sizes) == min(10, seen) and max(sizes) - min(sizes) <= 1
        for task, share in enumerate(method.shares):
            assert all(t == task and e.source_ids[0] == task for t, e in share)
            if task < len(previous):  # an older share only loses members
                assert {e.source for _, e in share} <= previous[task]
        previous[:] = [{e.source for _, e in share} for share in method.shares]

    stream_through(method, [50, 50, 50, 50], check)
    assert [len(share) for share in method.shares] == [3, 3, 2, 2]


def test_replay_count_follows_the_ratio_rounded_half_up_at_least_one():
    assert replay_count(8, 0.25, 100) == 2
    assert replay_count(10, 0.25, 100) == 3  # 2.5 rounds up
    assert replay_count(1, 0.25, 100) == 1  # 0.25 would round to 0: at least one
    assert replay_count(16, 1.0, 3) == 3  # no more than the memory holds
    assert replay_count(16, 0.25, 0) == 0


def test_mix_batch_adds_only_earlier_tasks_examples_as_many_as_the_ratio_says(tiny_base, tiny_batch):
    """Through the real loop: every example replayed while task 1 trains is one of task 0's objects."""
    base, tokenizer = tiny_base
    method = build(replay_ratio=0.5, buffer_size=3)
    model = method.attach(copy.deepcopy(base))
    sources = [[i for i in row.tolist() if i != tokenizer.pad_token_id] for row in tiny_batch["input_ids"]]
    targets = [[i for i in row.tolist() if i != -100] for row in tiny_batch["labels"]]
    tasks = [[Example(f"task {t} #{i}", "t", s, y) for i, (s, y) in enumerate(zip(sources, targets))] * 3 for t in (0, 1)]
    mixed = []
    original = method.mix_batch

    def recording(examples, rng):
        batch = original(examples, rng)
        mixed.append((examples, batch))
        return batch

    method.mix_batch = recording
    for index, examples in enumerate(tasks):
        data = TaskData(index, examples, tasks[:index], tokenizer.pad_token_id, torch.device("cpu"))
        train_method_on_task(method, model, data, TrainConfig(epochs=2, batch_size=4, log_every=100), learning_rate=1e-3,
                             accelerator=Accelerator(cpu=True), seed=index, log=lambda line: None)
        if index == 0:
            assert all(batch == drawn for drawn, batch in mixed)  # nothing to replay yet
            assert len(method.memory) == 3
            mixed.clear()
    first = {id(e) for e in tasks[0]}
    assert mixed
    for drawn, batch in mixed:
        assert batch[: len(drawn)] == drawn
        replayed = batch[len(drawn):]
        assert len(replayed) == replay_count(len(drawn), 0.5, 3)
        assert all(id(e) in first for e in replayed)
        assert len({id(e) for e in replayed}) == len(replayed)  # drawn without replacement


@pytest.mark.parametrize("sampling", ["reservoir", "balanced"])
def test_a_loaded_memory_continues_identically(sampling, tiny_base, tmp_path):
    base, _ = tiny_base
    method = build(sampling=sampling)
    model = method.attach(copy.deepcopy(base))
    stream_through(method, STREAM[:3])
    method.save(model, tmp_path, task_count=3)
    fresh = build(sampling=sampling)
    fresh.load(fresh.attach(copy.deepcopy(base)), tmp_path)
    assert fresh.memory == method.memory and fresh.seen == method.seen
    batch = made_up(9, 4)
    assert fresh.mix_batch(batch, random.Random(5)) == method.mix_batch(batch, random.Random(5))
    for each in (method, fresh):
        each.end_task(None, TaskData(3, made_up(3, 200), [], 0, torch.device("cpu")))
    assert fresh.memory == method.memory
