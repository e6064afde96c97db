"""Padding waste of length-grouped batches against random pad-to-longest batches, on the default data.

Usage: python benchmarks/padding.py [CONFIG]   (default configs/default.yaml; mines/builds what it needs)
Prints the share of padded token slots that are padding, for encoder inputs and decoder labels
together, and the ratio of useful tokens per padded slot between the two batchings.
"""

import random
import sys
from pathlib import Path

from codecl.config import load_config
from codecl.data.batching import length_grouped_batches
from codecl.data.tasks import build_stream
from codecl.runner import load_base, log_to_stderr


def padded_slots(examples, batches) -> tuple[int, int]:
    used = padded = 0
    for batch in batches:
        for side in ("source_ids", "target_ids"):
            lengths = [len(getattr(examples[i], side)) for i in batch]
            used += sum(lengths)
            padded += max(lengths) * len(lengths)
    return used, padded


def main() -> None:
    config = load_config(Path(sys.argv[1] if len(sys.argv) > 1 else "configs/default.yaml"))
    base = load_base(config, log_to_stderr)
    batch_size = config.train.batch_size
    print(f"batch size {batch_size}; padding = 1 - real tokens / padded slots (inputs and labels)")
    for task in build_stream(config.data, base.tokenizer, config.eval.split):
        examples = task.splits["train"]
        order = list(range(len(examples)))
        random.Random(0).shuffle(order)
        random_batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        grouped = length_grouped_batches([len(e.source_ids) + len(e.target_ids) for e in examples], batch_size, random.Random(0))
        used_r, padded_r = padded_slots(examples, random_batches)
        used_g, padded_g = padded_slots(examples, grouped)
        print(
            f"{task.name:10s} n={len(examples):5d}  random: {1 - used_r / padded_r:6.1%} padding   "
            f"length-grouped: {1 - used_g / padded_g:6.1%} padding   "
            f"slots per epoch: random/grouped = {padded_r / padded_g:.2f}x"
        )


if __name__ == "__main__":
    main()
