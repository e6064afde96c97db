"""Padding waste of length-grouped batches against random pad-to-longest batches.

Usage: python benchmarks/padding.py [CONFIG]   (default configs/default.yaml; mines/builds what it needs)

For each task's training examples, at the config's length limits and at the original protocol's
(64 source / 256 target tokens), it prints the share of padded token slots that are padding, inputs
and labels together, for random batches and for the training loop's length-grouped batches, and the
ratio of padded slots per epoch: how many times more token slots random batching computes.
"""

import random
import sys
from pathlib import Path

from codecl.config import load_config
from codecl.data.batching import length_grouped_batches
from codecl.data.tasks import build_stream
from codecl.setting import load_base, log_to_stderr


def padded_slots(examples, batches) -> tuple[int, int]:
    used = padded = 0
    for batch in batches:
        for side in ("source_ids", "target_ids"):
            lengths = [len(getattr(examples[i], side)) for i in batch]
            used += sum(lengths)
            padded += max(lengths) * len(lengths)
    return used, padded


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "configs/default.yaml")
    base_config = load_config(path)
    base = load_base(base_config, log_to_stderr)
    batch_size = base_config.train.batch_size
    print(f"batch size {batch_size}; padding = 1 - real tokens / padded slots (inputs and labels)")
    limits = {(base_config.data.max_source_tokens, base_config.data.max_target_tokens), (64, 256)}
    for source_limit, target_limit in sorted(limits):
        config = load_config(path, [f"data.max_source_tokens={source_limit}", f"data.max_target_tokens={target_limit}"])
        for task in build_stream(config.data, base.tokenizer, config.eval.split):
            examples = task.splits["train"]
            order = list(range(len(examples)))
            random.Random(0).shuffle(order)
            random_batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
            keys = [(len(e.target_ids), len(e.source_ids)) for e in examples]
            grouped = length_grouped_batches(keys, batch_size, random.Random(0))
            used_r, padded_r = padded_slots(examples, random_batches)
            used_g, padded_g = padded_slots(examples, grouped)
            print(
                f"limits {source_limit:3d}/{target_limit:3d} {task.name:10s} n={len(examples):5d}  "
                f"random: {1 - used_r / padded_r:5.1%} padding  length-grouped: {1 - used_g / padded_g:5.1%} padding  "
                f"padded slots random/grouped: {padded_r / padded_g:.2f}x"
            )


if __name__ == "__main__":
    main()
