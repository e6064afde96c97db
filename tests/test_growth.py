"""Growth methods against closed-form parameter counts, and on a gated T5 v1.1 as well as the ReLU T5.

Every count below is written from the T5 config (d_model, d_ff, num_heads, d_kv, num_buckets, layer
counts), never as a total copied from a run, so a change in what a method adds shows up as a formula
that no longer holds.
"""

import copy

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from codecl.methods.base import TaskData
from codecl.methods import METHODS
from codecl.methods.ffn import WidenedFFN
from codecl.methods.growth import SLOTS_ATTRIBUTE
from codecl.methods.heads import ExpandedAttention
from test_methods import CASES, build, greedy, logits, train

BASES = {"relu": "tiny_base", "gated": "gated_base"}  # base kind -> fixture
GATED_CASES = ["ffn-per-task", "layers-per-task", "heads-per-task"]


@pytest.fixture(scope="module")
def gated_base(tiny_base):
    """The tiny T5's shape as a T5 v1.1: gated-GELU FFNs (`wi_0`, `wi_1`) and `tie_word_embeddings=False`,
    which transformers 5 reads as unscaled decoder outputs (it ties the LM head to the embedding always)."""
    relu, tokenizer = tiny_base
    shape = relu.config
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=shape.vocab_size, d_model=shape.d_model, d_kv=shape.d_kv, d_ff=shape.d_ff,
        num_layers=shape.num_layers, num_decoder_layers=shape.num_decoder_layers, num_heads=shape.num_heads,
        dropout_rate=0.0, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    ))
    return model.eval(), tokenizer


# --- Closed forms. T5 linears have no bias; its layer norm (RMS) is a d_model scale with no bias. ---

def attention_parameters(t5: T5Config) -> int:
    """q, k, v: d_model -> h·d_kv each; o: h·d_kv -> d_model. 4·d_model·h·d_kv."""
    return 4 * t5.d_model * t5.num_heads * t5.d_kv


def feed_forward_parameters(t5: T5Config) -> int:
    """wi (wi_0 and wi_1 when gated): d_model -> d_ff; wo: d_ff -> d_model. (2 or 3)·d_model·d_ff."""
    return (3 if t5.is_gated_act else 2) * t5.d_model * t5.d_ff


def block_parameters(t5: T5Config, decoder: bool) -> int:
    """Encoder block: 2 layer norms + self attention + FFN. A decoder block adds cross attention and its
    layer norm. No relative_attention_bias: only a stack's first block owns that table."""
    encoder = 2 * t5.d_model + attention_parameters(t5) + feed_forward_parameters(t5)
    return encoder + (t5.d_model + attention_parameters(t5) if decoder else 0)


def t5_parameters(t5: T5Config) -> int:
    """Shared embedding (and an LM head unless tied) + blocks + one bias table (num_buckets × h) per
    stack + a final layer norm per stack."""
    embeddings = t5.vocab_size * t5.d_model * (1 if t5.tie_word_embeddings else 2)
    blocks = t5.num_layers * block_parameters(t5, False) + t5.num_decoder_layers * block_parameters(t5, True)
    return embeddings + blocks + 2 * t5.relative_attention_num_buckets * t5.num_heads + 2 * t5.d_model


def stack_depths(t5: T5Config, position: str) -> dict[str, int]:
    depths = {"encoder": t5.num_layers, "decoder": t5.num_decoder_layers}
    return {name: depth for name, depth in depths.items() if position in (name, "both")}


def chosen_blocks(depth: int, layers: list[int] | None) -> int:
    return depth if layers is None else sum(1 for index in range(depth) if index in layers)


def lora_parameters(config, t5: T5Config) -> int:
    """Per targeted linear, A (r × in) and B (out × r): r·(in + out). Base blocks only: each encoder block
    has one attention, each decoder block two (self and cross)."""
    inner = t5.num_heads * t5.d_kv
    shapes = {"q": (t5.d_model, inner), "k": (t5.d_model, inner), "v": (t5.d_model, inner), "o": (inner, t5.d_model)}
    attentions = t5.num_layers + 2 * t5.num_decoder_layers
    return attentions * sum(config.r * (fan_in + fan_out) for fan_in, fan_out in (shapes[t] for t in config.target_modules))


def added_block_parameters(config, t5: T5Config) -> int:
    """`num_layers` whole blocks on each chosen stack."""
    return config.num_layers * sum(block_parameters(t5, name == "decoder") for name in stack_depths(t5, config.position))


def ffn_unit_parameters(config, t5: T5Config) -> int:
    """Per grown FFN: units × (d_model input weights, twice when gated (wi_0, wi_1) + a d_model wo column)."""
    inputs = 2 if t5.is_gated_act else 1
    ffns = sum(chosen_blocks(depth, config.layers) for depth in stack_depths(t5, config.position).values())
    return ffns * config.units * (t5.d_model * inputs + t5.d_model)


