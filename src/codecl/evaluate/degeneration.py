"""Is the model writing code or repeating itself? Two diagnostics of one evaluation, in percent.

A mode-collapsed model writes the same output for most inputs, often a loop such as
``def f(self, a, a, a, a, ...`` cut off by the token limit. Its BLEU is low but not zero, and reads like
a weak score rather than no model at all; these two numbers say which it is. They are not scores: the
continual-learning summaries (forgetting, transfer) are never computed on them.
"""

from __future__ import annotations

from typing import Hashable, Sequence

# A loop's unit is at most this many tokens: a repeated line of code is well under it, and three
# repetitions of it still fit the default limit of 96 new tokens.
MAX_LOOP_PERIOD = 32
# A periodic run shorter than this is not called a loop: a period of 1 or 2 must repeat 12 or 6 times,
# so a short run such as `0, 0, 0` at the limit is not counted.
MIN_LOOP_TOKENS = 12
MIN_LOOP_REPETITIONS = 3

LOOP_DEFINITION = (
    f"generation hit the token limit without emitting EOS, and a unit of p tokens (1 <= p <= {MAX_LOOP_PERIOD}) "
    f"repeats back to back over max({MIN_LOOP_REPETITIONS}p, {MIN_LOOP_TOKENS}) tokens or more, up to at most p "
    "tokens before the end"
)
DISTINCT_DEFINITION = "distinct predictions (exact text after stripping surrounding whitespace) / predictions"


def distinct_share(predictions: Sequence[str]) -> float:
    """Percent of predictions that are distinct: |{p.strip()}| / n * 100. 100 when every prediction differs."""
    if not predictions:
        raise ValueError("distinct_share: no predictions")
    return 100.0 * len({p.strip() for p in predictions}) / len(predictions)


def periodic_run_at_end(tokens: Sequence[Hashable], period: int) -> int:
    """The length of the longest stretch in which every token equals the one ``period`` before it, counting
    the first unit (``a b a b a`` is 5 long for period 2), among the stretches that end within the last
    ``period + 1`` tokens; 0 when none does.

    The slack of one unit is there because a greedy decoder's loop sometimes breaks off in its last unit:
    the line ``self.x = x`` five times, then ``self.y`` at the limit, is still one line repeated to the limit.
    """
    longest, matches = 0, 0
    for i in range(period, len(tokens)):
        matches = matches + 1 if tokens[i] == tokens[i - period] else 0
        if matches and i >= len(tokens) - 1 - period:
            longest = max(longest, matches + period)
    return longest


def is_repetition_loop(tokens: Sequence[Hashable], hit_limit: bool) -> bool:
    """Whether a generation was cut off inside a repeated n-gram. ``tokens`` are what the model generated,
    special tokens included: a run of padding tokens decodes to an empty text but is a loop all the same.

    True when the generation ran to the token limit without emitting EOS (``hit_limit``) and, for some
    period p in 1..MAX_LOOP_PERIOD, a unit of p tokens repeats back to back over at least
    max(MIN_LOOP_REPETITIONS * p, MIN_LOOP_TOKENS) tokens, ending at most p tokens before the limit
    (`periodic_run_at_end`). A generation that ended by itself is never a loop, however repetitive; one
    that left its loop more than a unit before the limit is not either; and a long function that merely
    hits the limit is not one unless it ends in the same unit three times over.
    """
    if not hit_limit:
        return False
    longest_period = min(MAX_LOOP_PERIOD, len(tokens) // MIN_LOOP_REPETITIONS)
    return any(
        periodic_run_at_end(tokens, p) >= max(MIN_LOOP_REPETITIONS * p, MIN_LOOP_TOKENS)
        for p in range(1, longest_period + 1)
    )


def loop_share(generated_tokens: Sequence[Sequence[Hashable]], hit_limit: Sequence[bool]) -> float:
    """Percent of generations caught in a repetition loop (`is_repetition_loop`)."""
    if not generated_tokens:
        raise ValueError("loop_share: no generations")
    if len(generated_tokens) != len(hit_limit):
        raise ValueError(f"loop_share: {len(generated_tokens)} generations but {len(hit_limit)} hit_limit flags")
    loops = sum(is_repetition_loop(tokens, hit) for tokens, hit in zip(generated_tokens, hit_limit))
    return 100.0 * loops / len(generated_tokens)
