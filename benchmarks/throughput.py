"""Training and decoding throughput: codecl against what a user would write instead, in one process.

Usage: python benchmarks/throughput.py [--shapes tiny,codet5-small] [--rounds 3] [--train-steps N|SHAPE=N,...]
           [--decode-examples N|SHAPE=N,...] [--device cpu|cuda] [--precision fp32|bf16|fp16]
           [--protocol-estimate] [--config configs/default.yaml] [--set KEY=VALUE ...] [--smoke]

Training: codecl's `train_task`, full fine-tuning and LoRA built from the method registry as the runner
builds them, against Hugging Face's `Seq2SeqTrainer` (full fine-tuning, and LoRA through PEFT) with its
default random sampler and with `train_sampling_strategy="group_by_length"`. Every arm gets the same
weights, examples, steps, batch size, peak learning rate, warmup, weight decay and clipping. An arm is
timed as the wall time of its whole training call, its setup included (codecl: building and attaching the
method, `train_task`; Hugging Face: PEFT wrapping, arguments, `Seq2SeqTrainer`, `train()`), and scored in
useful tokens per second: non-pad input tokens plus the label tokens the loss sees, counted by both sides.
Decoding: codecl's `generate` against `model.generate` over unsorted batches of 64 in data order (greedy,
the same token limit), in samples per second, with a check that every output is identical.

Rounds are interleaved (every arm once per round, on a fresh copy of the weights) after one untimed
warm-up of each arm, so a noisy machine slows every arm alike; medians are set against the issue's
targets. The matmul peak of this machine is measured here too, and codecl full-ft's achieved FLOP/s
(FLOPs counted by torch's FlopCounterMode over its training call, forward and backward) is given as a
share of it.

Shapes: `tiny` is the config's base model (for the default config, the shipped pretrained tiny T5);
`codet5-small` is Salesforce/codet5-small's shape (60M parameters) randomly initialised, never
downloaded, fed the tiny tokenizer's ids. `--protocol-estimate` turns codet5-small's measured rates
into the wall time of the original protocol (configs/codet5-small-csn.yaml). `--smoke` is a seconds-long
run of the tiny shape for the tests.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from codecl.train import useful_tokens

REPO = Path(__file__).resolve().parents[1]
SHAPES = ("tiny", "codet5-small")
# Chosen so that the default invocation takes about 15 minutes on 2 CPU cores: measured on one thread, a
# step of 16 examples takes about 5 s for codet5-small's shape and 0.25 s for the tiny base. The default
# config has 1,000 training examples per task: 62 batches of 16 at most.
DEFAULT_TRAIN_STEPS = {"tiny": 60, "codet5-small": 8}
DEFAULT_DECODE_EXAMPLES = {"tiny": 200, "codet5-small": 32}  # a random codet5-small writes to the token limit
REFERENCE_DECODE_BATCH = 64
WARMUP_STEPS, WARMUP_DECODE_EXAMPLES = 1, 8
TRAINING_TARGETS = {"random": 2.0, "group_by_length": 1.6}  # codecl / Seq2SeqTrainer with that sampler
DECODING_TARGET = 3.0  # codecl generate / model.generate in unsorted batches of 64
PEAK_SHARE_TARGET = 0.60  # achieved training FLOP/s / matmul peak, on codet5-small's shape
PROTOCOL_CONFIG = REPO / "configs" / "codet5-small-csn.yaml"
PROTOCOL_EVAL_EXAMPLES = 5000  # per task, after every task: the protocol
PROTOCOL_MINUTES_TARGET = 30  # one seed of every method on one H100
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

TRAINING_ARMS = [  # (arm, method entry in the config, trainer's sampler or None for codecl)
    ("codecl full-ft", "full-ft", None),
    ("codecl LoRA", "lora", None),
    ("HF Trainer full-ft (random)", "full-ft", "random"),
    ("HF Trainer full-ft (group_by_length)", "full-ft", "group_by_length"),
    ("HF Trainer+PEFT LoRA (random)", "lora", "random"),
    ("HF Trainer+PEFT LoRA (group_by_length)", "lora", "group_by_length"),
]
CODECL_DECODE, REFERENCE_DECODE = "codecl generate", f"HF model.generate (unsorted batches of {REFERENCE_DECODE_BATCH})"
# codecl's batches (sorted by length, the config's batch size) through model.generate: what codecl did
# before its own greedy loop, so the loop's own share of the ratio shows.
SORTED_DECODE = "HF model.generate (codecl's sorted batches)"


class Measured(NamedTuple):
    amount: int  # useful tokens trained on, or samples decoded
    seconds: float
    peak_memory: int | None  # bytes, CUDA only

    @property
    def rate(self) -> float:
        return self.amount / self.seconds


@dataclass
class Bench:
    """What every arm shares: the config, tokenizer, accelerator and the first task's examples."""
    config: object
    tokenizer: object
    accelerator: object
    device: str
    precision: str
    language: str
    train_examples: list
    decode_examples: list
    output_dir: str


