"""Deterministic decoding and the scores of one evaluation of one task.

Greedy by default (beam search when `num_beams > 1`), never sampling: a model that did not change must
score exactly what it scored before, so any difference between two rows is the method's doing.
Inputs are decoded in batches of similar length, so little compute goes to padding. Greedy search runs
codecl's own loop (`greedy.py`), which gives generate()'s tokens faster; beam search and sampling
run `generate()`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from accelerate import Accelerator
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from codecl.config import EvalConfig
from codecl.data.batching import collate
from codecl.data.tasks import Example
from codecl.evaluate.code_metrics import codebleu, codexglue_bleu, codexglue_code_bleu, edit_similarity
from codecl.evaluate.degeneration import distinct_share, loop_share
from codecl.evaluate.greedy import greedy_decode, plain_greedy, start_token
from codecl.evaluate.syntax import syntax_validity
from codecl.evaluate.text import corpus_bleu, exact_match

METRICS = ("bleu", "bleu_codexglue", "bleu_codexglue_code", "codebleu", "exact_match", "edit_similarity", "syntax")
# Recorded beside the metrics, never summarised like them: forgetting of "distinct" means nothing.
DEGENERATION = ("distinct", "loop")
# Why a code-to-docstring task has no CodeBLEU or syntax score: both parse the prediction as code.
NATURAL_LANGUAGE_TARGET = "not computed: the target is natural language, not code"


@dataclass
class Generation:
    text: str
    token_ids: list[int]  # generated, special tokens included; without the decoder's start token, EOS and what follows
    hit_limit: bool  # stopped by max_new_tokens, not by emitting EOS


@dataclass
class Evaluation:
    scores: dict[str, float | None]  # None: the metric could not be computed (see `problems`)
    predictions: list[str]
    bleu_signature: str
    problems: dict[str, str]
    degeneration: dict[str, float] = field(default_factory=dict)  # DEGENERATION's percentages
    # Each prediction's tokens, kept so that a row assembled from several evaluations (task-agnostic
    # scoring) can count its loops without decoding again; empty where only texts were scored.
    generations: list[Generation] = field(default_factory=list)


def decoder_cache(model: nn.Module) -> EncoderDecoderCache:
    """A KV cache sized by the decoder's own depth.

    `generate()` sizes its cache from the top-level config, whose layer count is the encoder's; a T5
    whose decoder is deeper than its encoder (blocks added to the decoder only) then fails with an
    IndexError. The decoder stack's config always has the right count.
    """
    config = model.get_decoder().config
    return EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))


def generate(
    model: nn.Module, tokenizer, examples: list[Example], config: EvalConfig, accelerator: Accelerator,
    language: str | None = None,
) -> list[str]:
    """Decode every example deterministically; predictions come back in the examples' order."""
    return [g.text for g in generations(model, tokenizer, examples, config, accelerator, language)]


def generations(
    model: nn.Module, tokenizer, examples: list[Example], config: EvalConfig, accelerator: Accelerator,
    language: str | None = None,
) -> list[Generation]:
    """`generate`'s predictions with their tokens and whether the token limit stopped them."""
    outputs = _decode(model, tokenizer, examples, config, accelerator, language, 1, do_sample=False, num_beams=config.num_beams)
    return [generated[0] for generated in outputs]


def sample(
    model: nn.Module, tokenizer, examples: list[Example], config: EvalConfig, accelerator: Accelerator,
    language: str | None, n: int, temperature: float, top_p: float, seed: int,
) -> list[list[str]]:
    """``n`` sampled outputs per example, for pass@k with k > 1 only. Seeded: the same seed, model and
    examples give the same samples on the same device."""
    torch.manual_seed(seed)
    outputs = _decode(model, tokenizer, examples, config, accelerator, language, n,
                      do_sample=True, temperature=temperature, top_p=top_p, num_return_sequences=n)
    return [[g.text for g in generated] for generated in outputs]


