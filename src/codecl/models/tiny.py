"""The `tiny` preset: a small T5 and a byte-level BPE tokenizer that codecl trains itself, offline.

The continual stream should start from a model that already knows some code, as CodeT5 does, so the
tiny model is pretrained with CodeT5's objectives (`objective_examples`: span corruption, masked
identifier prediction, and the bimodal dual generation docstring -> code and code -> docstring) on the
*train* splits only: no validation or test function is ever seen. By default only the first task's
language is pretrained on, so every later language of the stream is new to the model; the tokenizer
is trained on every stream language's train split, as a multilingual tokenizer would be. Where the
result is kept, checked and shipped is `codecl.models.store`'s business.
"""

from __future__ import annotations

import math
import random
import re
import time
from typing import Callable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from codecl.config import TinyModelConfig
from codecl.errors import UserError
from codecl.data.docstrings import strip_docstring
from codecl.data.leaks import KEYWORDS
from codecl.data.tasks import PretrainingCorpus

TINY_VERSION = 3  # bump when the recipe changes, so cached models are rebuilt
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


# A name in running text: not the tail of a longer word or number (`0x1F` holds no name `x1F`).
NAME = re.compile(r"(?<![\w$])[A-Za-z_$][\w$]*")


def identifier_masking(
    code: str, language: str, tokenizer: PreTrainedTokenizerFast, max_tokens: int,
) -> tuple[list[int], list[int]] | None:
    """CodeT5's masked identifier prediction (Wang et al. 2021, §3.2): every identifier of the code is
    replaced by a sentinel, the same sentinel for each occurrence of one name, and the target lists each
    sentinel followed by its name. The docstring is removed first, so that its words are not taken for
    names; names are found by a regex outside reserved words, a cheap stand-in for CodeT5's parser that
    also renames words inside strings and comments. Only names still in the input after it is cut to
    `max_tokens` are asked for."""
    code = strip_docstring(code, language)
    names = list(dict.fromkeys(name for name in NAME.findall(code) if name not in KEYWORDS[language]))[:NUM_SENTINELS]
    if not names:
        return None
    sentinel = {name: f"<extra_id_{i}>" for i, name in enumerate(names)}
    masked = NAME.sub(lambda match: sentinel.get(match.group(0), match.group(0)), code)
    inputs = tokenizer(masked, truncation=True, max_length=max_tokens)["input_ids"]
    present = set(tokenizer.convert_ids_to_tokens(inputs))
    target = "".join(f"{sentinel[name]}{name}" for name in names if sentinel[name] in present)
    labels = tokenizer(target, truncation=True, max_length=max_tokens)["input_ids"]
    return inputs, labels


def objective_examples(
    tokenizer: PreTrainedTokenizerFast, corpus: PretrainingCorpus, config: TinyModelConfig, rng: random.Random,
) -> dict[str, list[tuple[list[int], list[int]]]]:
    """(input ids, target ids) for each objective whose weight is above 0, from the train splits only.

    Span corruption packs all code into fixed-length windows and corrupts each once; the dual generation
    objectives are the docstring-to-code task and its reverse, summaries cut to `pretrain_summary_tokens`
    and code to `pretrain_sequence_tokens`.
    """
    weights, length = config.objectives.model_dump(), config.pretrain_sequence_tokens
    examples: dict[str, list[tuple[list[int], list[int]]]] = {}
    if weights["span_corruption"] > 0:
        stream: list[int] = []
        for ids in tokenizer(corpus.code_texts, add_special_tokens=True, verbose=False)["input_ids"]:
            stream += ids
        sentinels = tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(NUM_SENTINELS)])
        windows = [stream[i : i + length] for i in range(0, len(stream) - length + 1, length)]
        examples["span_corruption"] = [
            span_corruption(w, sentinels, tokenizer.eos_token_id, rng, config.noise_density, config.mean_span_length)
            for w in windows
        ]
    if corpus.pairs and (weights["docstring_to_code"] > 0 or weights["code_to_docstring"] > 0):
        summaries, codes = zip(*corpus.pairs)
        summary_ids = tokenizer(list(summaries), truncation=True, max_length=config.pretrain_summary_tokens)["input_ids"]
        code_ids = tokenizer(list(codes), truncation=True, max_length=length)["input_ids"]
        examples["docstring_to_code"] = list(zip(summary_ids, code_ids))
        examples["code_to_docstring"] = list(zip(code_ids, summary_ids))
    if weights["identifier_masking"] > 0:
        masked = (identifier_masking(code, language, tokenizer, length)
                  for language, code in zip(corpus.code_languages, corpus.code_texts))
        examples["identifier_masking"] = [pair for pair in masked if pair is not None]
    return {name: pairs for name, pairs in examples.items() if pairs and weights[name] > 0}