@dataclass
class Shape:
    name: str
    model: torch.nn.Module
    train_steps: int
    decode_examples: int
    eval_config: object
    training: dict[str, list[Measured]] = field(default_factory=dict)
    decoding: dict[str, list[Measured]] = field(default_factory=dict)
    flops: int = 0
    differing_outputs: tuple[int, str] = (0, "")
    generated_tokens_per_sample: float = 0.0
    train_tokens_per_example: float = 0.0


def per_shape(text: str, defaults: dict[str, int]) -> dict[str, int]:
    """`N` for every shape, or `tiny=N,codet5-small=M` (shapes not named keep their default)."""
    if text.isdigit() and int(text) >= 1:
        return dict.fromkeys(defaults, int(text))
    values = dict(defaults)
    for part in text.split(","):
        name, _, number = part.partition("=")
        if name not in defaults or not number.isdigit() or int(number) < 1:
            raise argparse.ArgumentTypeError(f"{part!r}: expected N or SHAPE=N with SHAPE in {', '.join(defaults)}")
        values[name] = int(number)
    return values


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated: tiny, codet5-small")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of every arm, interleaved")
    parser.add_argument("--train-steps", type=lambda t: per_shape(t, DEFAULT_TRAIN_STEPS), default=DEFAULT_TRAIN_STEPS)
    parser.add_argument("--decode-examples", type=lambda t: per_shape(t, DEFAULT_DECODE_EXAMPLES), default=DEFAULT_DECODE_EXAMPLES)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=list(PRECISION_DTYPES), default="fp32")
    parser.add_argument("--protocol-estimate", action="store_true", help="the original protocol's wall time from codet5-small's rates")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    parser.add_argument("--smoke", action="store_true", help="tiny shape, 1 round, 3 steps, 16 examples, 8 new tokens")
    args = parser.parse_args(argv)
    args.shapes = args.shapes.split(",")
    for name in args.shapes:
        if name not in SHAPES:
            parser.error(f"--shapes: unknown shape {name!r}; choose from {', '.join(SHAPES)}")
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU here")
    if args.precision == "fp16" and args.device != "cuda":
        parser.error("--precision fp16 needs --device cuda")
    if args.smoke:
        args.shapes, args.rounds = ["tiny"], 1
        args.train_steps, args.decode_examples = {"tiny": 3}, {"tiny": 16}
    if args.protocol_estimate and "codet5-small" not in args.shapes:
        parser.error("--protocol-estimate needs codet5-small in --shapes")
    return args


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def release_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> int | None:
    return torch.cuda.max_memory_allocated() if device == "cuda" else None


def machine_description(device: str) -> str:
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        processor = f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB"
    else:
        processor = platform.processor() or "unknown CPU"
        for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    return f"{processor}; {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}"


def matmul_peak(device: str, dtype: torch.dtype, sizes: tuple[int, ...]) -> tuple[float, int]:
    """Best FLOP/s of one square `torch.mm` (2 n^3 FLOPs) over `sizes`, three timed repetitions each."""
    best, best_size = 0.0, sizes[0]
    for n in sizes:
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        calls = max(1, sizes[-1] ** 3 // n**3) if device == "cuda" else 1  # small GPU products are too quick to time alone
        torch.mm(a, b)
        synchronize(device)
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b)
            synchronize(device)
            rate = calls * 2 * n**3 / (time.perf_counter() - started)
            if rate > best:
                best, best_size = rate, n
        del a, b
    return best, best_size


