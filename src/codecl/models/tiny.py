"""The `tiny` preset: a small T5 and a byte-level BPE tokenizer that codecl trains itself, offline.

The continual stream should start from a model that already knows some code, as CodeT5 does, so the
tiny model is pretrained with T5's span corruption on the code of *train* splits only: no validation or
test function is ever seen. By default only the first task's language is pretrained on, so every later
language of the stream is new to the model; the tokenizer is trained on every stream language's train
split, as a multilingual tokenizer would be. The result is an ordinary Hugging Face folder, cached under
`cache_dir()/models/`, and `codecl_base.json` in it records how it was made.
"""

from __future__ import annotations

import math
import random
import time
from typing import Callable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from codecl.config import TinyModelConfig

TINY_VERSION = 2  # bump when the recipe changes, so cached models are rebuilt
NUM_SENTINELS = 100


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (as CodeT5 uses): any text round-trips, indentation and newlines included."""
    specials = ["<pad>", "</s>", "<unk>"] + [f"<extra_id_{i}>" for i in range(NUM_SENTINELS)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    # T5 ends every sequence with </s>; pad is id 0 and doubles as the decoder start token.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=specials[3:],
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )


def random_segmentation(num_items: int, num_segments: int, rng: random.Random) -> list[int]:
    """Split `num_items` into `num_segments` positive lengths, uniformly over such partitions."""
    cuts = sorted(rng.sample(range(1, num_items), num_segments - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, num_items])]


def span_corruption(
    ids: list[int], sentinels: list[int], eos_id: int, rng: random.Random,
    noise_density: float = 0.15, mean_span_length: float = 3.0,
) -> tuple[list[int], list[int]]:
    """T5's pretraining objective (Raffel et al. 2020, §3.1.4): replace random spans by sentinels in the
    input; the target lists each sentinel followed by the span it replaced.

    Spans alternate kept/noise starting with kept text, with counts from T5's `random_spans_noise_mask`:
    noise = round(n * density), spans = round(noise / mean_span_length).
    """
    n = len(ids)
    num_noise = min(max(1, round(n * noise_density)), n - 1)
    num_spans = max(1, min(round(num_noise / mean_span_length), num_noise, n - num_noise, len(sentinels)))
    noise_lengths = random_segmentation(num_noise, num_spans, rng)
    kept_lengths = random_segmentation(n - num_noise, num_spans, rng)
    inputs, targets, position = [], [], 0
    for span, (kept, noise) in enumerate(zip(kept_lengths, noise_lengths)):
        inputs += ids[position : position + kept] + [sentinels[span]]
        position += kept
        targets += [sentinels[span]] + ids[position : position + noise]
        position += noise
    return inputs + [eos_id], targets + [eos_id]


def build_model(config: TinyModelConfig, tokenizer: PreTrainedTokenizerFast) -> T5ForConditionalGeneration:
    t5_config = T5Config(
        vocab_size=len(tokenizer),
        d_model=config.d_model,
        d_kv=config.d_model // config.num_heads,
        d_ff=config.d_ff,
        num_layers=config.num_layers,
        num_decoder_layers=config.num_layers,
        num_heads=config.num_heads,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5ForConditionalGeneration(t5_config)


def _pretraining_pairs(
    tokenizer: PreTrainedTokenizerFast, texts: list[str], config: TinyModelConfig, rng: random.Random
) -> list[tuple[list[int], list[int]]]:
    """Pack the corpus into fixed-length windows and corrupt each once."""
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]:
        stream += ids
    length = config.pretrain_sequence_tokens
    sentinels = tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(NUM_SENTINELS)])
    windows = [stream[i : i + length] for i in range(0, len(stream) - length + 1, length)]
    return [
        span_corruption(w, sentinels, tokenizer.eos_token_id, rng, config.noise_density, config.mean_span_length)
        for w in windows
    ]


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def pretrain(
    model: T5ForConditionalGeneration, tokenizer: PreTrainedTokenizerFast, texts: list[str],
    config: TinyModelConfig, seed: int = 0, log: Callable[[str], None] = print,
) -> dict:
    """Span-corruption pretraining with AdamW and linear warmup/decay; returns what to record."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    pairs = _pretraining_pairs(tokenizer, texts, config, rng)
    if not pairs:
        raise ValueError("the pretraining corpus is shorter than one sequence")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.pretrain_learning_rate, weight_decay=0.01)
    warmup = max(1, config.pretrain_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (config.pretrain_steps - s) / (config.pretrain_steps - warmup + 1)))
    )
    model.train()
    order, started, tokens, loss_value = [], time.perf_counter(), 0, math.nan
    for step in range(config.pretrain_steps):
        if len(order) < config.pretrain_batch_size:
            order += rng.sample(range(len(pairs)), len(pairs))
        batch = [pairs[order.pop()] for _ in range(config.pretrain_batch_size)]
        inputs = _pad([b[0] for b in batch], tokenizer.pad_token_id)
        labels = _pad([b[1] for b in batch], -100)
        loss = model(input_ids=inputs, attention_mask=(inputs != tokenizer.pad_token_id).long(), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(inputs.numel() + (labels != -100).sum())
        loss_value = loss.item()
        if step % 100 == 0 or step == config.pretrain_steps - 1:
            elapsed = time.perf_counter() - started
            log(f"pretrain step {step + 1}/{config.pretrain_steps} loss {loss_value:.3f} {tokens / elapsed:,.0f} tok/s")
    model.eval()
    return {
        "objective": "T5 span corruption",
        "steps": config.pretrain_steps,
        "sequences": len(pairs),
        "final_loss": loss_value,
        "tokens_seen": tokens,
        "seconds": round(time.perf_counter() - started, 1),
        "seed": seed,
    }
