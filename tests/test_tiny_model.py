import random

from codecl.models.tiny import random_segmentation, span_corruption, train_tokenizer


def test_random_segmentation_partitions_exactly():
    rng = random.Random(0)
    for total, parts in [(10, 1), (10, 3), (7, 7), (100, 20)]:
        lengths = random_segmentation(total, parts, rng)
        assert len(lengths) == parts and sum(lengths) == total and min(lengths) >= 1


def test_span_corruption_inputs_and_targets_rebuild_the_sequence():
    rng = random.Random(1)
    sentinels = list(range(1000, 1100))
    ids = list(range(3, 103))
    inputs, targets = span_corruption(ids, sentinels, eos_id=1, rng=rng, noise_density=0.15, mean_span_length=3)
    assert inputs[-1] == 1 and targets[-1] == 1
    noise = [i for i in targets[:-1] if i not in sentinels]
    assert len(noise) == 15  # round(100 * 0.15)
    spans = [s for s in inputs if s in sentinels]
    assert spans == [s for s in targets if s in sentinels] == sentinels[: len(spans)]
    assert len(spans) == 5  # round(15 / 3)
    # Put each span back in place of its sentinel: the original sequence comes back.
    filled, target_spans, current = [], {}, None
    for token in targets[:-1]:
        if token in sentinels:
            current = token
            target_spans[current] = []
        else:
            target_spans[current].append(token)
    for token in inputs[:-1]:
        filled += target_spans[token] if token in sentinels else [token]
    assert filled == ids


def test_tokenizer_round_trips_code_with_indentation():
    code = "def f(x):\n    if x:\n\treturn {'a': x}  # note\n    return None\n"
    tokenizer = train_tokenizer([code] * 20, vocab_size=300)
    ids = tokenizer(code)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) == code
    assert tokenizer.pad_token_id == 0 and tokenizer.convert_tokens_to_ids("<extra_id_0>") > 2