def codet5_small_shape(tokenizer) -> torch.nn.Module:
    """Salesforce/codet5-small's architecture (its config.json), random weights from seed 0; the special
    ids are the tiny tokenizer's, whose 4,096 ids all lie inside codet5-small's vocabulary."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=32100, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8,
        feed_forward_proj="relu", tie_word_embeddings=True, dropout_rate=0.1,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return T5ForConditionalGeneration(config)


class TokenCountingCollator:
    """Wraps the Trainer's collator to count the same useful tokens as codecl, batch by batch."""

    def __init__(self, collate: Callable):
        self.collate, self.tokens = collate, 0

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collate(features)
        self.tokens += useful_tokens(batch)
        return batch


def learning_rate(bench: Bench, method: str) -> float:
    return bench.config.methods[method].learning_rate or bench.config.train.learning_rate


def train_with_codecl(bench: Bench, shape: Shape, method: str, steps: int) -> Measured:
    """The runner's way: the method from the registry, attached to a copy, `train_task` on task 0."""
    from codecl.methods import METHODS
    from codecl.methods.base import TaskData
    from codecl.job import train_method_on_task

    method_config = bench.config.methods[method]
    model = copy.deepcopy(shape.model)
    release_memory(bench.device)
    synchronize(bench.device)
    started = time.perf_counter()
    continual = METHODS[method_config.method or method].build(method_config)
    model = continual.attach(model).to(bench.device)
    task = TaskData(0, bench.train_examples[: steps * bench.config.train.batch_size], [],
                    bench.tokenizer.pad_token_id, bench.accelerator.device)
    _, result = train_method_on_task(
        continual, model, task, bench.config.train.model_copy(update={"epochs": 1}),
        learning_rate=learning_rate(bench, method), accelerator=bench.accelerator, seed=0, log=lambda line: None,
    )
    synchronize(bench.device)
    seconds = time.perf_counter() - started
    if result.failure or result.steps != steps:
        raise RuntimeError(f"codecl {method}: {result.steps} of {steps} steps ({result.failure})")
    return Measured(result.tokens, seconds, peak_memory(bench.device))


def train_with_trainer(bench: Bench, shape: Shape, method: str, sampling: str, steps: int) -> Measured:
    """What a user writes instead: `Seq2SeqTrainer` on a list of feature dicts, PEFT's LoRA for `lora`."""
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Seq2SeqTrainer, Seq2SeqTrainingArguments

    train = bench.config.train
    examples = bench.train_examples[: steps * train.batch_size]
    features = [{"input_ids": e.source_ids, "attention_mask": [1] * len(e.source_ids), "labels": e.target_ids} for e in examples]
    model = copy.deepcopy(shape.model)
    release_memory(bench.device)
    synchronize(bench.device)
    started = time.perf_counter()
    collator = TokenCountingCollator(DataCollatorForSeq2Seq(bench.tokenizer, model=model, label_pad_token_id=-100))
    if method == "lora":
        lora = bench.config.methods["lora"]
        model = get_peft_model(model, LoraConfig(
            task_type="SEQ_2_SEQ_LM", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
        ))
    arguments = Seq2SeqTrainingArguments(
        output_dir=bench.output_dir, max_steps=steps, per_device_train_batch_size=train.batch_size,
        learning_rate=learning_rate(bench, method), weight_decay=train.weight_decay,
        warmup_steps=int(train.warmup_fraction * steps), lr_scheduler_type="linear", max_grad_norm=train.max_grad_norm,
        train_sampling_strategy=sampling, save_strategy="no", report_to=[], logging_steps=10**6,
        dataloader_num_workers=0, disable_tqdm=True, use_cpu=bench.device == "cpu", seed=0,
        bf16=bench.precision == "bf16", fp16=bench.precision == "fp16",
    )
    trainer = Seq2SeqTrainer(
        model=model, args=arguments, train_dataset=features, data_collator=collator, processing_class=bench.tokenizer
    )
    trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict; nothing else changes
    trainer.train()
    synchronize(bench.device)
    seconds = time.perf_counter() - started
    if trainer.state.global_step != steps:
        raise RuntimeError(f"Seq2SeqTrainer {method} ({sampling}): {trainer.state.global_step} of {steps} steps")
    return Measured(collator.tokens, seconds, peak_memory(bench.device))