def head_parameters(config, t5: T5Config) -> int:
    """Per grown attention: 3·h·d_kv·d_model (q, k, v rows) + d_model·h·d_kv (o columns). Per self-attention
    stack: one bias slice, num_buckets × h, shared by the stack's layers; cross-attention has no position bias."""
    h = config.heads
    per_attention = 3 * h * t5.d_kv * t5.d_model + t5.d_model * h * t5.d_kv
    depths = {"encoder": t5.num_layers, "decoder": t5.num_decoder_layers, "cross": t5.num_decoder_layers}
    attentions = sum(chosen_blocks(depths[kind], config.layers) for kind in config.attentions)
    bias_slices = sum(1 for kind in config.attentions if kind != "cross")
    return attentions * per_attention + bias_slices * t5.relative_attention_num_buckets * h


def on_base(config, t5) -> tuple[list[int], int]:
    """EWC and replay train what their base trains: every weight, or one LoRA adapter through the stream."""
    return ([t5_parameters(t5)] * 2, 0) if config.base == "full" else grows(lora_parameters(config, t5), False)


def grows(per_task_parameters: int, per_task: bool) -> tuple[list[int], int]:
    """Trained on each task the same amount; over 2 tasks a per-task method adds it twice, a stream once."""
    return [per_task_parameters] * 2, per_task_parameters * (2 if per_task else 1)


def hybrid(config, t5: T5Config) -> tuple[list[int], int]:
    """An adapter per task; the blocks per task too, or (shared_layer) trained on task 0 only and kept."""
    adapter, blocks = lora_parameters(config, t5), added_block_parameters(config, t5)
    if config.shared_layer:
        return [adapter + blocks, adapter], 2 * adapter + blocks
    return [adapter + blocks] * 2, 2 * (adapter + blocks)


CLOSED_FORMS = {  # method -> (config, t5) -> ([trained on task 0, on task 1], added over both tasks)
    "frozen": lambda config, t5: ([0, 0], 0),
    "full-ft": lambda config, t5: ([t5_parameters(t5)] * 2, 0),
    "lora": lambda config, t5: grows(lora_parameters(config, t5), config.per_task),
    "layers": lambda config, t5: grows(added_block_parameters(config, t5), config.per_task),
    "ffn": lambda config, t5: grows(ffn_unit_parameters(config, t5), config.per_task),
    "heads": lambda config, t5: grows(head_parameters(config, t5), config.per_task),
    "hybrid": hybrid,
    "multitask": lambda config, t5: ([t5_parameters(t5)] * 2, 0),
    "ewc": lambda config, t5: on_base(config, t5),
    "replay": lambda config, t5: on_base(config, t5),
    "olora": lambda config, t5: grows(lora_parameters(config, t5), per_task=True),
}


def method_config(case):
    return METHODS[case.method].config_class(method=case.method, **case.options)


def parameter_count(model) -> int:
    """Each parameter once (tied embeddings, blocks reachable from both a stack and its slots)."""
    return sum(p.numel() for p in model.parameters())


def test_every_registered_method_has_a_closed_form():
    assert set(METHODS) <= set(CLOSED_FORMS)


@pytest.mark.parametrize("kind", BASES)
def test_the_base_itself_matches_the_closed_form(kind, request):
    base, _ = request.getfixturevalue(BASES[kind])
    assert parameter_count(base) == t5_parameters(base.config)


@pytest.mark.parametrize("kind", BASES)
@pytest.mark.parametrize("name", CASES)
def test_trained_and_added_parameters_match_the_closed_form(name, kind, request):
    base, _ = request.getfixturevalue(BASES[kind])
    case = CASES[name]
    method = build(case)
    model = method.attach(copy.deepcopy(base))
    trained = []
    for task in (0, 1):
        parameters = method.begin_task(model, task)
        assert len({id(p) for p in parameters}) == len(parameters)  # a repeat would get two AdamW steps
        assert all(p.requires_grad for p in parameters)
        trained.append(parameters)
        method.end_task(model, TaskData(task, [], [], 0, torch.device("cpu")))
    per_task, added = CLOSED_FORMS[case.method](method_config(case), base.config)
    assert [sum(p.numel() for p in parameters) for parameters in trained] == per_task
    assert parameter_count(model) - parameter_count(base) == added
    first, second = ({id(p) for p in parameters} for parameters in trained)
    if case.isolates_tasks or case.new_parameters_per_task:
        assert not first & second  # task 1 never trains what task 0 trained
    else:
        assert first == second


def test_an_added_block_copied_from_a_first_block_leaves_its_bias_table_behind(tiny_base, tiny_batch):
    """With one layer the template block is the one that owns the stack's bias table."""
    base, _ = tiny_base
    shape = copy.deepcopy(base.config)
    shape.num_layers = shape.num_decoder_layers = 1
    torch.manual_seed(0)
    one_layer = T5ForConditionalGeneration(shape).eval()
    method = build(CASES["layers-per-task"])
    model = method.attach(copy.deepcopy(one_layer))
    parameters = method.begin_task(model, 0)
    expected = added_block_parameters(method_config(CASES["layers-per-task"]), one_layer.config)
    assert sum(p.numel() for p in parameters) == expected
    assert (logits(model, tiny_batch) - logits(one_layer, tiny_batch)).abs().max() <= 1e-5


