"""Greedy decoding without `generate()`'s per-step costs, token for token what `generate()` returns.

Three costs of `model.generate` on small models are avoided (`benchmarks/throughput.py` measures the gain):
- its default KV cache concatenates every layer's keys and values at every step, so step t copies t
  positions: here each self-attention layer writes into room reserved for every step, in place;
- its per-step machinery (logits processors, stopping criteria, the bookkeeping of finished rows);
- rows that emitted EOS stay in the batch until the last row ends: here they leave it, with their
  keys and values, once a quarter of the batch has finished.

The model's own forward computes every step, so every method's modules (adapters, added layers,
widened FFNs, added heads) run exactly as they do in `generate()`. In fp32 the tokens are generate()'s
(tested for every method); under mixed precision a batch that shrinks may round differently from one
that does not, as generate()'s own results do across batch compositions. The loop is only taken when
the model's generation config asks for no logits processing and ends on the tokenizer's EOS;
otherwise `generate()` decodes.
"""

from __future__ import annotations

from typing import ContextManager

import torch
from torch import nn
from transformers import GenerationConfig
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, EncoderDecoderCache

# Generation-config fields with which generate() changes the logits or stops otherwise than plain
# argmax until EOS, and the value at which each does nothing (None does nothing for all of them).
# With any other value, generate() decodes instead.
NEUTRAL = {
    "min_length": 0, "min_new_tokens": 0, "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "force_words_ids": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "sequence_bias": None, "exponential_decay_length_penalty": None, "renormalize_logits": False,
    "remove_invalid_values": False, "guidance_scale": 1.0, "stop_strings": None, "max_time": None,
    "watermarking_config": None, "num_return_sequences": 1,
}
# Finished rows leave the batch once this share of it has finished: leaving costs a copy of every
# cached key and value, so rows are dropped in groups rather than one at a time.
COMPACT_AT = 0.25


class ReservedLayer(DynamicLayer):
    """A self-attention cache layer with room for `capacity` positions, written in place. `keys` and
    `values` are views of the filled part, so attention sees exactly what DynamicLayer would give it.
    Only what greedy decoding calls is supported: not cropping, beams or repeating rows."""

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

    def get_max_length(self) -> int:
        return self.capacity

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.key_room, self.value_room = (self._select(room, indices) for room in (self.key_room, self.value_room))
            self._view()

    def _select(self, room: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """New room for the kept rows, with only the filled positions copied."""
        kept = room.new_empty(len(indices), *room.shape[1:])
        kept[:, :, : self.length] = room[indices, :, : self.length]
        return kept


def plain_greedy(generation_config: GenerationConfig | None, eos_id: int) -> bool:
    """Whether generate()'s greedy search is plain argmax until `eos_id` for this config: nothing
    processes the logits, and it starts and ends where the greedy loop does."""
    if generation_config is None or eos_id is None:
        return False
    if any(getattr(generation_config, name, None) not in (None, neutral) for name, neutral in NEUTRAL.items()):
        return False
    eos = generation_config.eos_token_id
    return start_token(generation_config) is not None and (eos == eos_id or eos == [eos_id])


def start_token(generation_config: GenerationConfig) -> int | None:
    """The decoder's first input as generate() takes it: the decoder start token, else BOS."""
    start = generation_config.decoder_start_token_id
    return start if start is not None else generation_config.bos_token_id


def reserved_cache(model: nn.Module, capacity: int) -> EncoderDecoderCache:
    """Self-attention layers with reserved room; cross-attention keys and values are written once."""
    config = model.get_decoder().config  # the decoder's own depth: added decoder blocks included
    self_attention = Cache(layers=[ReservedLayer(capacity) for _ in range(config.num_layers)])
    return EncoderDecoderCache(self_attention, DynamicCache(config=config))


def greedy_decode(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
    eos_id: int, start_id: int, autocast: ContextManager,
) -> list[list[int]]:
    """Per row, the generated token ids up to and including EOS (without it when the limit came first),
    decoded under `autocast` (mixed precision) as generate() is, in one context: a context per step
    would throw away autocast's cache of weights cast to the lower precision. Inference mode, stricter
    than no_grad, also skips autograd's version and view bookkeeping on every op: 5% of the tiny
    model's decoding time (1.12 s → 1.07 s for 200 examples, median of 4 interleaved runs)."""
    with torch.inference_mode(), autocast:
        return _greedy(model, input_ids, attention_mask, max_new_tokens, eos_id, start_id)


def _greedy(model, input_ids, attention_mask, max_new_tokens, eos_id, start_id) -> list[list[int]]:
    batch, device = input_ids.shape[0], input_ids.device
    encoded = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    cache = reserved_cache(model, max_new_tokens)
    rows = torch.arange(batch, device=device)  # which input each row of the shrinking batch is
    tokens = torch.full((batch, 1), start_id, dtype=torch.long, device=device)
    generated = torch.full((batch, max_new_tokens), -1, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
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
            # Layer by layer: EncoderDecoderCache.batch_select_indices accepts DynamicCaches only.
            for layer in cache.self_attention_cache.layers + cache.cross_attention_cache.layers:
                layer.batch_select_indices(keep)
        tokens = next_tokens[:, None]
    return [_through_first_eos(row, eos_id) for row in generated.tolist()]


def _through_first_eos(row: list[int], eos_id: int) -> list[int]:
    """The row's tokens through its first EOS: a finished row that stayed in the batch went on
    generating, and that is dropped here. -1 marks steps after the row left the batch."""
    row = row[: row.index(-1)] if -1 in row else row
    return row[: row.index(eos_id) + 1] if eos_id in row else row
