"""A decoder on GGUF blocks (quantize="gguf"): close to transformers on the same weights, and lossless
against its own autoregressive decoding whatever the tree."""
import pytest
import torch

from conftest import CLASSES, random_prompt
from ltd.decoding.controller import StaticTree
from ltd.decoding.engine import Engine
from ltd.kernels.blocks import dequantize, repack
from ltd.kernels.build import kernel
from ltd.models.decoder import Decoder
from ltd.models.draft_lm import DraftLM
from test_gguf_kernel import raw_blocks

# The smallest shapes the k-quant blocks allow: rows of 256 weights.
GGUF_TINY = dict(vocab_size=101, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64, max_position_embeddings=256)
# Which matrices get which format, as in a Q4_K_M file (v and down sometimes Q6_K, the output Q6_K).
FORMAT = {"v_proj": "Q6_K", "down_proj": "Q6_K", "lm_head": "Q6_K"}


def gguf_state(config, seed: int = 0) -> dict:
    """A random model as a GGUF would give it: Blocks for every matrix, float norms and biases."""
    generator = torch.Generator().manual_seed(seed)
    hf = CLASSES[config.model_type][1](config)
    state = {}
    for i, (name, p) in enumerate(hf.state_dict().items()):
        if p.dim() == 2:
            format = next((f for key, f in FORMAT.items() if key in name), "Q4_K")
            state[name] = repack(format, raw_blocks(format, p.shape[0], p.shape[1], seed=seed * 1000 + i), p.shape[0])
        elif "norm" in name:
            state[name] = 1 + 0.1 * torch.randn(p.shape, generator=generator)
        else:
            state[name] = 0.1 * torch.randn(p.shape, generator=generator)
    return state


def dense(state: dict) -> dict:
    return {k: dequantize(v) if not isinstance(v, torch.Tensor) else v for k, v in state.items()}


@pytest.fixture(scope="module")
def model():
    if kernel() is None:
        pytest.skip("the GGUF kernel cannot be built here (no C++ compiler)")
    config = CLASSES["qwen2"][0](**GGUF_TINY, tie_word_embeddings=False, attn_implementation="eager")
    return config, gguf_state(config)


@pytest.fixture(params=["lanes", "panels"])
def layout(request, monkeypatch):
    """Q4_K matrices as the GGUF's blocks are repacked (lanes), or in panels of 16 rows (where the
    kernel runs them: AVX-512 VNNI, and AMX for trees where the CPU has it)."""
    from ltd.kernels import build

    if request.param == "panels" and not kernel().panels_built():
        pytest.skip("panels need the kernel built with AVX-512 VNNI")
    panels = request.param == "panels"
    monkeypatch.setattr("ltd.models.decoder.panelled", lambda parts: build.panelled(parts, always=True) if panels else parts)
    return request.param


def gguf_decoder(model) -> Decoder:
    config, state = model
    return Decoder.from_hf(config, dict(state), quantize="gguf")


def test_logits_match_transformers_on_the_dequantised_weights(model):
    """The one difference is the activations rounded to 127 levels per block of 256 (as llama.cpp's
    Q8_K does). Through two layers that moves logits by 2.4 % of their spread on average here,
    13 % at most (the int8 path's 63 levels per row: 5.7 % and 34 %)."""
    config, state = model
    hf = CLASSES["qwen2"][1](config).eval()
    hf.load_state_dict(dense(state))
    tokens = random_prompt(24, seed=3)
    with torch.no_grad():
        expected = hf(torch.tensor([tokens])).logits[0]
    decoder = gguf_decoder(model)
    decoder.reset(64)
    got, _ = decoder.forward(torch.tensor(tokens))
    spread, error = expected.std(), (got - expected).abs()
    assert error.mean() < 0.04 * spread and error.max() < 0.2 * spread
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9


