"""Greedy decoding without `generate()`'s per-step costs, token for token what `generate()` returns.

Three costs of `model.generate` on small models are avoided (measured with `benchmarks/throughput.py`):
- its default KV cache concatenates every layer's keys and values at every step, so step t copies t
  positions: here each self-attention layer writes into room reserved for every step, in place;
- its per-step machinery (logits processors, stopping criteria, the bookkeeping of finished rows);
- rows that emitted EOS stay in the batch until the last row ends: here they leave it, with their
  keys and values, once a quarter of the batch has finished.

The model's own forward computes every step, so every method's modules (adapters, added layers,
widened FFNs, added heads) run exactly as they do in `generate()`. Greedy is only taken when the
model's generation config asks for no logits processing; otherwise `generate()` decodes.
"""

from __future__ import annotations

from typing import Callable, ContextManager

import torch
from torch import nn
from transformers import GenerationConfig
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, EncoderDecoderCache

# Generation-config fields whose non-default value makes generate() change the logits or stop
# differently from plain argmax-until-EOS; with any of them set, generate() decodes instead.
PROCESSING_FIELDS = (
    "min_length", "min_new_tokens", "repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "force_words_ids", "forced_bos_token_id", "forced_eos_token_id",
    "suppress_tokens", "begin_suppress_tokens", "sequence_bias", "exponential_decay_length_penalty",
    "renormalize_logits", "stop_strings", "max_time", "watermarking_config",
)
# Finished rows leave the batch once this share of it has finished: leaving costs a copy of every
# cached key and value, so rows are dropped in groups rather than one at a time.
COMPACT_AT = 0.25


class ReservedLayer(DynamicLayer):
    """A self-attention cache layer with room for `capacity` positions, written in place. `keys` and
    `values` are views of the filled part, so attention sees exactly what DynamicLayer would give it."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        batch, heads, _, width = key_states.shape
        self.key_room = key_states.new_empty(batch, heads, self.capacity, width)
        self.value_room = value_states.new_empty(batch, heads, self.capacity, value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"the reserved KV cache holds {self.capacity} positions; step {end} does not fit")
        self.key_room[:, :, self.length : end] = key_states
        self.value_room[:, :, self.length : end] = value_states
        self.length = end
        self._view()
        return self.keys, self.values

    def _view(self) -> None:
        self.keys, self.values = self.key_room[:, :, : self.length], self.value_room[:, :, : self.length]

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.key_room, self.value_room = self.key_room[indices], self.value_room[indices]
            self._view()


def plain_greedy(generation_config: GenerationConfig | None) -> bool:
    """Whether generate()'s greedy search would be plain argmax until EOS for this config."""
    if generation_config is None:
        return True
    default = GenerationConfig()
    return all(getattr(generation_config, name, None) == getattr(default, name, None) for name in PROCESSING_FIELDS)


def reserved_cache(model: nn.Module, capacity: int) -> EncoderDecoderCache:
    """Self-attention layers with reserved room; cross-attention keys and values are written once."""
    config = model.get_decoder().config  # the decoder's own depth: added decoder blocks included
    self_attention = Cache(layers=[ReservedLayer(capacity) for _ in range(config.num_layers)])
    return EncoderDecoderCache(self_attention, DynamicCache(config=config))


@torch.no_grad()
def greedy_decode(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
    eos_id: int, start_id: int, autocast: Callable[[], ContextManager],
) -> list[list[int]]:
    """Per row, the generated token ids up to and including EOS (without it when the limit came first).
    `autocast` makes a fresh mixed-precision context for each forward (accelerate's `autocast`)."""
    batch = input_ids.shape[0]
    with autocast():
        encoded = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    cache = reserved_cache(model, max_new_tokens)
    rows = torch.arange(batch, device=input_ids.device)  # which original row each batch row is
    tokens = torch.full((batch, 1), start_id, dtype=torch.long, device=input_ids.device)
    generated = torch.full((batch, max_new_tokens), -1, dtype=torch.long, device=input_ids.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    for step in range(max_new_tokens):
        with autocast():
            logits = model(encoder_outputs=(encoded,), attention_mask=attention_mask, decoder_input_ids=tokens,
                           cache=cache, use_cache=True).logits[:, -1]
        next_tokens = logits.argmax(-1)
        generated[rows, step] = next_tokens
        finished = finished | (next_tokens == eos_id)
        done = int(finished.sum())  # one host sync per step, as generate() has
        if done == len(rows):
            break
        if done >= COMPACT_AT * len(rows):
            keep = (~finished).nonzero().squeeze(1)
            rows, encoded, attention_mask = rows[keep], encoded[keep], attention_mask[keep]
            next_tokens, finished = next_tokens[keep], finished[keep]
            for layer in cache.self_attention_cache.layers + cache.cross_attention_cache.layers:
                layer.batch_select_indices(keep)
        tokens = next_tokens[:, None]
    return [_until_eos(row, eos_id) for row in generated.tolist()]


def _until_eos(row: list[int], eos_id: int) -> list[int]:
    """The row's tokens through its EOS; a finished row that stayed in the batch keeps generating, and
    what it generated after EOS is dropped here."""
    row = row[: row.index(-1)] if -1 in row else row
    return row[: row.index(eos_id) + 1] if eos_id in row else row