def test_gated_ffn_grows_wi_0_and_wi_1(gated_base):
    base, _ = gated_base
    assert base.config.is_gated_act and not base.config.scale_decoder_outputs
    method = build(CASES["ffn-per-task"])
    model = method.attach(copy.deepcopy(base))
    method.begin_task(model, 0)
    widened = [m for m in model.modules() if isinstance(m, WidenedFFN)]
    assert len(widened) == base.config.num_layers + base.config.num_decoder_layers
    units, d_model = method.config.units, base.config.d_model
    for ffn in widened:
        assert hasattr(ffn.base, "wi_0") and hasattr(ffn.base, "wi_1")
        extra = ffn.slots.current
        assert extra.wi.shape == extra.wi_1.shape == (units, d_model)
        assert extra.wo.shape == (d_model, units)


@pytest.mark.parametrize("name", GATED_CASES)
def test_gated_outputs_unchanged_at_initialisation(name, gated_base, tiny_batch):
    base, _ = gated_base
    method = build(CASES[name])
    model = method.attach(copy.deepcopy(base))
    method.begin_task(model, 0)
    assert (logits(model, tiny_batch) - logits(base, tiny_batch)).abs().max() <= 1e-5


def grown_shape(name: str, t5: T5Config, options: dict) -> dict:
    """What the exported config should say: the base's numbers plus what the method added."""
    if name.startswith("ffn"):
        return {"d_ff": t5.d_ff + options["units"]}
    if name.startswith("heads"):
        return {"num_heads": t5.num_heads + options["heads"]}
    added = options["num_layers"]
    return {"num_layers": t5.num_layers + added, "num_decoder_layers": t5.num_decoder_layers + added}


@pytest.mark.parametrize("name", GATED_CASES)
def test_gated_export_is_a_larger_plain_t5_with_the_same_outputs(name, gated_base, tiny_batch, tmp_path):
    base, tokenizer = gated_base
    method = build(CASES[name])
    model = method.attach(copy.deepcopy(base))
    for task in (0, 1):
        train(model, method, task, tiny_batch, tokenizer)
    for task in (0, 1):
        method.export(model, task).save_pretrained(tmp_path / f"task{task}")
        plain = T5ForConditionalGeneration.from_pretrained(tmp_path / f"task{task}").eval()
        assert type(plain) is T5ForConditionalGeneration
        assert plain.config.is_gated_act and not plain.config.scale_decoder_outputs
        for key, value in grown_shape(name, base.config, CASES[name].options).items():
            assert getattr(plain.config, key) == value, key
        method.use_task(model, task)
        trained_logits = logits(model, tiny_batch)
        assert (trained_logits - logits(base, tiny_batch)).abs().max() > 1e-3  # training moved it: not vacuous
        assert (logits(plain, tiny_batch) - trained_logits).abs().max() <= 1e-4
        assert torch.equal(greedy(plain, tiny_batch), greedy(model, tiny_batch))


def test_new_heads_bias_slice_starts_as_the_mean_of_the_base_heads_columns(tiny_base, tiny_batch):
    base, _ = tiny_base
    method = build(CASES["heads-per-task"])
    model = method.attach(copy.deepcopy(base))
    method.begin_task(model, 0)
    new_heads, base_heads = method.config.heads, base.config.num_heads

    for stack in ("encoder", "decoder"):
        table = getattr(base, stack).block[0].layer[0].SelfAttention.relative_attention_bias.weight
        # Distinct columns, so the mean differs from a copy of any one of them.
        assert all(not torch.allclose(table[:, 0], table[:, h]) for h in range(1, base_heads))
        slice_ = getattr(getattr(model, stack), SLOTS_ATTRIBUTE).current.weight
        assert slice_.shape == (base.config.relative_attention_num_buckets, new_heads)
        assert torch.allclose(slice_, table.mean(dim=1, keepdim=True).expand(-1, new_heads), atol=1e-7, rtol=0)

    # And in the forward pass: the bias every grown attention is given, bucketed by position.
    seen = {}

    def record(name):
        def hook(module, args, kwargs):
            seen[name] = kwargs["position_bias"].detach()
        return hook

    for name, module in model.named_modules():
        if isinstance(module, ExpandedAttention):
            module.inner.register_forward_pre_hook(record(name), with_kwargs=True)
    logits(model, tiny_batch)
    assert len(seen) == base.config.num_layers + 2 * base.config.num_decoder_layers
    for name, bias in seen.items():
        assert bias.shape[1] == base_heads + new_heads, name
        if "EncDecAttention" in name:  # T5 has no position bias across attention, for new heads neither
            assert not bias.any(), name
            continue
        mean_of_base = bias[:, :base_heads].mean(dim=1, keepdim=True)
        assert torch.allclose(bias[:, base_heads:], mean_of_base.expand_as(bias[:, base_heads:]), atol=1e-6, rtol=0), name
