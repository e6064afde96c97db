import random

from codecl.data.batching import collate, length_grouped_batches, padding_fraction


def test_every_example_once_per_epoch():
    lengths = [random.Random(i).randint(5, 300) for i in range(1000)]
    batches = length_grouped_batches(lengths, 16, random.Random(0))
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(1000))
    assert all(1 <= len(batch) <= 16 for batch in batches)


def test_grouping_wastes_less_padding_than_random_batches():
    rng = random.Random(0)
    lengths = [int(rng.lognormvariate(4.5, 0.8)) + 5 for _ in range(2000)]
    order = list(range(2000))
    rng.shuffle(order)
    random_batches = [order[i : i + 16] for i in range(0, 2000, 16)]
    grouped = length_grouped_batches(lengths, 16, random.Random(0))
    assert padding_fraction(lengths, grouped) < 0.1 < 0.4 < padding_fraction(lengths, random_batches)


def test_padding_fraction_by_hand():
    # Batches [3, 5] and [4]: padded slots 5*2 + 4 = 14, used 3 + 5 + 4 = 12, waste 2/14.
    assert abs(padding_fraction([3, 5, 4], [[0, 1], [2]]) - 2 / 14) < 1e-12


def test_collate_masks_padding():
    batch = collate([[5, 6, 1], [7, 1]], [[8, 1], [9, 9, 9, 1]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 1], [7, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[8, 1, -100, -100], [9, 9, 9, 1]]