def train_arm(bench: Bench, shape: Shape, method: str, sampling: str | None, steps: int) -> Measured:
    if sampling is None:
        return train_with_codecl(bench, shape, method, steps)
    return train_with_trainer(bench, shape, method, sampling, steps)


def decode_with_codecl(bench: Bench, model, examples: list, eval_config) -> tuple[Measured, list[str], None]:
    from codecl.evaluate.decode import generate

    release_memory(bench.device)
    synchronize(bench.device)
    started = time.perf_counter()
    texts = generate(model, bench.tokenizer, examples, eval_config, bench.accelerator, bench.language)
    synchronize(bench.device)
    return Measured(len(examples), time.perf_counter() - started, peak_memory(bench.device)), texts, None


def decode_with_generate(
    bench: Bench, model, examples: list, eval_config, batch_size: int = REFERENCE_DECODE_BATCH, by_length: bool = False,
) -> tuple[Measured, list[str], list[int]]:
    """`model.generate` over batches of 64 in data order, as a user would loop over a test set (or over
    codecl's batches: sorted by source length, `batch_size` each); the same autocast as codecl's, so
    outputs can be compared one for one. Texts come back in the examples' order."""
    tokenizer, max_new_tokens = bench.tokenizer, eval_config.new_tokens(bench.language)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].source_ids)) if by_length else list(range(len(examples)))
    examples = [examples[i] for i in order]
    texts, rows = [], []
    release_memory(bench.device)
    model.eval()
    synchronize(bench.device)
    started = time.perf_counter()
    with torch.no_grad(), bench.accelerator.autocast():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [e.source_ids for e in chunk]}, return_tensors="pt").to(bench.device)
            output = model.generate(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            )
            texts += tokenizer.batch_decode(output, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            rows += output[:, 1:].tolist()  # column 0 is the decoder's start token
    synchronize(bench.device)
    seconds = time.perf_counter() - started
    lengths = [row.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in row else len(row) for row in rows]
    in_order = [""] * len(texts)
    for text, i in zip(texts, order):
        in_order[i] = text
    return Measured(len(examples), seconds, peak_memory(bench.device)), in_order, lengths


def first_difference(ours: list[str], theirs: list[str]) -> tuple[int, str]:
    differing = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    if not differing:
        return 0, ""
    i = differing[0]
    return len(differing), f"example {i}: codecl {ours[i][:80]!r} / reference {theirs[i][:80]!r}"


def memory_note(measured: Measured) -> str:
    return f", peak {measured.peak_memory / 2**20:,.0f} MiB" if measured.peak_memory is not None else ""


def run_shape(bench: Bench, shape: Shape, rounds: int) -> None:
    """Warm-up of every arm, then `rounds` interleaved rounds; every run printed as it ends.

    The decoding arms share one copy of the model, made after the training arms of a round and dropped
    before the next, so it never counts in a training arm's peak memory."""
    decode_examples = bench.decode_examples[: shape.decode_examples]
    decoders = {
        CODECL_DECODE: decode_with_codecl, REFERENCE_DECODE: decode_with_generate,
        SORTED_DECODE: lambda *a: decode_with_generate(*a, batch_size=shape.eval_config.batch_size, by_length=True),
    }
    steps = min(WARMUP_STEPS, shape.train_steps)
    print(f"\n[{shape.name}] warm-up, untimed: every arm once ({steps} training step, {WARMUP_DECODE_EXAMPLES} decoded examples)")
    for arm, method, sampling in TRAINING_ARMS:
        train_arm(bench, shape, method, sampling, steps)
    decode_model = copy.deepcopy(shape.model).to(bench.device).eval()
    for decode in decoders.values():
        decode(bench, decode_model, decode_examples[:WARMUP_DECODE_EXAMPLES], shape.eval_config)
    del decode_model

    for round_number in range(1, rounds + 1):
        # Each round starts at another arm, so no arm always runs first (or right after another).
        turn = (round_number - 1) % len(TRAINING_ARMS)
        for arm, method, sampling in TRAINING_ARMS[turn:] + TRAINING_ARMS[:turn]:
            measured = train_arm(bench, shape, method, sampling, shape.train_steps)
            shape.training.setdefault(arm, []).append(measured)
            print(f"[{shape.name}] round {round_number} {arm:40s} {measured.rate:10,.0f} useful tokens/s "
                  f"({measured.amount:,} tokens, {measured.seconds:.2f} s{memory_note(measured)})", flush=True)
        texts, decode_model = {}, copy.deepcopy(shape.model).to(bench.device).eval()
        names = list(decoders)
        for arm in names[round_number % len(names):] + names[: round_number % len(names)]:
            decode = decoders[arm]
            measured, texts[arm], lengths = decode(bench, decode_model, decode_examples, shape.eval_config)
            shape.decoding.setdefault(arm, []).append(measured)
            if lengths is not None:
                shape.generated_tokens_per_sample = sum(lengths) / len(lengths)
            print(f"[{shape.name}] round {round_number} {arm:40s} {measured.rate:10,.2f} samples/s "
                  f"({measured.amount} samples, {measured.seconds:.2f} s{memory_note(measured)})", flush=True)
        differing = first_difference(texts[CODECL_DECODE], texts[REFERENCE_DECODE])
        shape.differing_outputs = max(shape.differing_outputs, differing)  # over every round
        del decode_model

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:  # one more codecl full-ft run, untimed, its matmuls counted
        counted = train_with_codecl(bench, shape, "full-ft", shape.train_steps)
    shape.flops = counter.get_total_flops()
    shape.train_tokens_per_example = counted.amount / (shape.train_steps * bench.config.train.batch_size)
    release_memory(bench.device)


def median_rate(runs: list[Measured]) -> float:
    return statistics.median(m.rate for m in runs)


def verdict(value: float, target: float, unit: str = "x") -> str:
    if value >= target:
        return "MET"
    if unit == "%":
        return f"MISSED by {100 * (target - value):.0f} points"
    return f"MISSED by {target - value:.2f}x ({1 - value / target:.0%} short)"


def shape_rows(shape: Shape, peak: float) -> list[tuple[str, str, str, str, str, str, str]]:
    """(arm, codecl, reference, ratio, target, verdict) rows of one shape, for both tables."""
    rows = []
    pairs = [("full-ft", "codecl full-ft", "HF Trainer full-ft"), ("LoRA", "codecl LoRA", "HF Trainer+PEFT LoRA")]
    for what, ours, theirs in pairs:
        for sampling, target in TRAINING_TARGETS.items():
            reference = f"{theirs} ({sampling})"
            ratio = median_rate(shape.training[ours]) / median_rate(shape.training[reference])
            rows.append((f"training {what} vs {reference}", f"{median_rate(shape.training[ours]):,.0f} tok/s",
                         f"{median_rate(shape.training[reference]):,.0f} tok/s", f"{ratio:.2f}x", f"≥ {target}x",
                         verdict(ratio, target)))
    ours, theirs = median_rate(shape.decoding[CODECL_DECODE]), median_rate(shape.decoding[REFERENCE_DECODE])
    rows.append((f"decoding vs {REFERENCE_DECODE}", f"{ours:,.1f} samples/s", f"{theirs:,.1f} samples/s",
                 f"{ours / theirs:.2f}x", f"≥ {DECODING_TARGET}x", verdict(ours / theirs, DECODING_TARGET)))
    sorted_batches = median_rate(shape.decoding[SORTED_DECODE])
    rows.append((f"decoding vs {SORTED_DECODE}", f"{ours:,.1f} samples/s", f"{sorted_batches:,.1f} samples/s",
                 f"{ours / sorted_batches:.2f}x", "(the greedy loop's own share)", "n/a"))
    achieved = shape.flops / statistics.median(m.seconds for m in shape.training["codecl full-ft"])
    share = achieved / peak
    applies = shape.name == "codet5-small"
    rows.append(("codecl full-ft FLOP/s vs matmul peak", f"{achieved / 1e9:,.1f} GFLOP/s", f"{peak / 1e9:,.1f} GFLOP/s",
                 f"{share:.0%}", f"≥ {PEAK_SHARE_TARGET:.0%}" + ("" if applies else " (codet5-small)"),
                 verdict(share, PEAK_SHARE_TARGET, "%") if applies else "n/a"))
    return rows


def report_shape(bench: Bench, shape: Shape, peak: float) -> list[tuple]:
    print(f"\n## {shape.name}: medians of {len(shape.training['codecl full-ft'])} rounds, {shape.train_steps} steps of "
          f"{bench.config.train.batch_size} examples, {shape.decode_examples} decoded examples")
    print("timings are wall time of each whole training call, setup included (codecl: method build/attach + "
          "train_task; HF: PEFT wrap + arguments + Seq2SeqTrainer + train())")
    on_cuda = bench.device == "cuda"
    print(f"| arm | median | min | max |{' peak GPU memory |' if on_cuda else ''}")
    print(f"|---|---:|---:|---:|{'---:|' if on_cuda else ''}")
    for arms, unit in ((shape.training, "tok/s"), (shape.decoding, "samples/s")):
        for arm, runs in arms.items():
            rates = [m.rate for m in runs]
            memory = f" {max(m.peak_memory for m in runs) / 2**20:,.0f} MiB |" if on_cuda else ""
            print(f"| {arm} | {statistics.median(rates):,.1f} {unit} | {min(rates):,.1f} | {max(rates):,.1f} |{memory}")
    tokens = {arm: {m.amount for m in runs} for arm, runs in shape.training.items()}
    print("useful tokens per run: " + "; ".join(f"{arm} {', '.join(f'{t:,}' for t in sorted(v))}" for arm, v in tokens.items()))
    for ours, theirs in (("codecl full-ft", "HF Trainer full-ft (random)"), ("codecl LoRA", "HF Trainer+PEFT LoRA (random)")):
        same = "equal" if tokens[ours] == tokens[theirs] else "DIFFERENT"
        print(f"useful tokens check: {ours} {min(tokens[ours])} / {theirs} {min(tokens[theirs])}: {same}")
    rows = shape_rows(shape, peak)
    for arm, ours, theirs, ratio, target, met in rows:
        kind = "decoding" if arm.startswith("decoding") else "training" if arm.startswith("training") else "FLOP/s"
        print(f"{kind} ratio: {arm}: codecl {ours} / {theirs} = {ratio} (target {target}): {met}")
    count, example = shape.differing_outputs
    print(f"decoded outputs: {count} differing of {shape.decode_examples}" + (f"; first: {example}" if count else " (all identical)"))
    print(f"FLOPs counted in one codecl full-ft call (FlopCounterMode, forward + backward): {shape.flops / 1e9:,.1f} GFLOP")
    return [(shape.name, *row) for row in rows]


def protocol_estimate(bench: Bench, shape: Shape, base_config_path: Path, overrides: list[str]) -> None:
    """Minutes of the original protocol at codet5-small's measured rates on this machine."""
    from codecl.config import load_config
    from codecl.data.tasks import build_stream

    protocol = load_config(PROTOCOL_CONFIG)
    # The protocol's length limits, measured on this corpus with the tiny tokenizer (codet5-small's own
    # tokenizer has a larger vocabulary and would give somewhat fewer tokens per example).
    limits = [f"data.max_source_tokens={protocol.data.max_source_tokens}", f"data.max_target_tokens={protocol.data.max_target_tokens}"]
    at_limits = load_config(base_config_path, [*overrides, *limits])
    stream = build_stream(at_limits.data, bench.tokenizer, at_limits.eval.split)
    train = [e for task in stream for e in task.splits["train"]]
    tokens_per_example = sum(len(e.source_ids) + len(e.target_ids) for e in train) / len(train)
    target_tokens = [min(len(e.target_ids), protocol.eval.max_new_tokens) for t in stream for e in t.splits[at_limits.eval.split]]
    generated_per_sample = sum(target_tokens) / len(target_tokens)
    full_rate, lora_rate = median_rate(shape.training["codecl full-ft"]), median_rate(shape.training["codecl LoRA"])
    # Generated tokens/s; a model that stopped at once would make this 0, so at least one token a sample.
    decode_rate = median_rate(shape.decoding[CODECL_DECODE]) * max(1.0, shape.generated_tokens_per_sample)
    tasks, epochs = len(protocol.data.tasks()), protocol.train.epochs
    train_tokens_per_method = tasks * protocol.data.train_examples * epochs * tokens_per_example
    evaluation_seconds = tasks * tasks * PROTOCOL_EVAL_EXAMPLES * generated_per_sample / decode_rate  # after every task, every task
    start_row_seconds = tasks * PROTOCOL_EVAL_EXAMPLES * generated_per_sample / decode_rate  # row 0, once for all
    per_method = {}
    for name, method in protocol.methods.items():
        kind = method.method or name
        if kind == "frozen":  # trains nothing; its rows repeat row 0
            per_method[name] = 0.0
            continue
        rate = lora_rate if kind == "lora" else full_rate
        per_method[name] = train_tokens_per_method / rate + evaluation_seconds
    seed_seconds = sum(per_method.values()) + start_row_seconds
    total_seconds = len(protocol.seeds) * sum(per_method.values()) + start_row_seconds
    print(f"\n## Protocol estimate: {PROTOCOL_CONFIG.relative_to(REPO)} at codet5-small's measured rates on this machine")
    print("assumptions:")
    print(f"- {tasks} tasks ({' -> '.join(task.name for task in protocol.data.tasks())}), {protocol.data.train_examples:,} training examples each, "
          f"{epochs:g} epochs, {len(protocol.methods)} methods ({', '.join(protocol.methods)}), {len(protocol.seeds)} seeds")
    print(f"- {tokens_per_example:.1f} useful tokens per training example of this corpus's {', '.join(at_limits.data.languages())} at the protocol's limits "
          f"({protocol.data.max_source_tokens}/{protocol.data.max_target_tokens}; {shape.train_tokens_per_example:.1f} in this "
          f"benchmark's examples), trained at this benchmark's tokens/s (batch {bench.config.train.batch_size}, the protocol's "
          f"is {protocol.train.batch_size})")
    print(f"- codecl full-ft {full_rate:,.0f} tok/s for every training method but LoRA's (LoRA, lora-shared: "
          f"{lora_rate:,.0f} tok/s); frozen trains and decodes nothing after row 0")
    print(f"- evaluation: {PROTOCOL_EVAL_EXAMPLES:,} examples per task after every task (the config itself scores its "
          f"{protocol.data.test_examples:,} test examples), row 0 once for all; {generated_per_sample:.1f} generated tokens per "
          f"sample (the references' mean), at {decode_rate:,.0f} generated tokens/s "
          f"({median_rate(shape.decoding[CODECL_DECODE]):.2f} samples/s x {shape.generated_tokens_per_sample:.1f} tokens measured)")
    print("- no HumanEval (the protocol's config scores none), no model loading or data preparation")
    print("| method | minutes per seed |")
    print("|---|---:|")
    for name, seconds in per_method.items():
        print(f"| {name} | {seconds / 60:,.1f} |")
    print(f"| row 0 (once) | {start_row_seconds / 60:,.1f} |")
    print(f"one seed of every method: {seed_seconds / 60:,.1f} min (target < {PROTOCOL_MINUTES_TARGET} min on one H100: "
          f"{'MET' if seed_seconds / 60 < PROTOCOL_MINUTES_TARGET else 'MISSED'}"
          f"{'' if bench.device == 'cuda' else ', but measured on a CPU'}); "
          f"all {len(protocol.seeds)} seeds: {total_seconds / 60:,.1f} min")


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    from accelerate import Accelerator

    import peft
    import transformers
    from codecl.config import load_config
    from codecl.data.tasks import build_stream
    from codecl.errors import UserError
    from codecl.results import git_commit
    from codecl.setting import load_base, log_to_stderr, make_accelerator

    transformers.logging.set_verbosity_error()
    # PEFT still calls this transformers property; the warning says nothing about the benchmark.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    try:
        config = load_config(args.config, args.set)
    except UserError as error:
        sys.exit(f"error: {error}")
    missing = [name for name in ("full-ft", "lora") if name not in config.methods]
    if missing:
        sys.exit(f"error: config {args.config}: the benchmark needs methods entries {' and '.join(missing)}")
    if args.smoke:
        config = config.model_copy(update={"eval": config.eval.model_copy(update={"max_new_tokens": 8, "max_new_tokens_per_language": {}})})
    base = load_base(config, log_to_stderr)
    task = build_stream(config.data, base.tokenizer, config.eval.split)[0]
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[args.precision]
    accelerator = (
        Accelerator(cpu=True, mixed_precision=mixed) if args.device == "cpu" and torch.cuda.is_available()
        else make_accelerator(args.precision)
    )
    batch_size = config.train.batch_size
    largest = len(task.splits["train"]) // batch_size
    train_steps = {name: min(args.train_steps[name], largest) for name in args.shapes}
    decode_counts = {name: min(args.decode_examples[name], len(task.splits[config.eval.split])) for name in args.shapes}

    print(f"# codecl throughput benchmark, {datetime.now():%Y-%m-%d %H:%M}")
    print(f"machine: {machine_description(args.device)}; device {args.device}, precision {args.precision}")
    commit = git_commit()
    print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}; codecl commit {(commit['commit'] or 'unknown')[:12]}{' (dirty)' if commit['dirty'] else ''}")
    print(f"config {args.config}{' ' + ' '.join(args.set) if args.set else ''}; task {task.name}: "
          f"{len(task.splits['train'])} training examples, batch {batch_size}; shapes {', '.join(args.shapes)}; "
          f"rounds {args.rounds}; training steps {', '.join(f'{n} {s}' for n, s in train_steps.items())}; decoded examples "
          f"{', '.join(f'{n} {c}' for n, c in decode_counts.items())}; max new tokens {config.eval.new_tokens(task.language)}"
          f"{'; smoke' if args.smoke else ''}")
    for name in args.shapes:
        if args.train_steps[name] > largest:
            print(f"note: {name}: {args.train_steps[name]} steps asked, {largest} fit one pass over the examples")

    with tempfile.TemporaryDirectory() as output_dir:
        bench = Bench(config, base.tokenizer, accelerator, args.device, args.precision, task.language,
                      task.splits["train"], task.splits[config.eval.split], output_dir)
        dtype = PRECISION_DTYPES[args.precision]
        sizes = (256, 512) if args.smoke else (1024, 2048, 4096) if args.device == "cpu" else (4096, 8192, 16384)
        peak, peak_size = matmul_peak(args.device, dtype, sizes)
        print(f"matmul peak ({args.precision} torch.mm, best of sizes {sizes}): {peak / 1e9:,.1f} GFLOP/s at n={peak_size}")
        shapes = []
        for name in args.shapes:
            model = base.model if name == "tiny" else codet5_small_shape(base.tokenizer)
            shape = Shape(name, model, train_steps[name], decode_counts[name], config.eval)
            print(f"[{name}] {sum(p.numel() for p in model.parameters()):,} parameters")
            run_shape(bench, shape, args.rounds)
            shapes.append(shape)
        rows = [row for shape in shapes for row in report_shape(bench, shape, peak)]
        if args.protocol_estimate:
            protocol_estimate(bench, shapes[args.shapes.index("codet5-small")], args.config, args.set)

    print(f"\n## Summary ({args.device}, {args.precision}; {machine_description(args.device)})")
    print("| shape | arm | codecl | reference | ratio | target | met? |")
    print("|---|---|---:|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