class ObjectiveSampler:
    """Draws each batch from one objective, with probability proportional to its weight, and walks each
    objective's examples in a fresh shuffled order per pass. One objective per batch, not per sequence:
    the objectives' shapes differ (span corruption: long input, short target; docstring-to-code: the
    reverse), so a mixed batch would pad both sides to the longest and waste about half its compute."""

    def __init__(self, examples: dict[str, list], weights: dict[str, float], rng: random.Random):
        self.examples, self.rng = examples, rng
        self.names = sorted(examples)
        self.weights = [weights[name] for name in self.names]
        self.orders: dict[str, list[int]] = {name: [] for name in self.names}

    def draw(self, count: int) -> tuple[str, list[tuple[list[int], list[int]]]]:
        name = self.rng.choices(self.names, self.weights)[0]
        batch = []
        for _ in range(count):
            if not self.orders[name]:
                self.orders[name] = self.rng.sample(range(len(self.examples[name])), len(self.examples[name]))
            batch.append(self.examples[name][self.orders[name].pop()])
        return name, batch


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def pretrain(
    model: T5ForConditionalGeneration, tokenizer: PreTrainedTokenizerFast, corpus: PretrainingCorpus,
    config: TinyModelConfig, seed: int = 0, log: Callable[[str], None] = print,
    after_step: Callable[[int, float], None] | None = None,
) -> dict:
    """Pretraining on a mixture of objectives (`config.objectives`) with AdamW and linear warmup/decay;
    returns what to record. `after_step(steps_done, seconds)` runs after each update (snapshots)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    examples = objective_examples(tokenizer, corpus, config, rng)
    if not examples:
        wanted = ", ".join(name for name, weight in config.objectives.model_dump().items() if weight > 0)
        raise UserError(
            f"model.tiny.objectives: the train split gives no pretraining example for {wanted} (span corruption "
            f"needs at least pretrain_sequence_tokens={config.pretrain_sequence_tokens} tokens of code, the dual "
            f"generation functions with docstrings)"
        )
    sampler = ObjectiveSampler(examples, config.objectives.model_dump(), rng)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.pretrain_learning_rate, weight_decay=0.01)
    warmup = max(1, config.pretrain_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (config.pretrain_steps - s) / (config.pretrain_steps - warmup + 1)))
    )
    model.train()
    started, tokens = time.perf_counter(), 0
    # Each batch is one objective, so one batch's loss jumps with the objective drawn: log each
    # objective's mean over the steps since the last line instead.
    recent: dict[str, list[float]] = {name: [] for name in examples}
    last: dict[str, float] = {name: math.nan for name in examples}
    for step in range(config.pretrain_steps):
        objective, batch = sampler.draw(config.pretrain_batch_size)
        inputs = _pad([b[0] for b in batch], tokenizer.pad_token_id)
        labels = _pad([b[1] for b in batch], -100)
        loss = model(input_ids=inputs, attention_mask=(inputs != tokenizer.pad_token_id).long(), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(inputs.numel() + (labels != -100).sum())
        recent[objective].append(loss.item())
        if after_step is not None:
            after_step(step + 1, time.perf_counter() - started)
        if step % 100 == 0 or step == config.pretrain_steps - 1:
            elapsed = time.perf_counter() - started
            last.update({name: sum(values) / len(values) for name, values in recent.items() if values})
            losses = ", ".join(f"{name} {value:.3f}" for name, value in sorted(last.items()))
            log(f"pretrain step {step + 1}/{config.pretrain_steps} loss {losses} {tokens / elapsed:,.0f} tok/s")
            recent = {name: [] for name in examples}
    model.eval()
    return {
        "objectives": {name: config.objectives.model_dump()[name] for name in sorted(examples)},
        "steps": config.pretrain_steps,
        "sequences": {name: len(pairs) for name, pairs in sorted(examples.items())},
        "final_loss": {name: round(value, 4) for name, value in sorted(last.items())},
        "tokens_seen": tokens,
        "seconds": round(time.perf_counter() - started, 1),
        "seed": seed,
    }