@torch.no_grad()
def _decode(model, tokenizer, examples, config, accelerator, language, per_example, **options) -> list[list[Generation]]:
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].source_ids))
    outputs: list[list[Generation]] = [[] for _ in examples]
    max_new_tokens = config.new_tokens(language) if language else config.max_new_tokens
    model.eval()
    generation_config = getattr(model, "generation_config", None)
    greedy = not options.get("do_sample") and options.get("num_beams", 1) == 1 and plain_greedy(
        generation_config, tokenizer.eos_token_id)
    # Sampling n outputs per input multiplies the rows decoded together.
    batch_size = max(1, config.batch_size // per_example)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch = collate([examples[i].source_ids for i in indices], [[0]] * len(indices), tokenizer.pad_token_id)
        input_ids = batch["input_ids"].to(accelerator.device)
        attention_mask = batch["attention_mask"].to(accelerator.device)
        if greedy:
            rows = greedy_decode(model, input_ids, attention_mask, max_new_tokens, tokenizer.eos_token_id,
                                 start_token(generation_config), accelerator.autocast())
        else:
            with accelerator.autocast():
                output = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                        max_new_tokens=max_new_tokens, cache=decoder_cache(model), **options)
            rows = [row[1:].tolist() for row in output]  # row[0] is the decoder's start token, not generated
        texts = tokenizer.batch_decode(rows, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        generated = [
            Generation(text, *_until_eos(row, tokenizer.eos_token_id, max_new_tokens)) for text, row in zip(texts, rows)
        ]
        for position, i in enumerate(indices):
            outputs[i] = generated[position * per_example : (position + 1) * per_example]
    return outputs


def _until_eos(token_ids: list[int], eos_id: int, max_new_tokens: int) -> tuple[list[int], bool]:
    """The tokens before the first EOS, and whether they fill the limit: a row that ended early is
    padded after its EOS, and one that never emitted EOS was stopped by `max_new_tokens`."""
    if eos_id in token_ids:
        token_ids = token_ids[: token_ids.index(eos_id)]
    return token_ids, len(token_ids) >= max_new_tokens


def score(predictions: list[str], examples: list[Example], language: str | None) -> Evaluation:
    """Every text metric in percent: sacrebleu corpus BLEU (signature recorded), CodeXGLUE's smoothed
    sentence BLEU (code-to-text) and corpus BLEU (text-to-code), CodeBLEU, exact match, edit
    similarity and syntax validity.

    ``language`` is the targets' programming language, or None when they are natural language
    (`Task.target_language`): then CodeBLEU and syntax are None, with the reason in `problems`."""
    references = [e.target for e in examples]
    bleu = corpus_bleu(predictions, references)
    if language is None:
        code_bleu = syntax = None
        problems = {"codebleu": NATURAL_LANGUAGE_TARGET, "syntax": NATURAL_LANGUAGE_TARGET}
    else:
        code_bleu, problem = codebleu(predictions, references, language)
        syntax = 100.0 * syntax_validity(predictions, language)
        problems = {"codebleu": problem} if problem else {}
    scores = {
        "bleu": bleu.score,
        "bleu_codexglue": codexglue_bleu(predictions, references),
        "bleu_codexglue_code": codexglue_code_bleu(predictions, references),
        "codebleu": code_bleu,
        "exact_match": 100.0 * exact_match(predictions, references),
        "edit_similarity": 100.0 * edit_similarity(predictions, references),
        "syntax": syntax,
    }
    if not all(v is None or math.isfinite(v) for v in scores.values()):
        raise ValueError(f"a non-finite score: {scores}")
    return Evaluation(scores, predictions, bleu.signature, problems)


def evaluate_task(
    model: nn.Module, tokenizer, examples: list[Example], language: str | None, config: EvalConfig,
    accelerator: Accelerator,
) -> Evaluation:
    """`score` of the model's predictions, with the share of distinct predictions and of repetition loops.
    ``language``: the targets' programming language, None for natural-language targets (`score`)."""
    generated = generations(model, tokenizer, examples, config, accelerator, language)
    predictions = [g.text for g in generated]
    degeneration = {
        "distinct": distinct_share(predictions),
        "loop": loop_share([g.token_ids for g in generated], [g.hit_limit for g in generated]),
    }
    return replace(score(predictions, examples, language), degeneration=degeneration, generations=generated)