@pytest.mark.parametrize("drafter", ["self", "other"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 2, 4), (8, 10, 60), (5, 4, 68)], ids=lambda s: "x".join(map(str, s)))
def test_speculation_on_blocks_equals_autoregressive(model, shape, drafter, layout):
    """A row of the kernel does not depend on its batch, so verifying a tree computes exactly what
    decoding one token at a time computes: greedy output equal token for token, whether the drafts
    are mostly accepted (the model drafting for itself) or mostly not (another random model)."""
    config = model[0]
    prompt = random_prompt(10, seed=7)
    expected = Engine(gguf_decoder(model), ()).generate_autoregressive(prompt, 40).tokens
    draft = gguf_decoder(model) if drafter == "self" else gguf_decoder((config, gguf_state(config, seed=1)))
    engine = Engine(gguf_decoder(model), (), DraftLM(draft, config.vocab_size))
    generation = engine.generate(prompt, StaticTree(*shape), 40)
    assert generation.tokens == expected
    accepted = sum(c.accepted for c in generation.cycles) / sum(c.depth for c in generation.cycles)
    assert accepted > 0.5 if drafter == "self" else accepted < 0.5


def test_weight_bytes_count_the_blocks(model):
    """What a token streams: the blocks (4.6-6.6 bits a weight), not a dequantised copy."""
    decoder = gguf_decoder(model)
    config = model[0]
    weights = sum(p.numel() for n, p in CLASSES["qwen2"][1](config).state_dict().items()
                  if p.dim() == 2 and "embed" not in n)
    assert 4.5 / 8 * weights < decoder.weight_bytes() < 7 / 8 * weights


@pytest.mark.parametrize("attention", ["kernel", "torch"])
@pytest.mark.parametrize("tree", ["chain", "branches"])
def test_a_verified_row_equals_decoding_it_alone(model, tree, attention, layout, monkeypatch):
    """Bit for bit: the kernel's rows are independent of their batch, and a quantised target's rows
    attend each on its own to exactly the keys decoding alone reads (otherwise attention's last-bit
    differences become different activation levels, and greedy output may part): by ltd's attention
    kernel, or without one by a torch call per tree row."""
    if attention == "torch":
        monkeypatch.setattr("ltd.models.decoder.kernel", lambda: None)
    prompt = torch.tensor(random_prompt(12, seed=5))
    path = [7, 3, 9]
    alone = gguf_decoder(model)
    alone.reset(64)
    alone.forward(prompt)
    expected = torch.stack([alone.forward(torch.tensor([token]))[0][0] for token in path])
    verifier = gguf_decoder(model)
    verifier.reset(64)
    verifier.forward(prompt)
    if tree == "chain":
        tokens, depths = path, [0, 1, 2]
        mask = torch.tril(torch.ones(3, 3, dtype=torch.bool))
        rows = [0, 1, 2]
    else:  # root 7 with children 5 and 3; 3's child 9 sits after 5's slot
        tokens, depths = [7, 5, 3, 9], [0, 1, 1, 2]
        mask = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 1, 1]], dtype=torch.bool)
        rows = [0, 2, 3]
    logits, _ = verifier.forward(torch.tensor(tokens), positions=12 + torch.tensor(depths), tree_mask=mask)
    assert torch.equal(logits[rows], expected)


@pytest.mark.parametrize("quantize", ["gguf", "q4_k"])
def test_the_layers_in_one_call_give_the_loops_bits(model, quantize, layout):
    """kernels/layers.cpp runs a sequence's layers in one call: a prompt, a token and a tree give the
    logits of the Python loop over `Decoder.block`, bit for bit (the same kernels and ops, in order)."""
    config, state = model
    decoders = [Decoder.from_hf(config, dict(state) if quantize == "gguf" else dense(state), quantize=quantize)
                for _ in range(2)]
    assert decoders[0].stacked is not None
    decoders[1].__dict__["stacked"] = None  # the loop
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 1, 1]], dtype=torch.bool)
    outputs = []
    for decoder in decoders:
        decoder.reset(64)
        outputs.append([decoder.forward(torch.tensor(random_prompt(12, seed=5)))[0],
                        decoder.forward(torch.tensor([7]))[0],
                        decoder.forward(torch.tensor([7, 5, 3, 9]), positions=13 + torch.tensor([0, 1, 1, 2]),
                                        tree_mask=mask)[0]])
    assert all(torch.equal(a, b) for a, b in zip(*outputs))
