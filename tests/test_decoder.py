"""The re-implemented target decoder against transformers' own forward, used as the reference."""
import copy

import pytest
import torch
from torch.testing import assert_close

from conftest import FAMILIES, LLAMA3_ROPE, PLACES, build_hf, decoder_of, hf_logits, random_prompt, tiny_config
from ltd.core.errors import LtdError
from ltd.kernels.build import kernel
from ltd.models.decoder import Decoder, rope_tables

TOL = dict(atol=1e-5, rtol=1e-5)

PREFIX = random_prompt(10, seed=1)

# A hand-made draft tree, verify-input order (parents first). Index 0 is the root (the last
# accepted token). Each entry: (token, parent index); parent -1 marks the root itself.
#         0
#       /   \
#      1     2
#     / \     \
#    3   4     5
#    |
#    6
TREE = [(7, -1), (11, 0), (13, 0), (17, 1), (19, 1), (23, 2), (29, 3)]


def tree_tokens() -> torch.Tensor:
    return torch.tensor([t for t, _ in TREE])


def tree_path(node: int) -> list[int]:
    """Verify-input indices from the root to `node`, both included."""
    path = []
    while node >= 0:
        path.append(node)
        node = TREE[node][1]
    return path[::-1]


def tree_mask_and_depths() -> tuple[torch.Tensor, torch.Tensor]:
    n = len(TREE)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for node in range(n):
        mask[node, tree_path(node)] = True
    depths = torch.tensor([len(tree_path(node)) - 1 for node in range(n)])
    return mask, depths


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def test_chunked_prefill_equals_hf_forward(tiny, family):
    target = tiny(family)
    tokens = random_prompt(20, seed=2)
    decoder = target.decoder()
    decoder.reset()
    chunks = [decoder(torch.tensor(tokens[a:b]))[0] for a, b in ((0, 12), (12, 13), (13, 20))]
    assert decoder.length == 20
    assert_close(torch.cat(chunks), hf_logits(target.hf, tokens), **TOL)


@pytest.mark.parametrize("layout", ["out_in", "in_out", "packed"])
def test_every_weight_layout_gives_transformers_logits(tiny, family, layout, monkeypatch):
    """Whichever layout the machine's measurement picks (ltd.models.layouts; tiny matrices keep
    the default unless forced, as here), prefill, one-token steps and a tree verification equal
    transformers' forward, and the weights a token streams are counted the same."""
    import ltd.models.decoder as decoder_module

    target = tiny(family)
    plain = target.decoder()
    monkeypatch.setattr(decoder_module, "fastest_layout", lambda shape, linear: layout)
    decoder = target.decoder()
    assert decoder.weight_bytes() == plain.weight_bytes()
    tokens = random_prompt(20, seed=2)
    decoder.reset()
    rows = [decoder(torch.tensor(tokens[:12]))[0]] + [decoder(torch.tensor([t]))[0] for t in tokens[12:]]
    assert_close(torch.cat(rows), hf_logits(target.hf, tokens), **TOL)
    mask, depths = tree_mask_and_depths()
    decoder.reset()
    decoder(torch.tensor(PREFIX))
    tree_logits, _ = decoder(tree_tokens(), positions=len(PREFIX) + depths, tree_mask=mask)
    for node in range(len(TREE)):
        path = [TREE[i][0] for i in tree_path(node)]
        assert_close(tree_logits[node], hf_logits(target.hf, PREFIX + path)[-1], **TOL)


def test_last_only_returns_the_last_row(tiny):
    target = tiny("llama")
    tokens = random_prompt(9, seed=3)
    decoder = target.decoder()
    decoder.reset()
    logits, features = decoder(torch.tensor(tokens), last_only=True)
    assert logits.shape == (1, target.config.vocab_size) and features is None
    assert_close(logits[0], hf_logits(target.hf, tokens)[-1], **TOL)


def test_llama3_rope_scaling_matches_hf():
    config = tiny_config("llama", rope_parameters=dict(LLAMA3_ROPE))
    assert config.rope_parameters["rope_type"] == "llama3"
    model = build_hf(config, seed=5)
    # Past original_max_position_embeddings (64), where llama3 scaling matters most.
    tokens = random_prompt(100, seed=4)
    decoder = decoder_of(model)
    decoder.reset()
    got = torch.cat([decoder(torch.tensor(tokens[:70]))[0], decoder(torch.tensor(tokens[70:]))[0]])
    assert_close(got, hf_logits(model, tokens), **TOL)


def test_llama3_rope_tables_differ_from_default():
    """Guards the test above: the scaled rope must actually change the tables."""
    scaled, _ = rope_tables(tiny_config("llama", rope_parameters=dict(LLAMA3_ROPE)), 100)
    plain, _ = rope_tables(tiny_config("llama", rope_parameters={"rope_type": "default", "rope_theta": 500000.0}), 100)
    assert (scaled - plain).abs().max() > 1e-2


def verify_tree(decoder, device="cpu") -> torch.Tensor:
    """Prefill PREFIX then verify TREE in one pass; returns the tree's logits [nodes, vocab]."""
    decoder.reset()
    decoder(torch.tensor(PREFIX, device=device))
    mask, depths = tree_mask_and_depths()
    logits, _ = decoder(tree_tokens().to(device), positions=len(PREFIX) + depths.to(device),
                        tree_mask=mask.to(device))
    return logits


def test_tree_verify_equals_causal_forward_of_each_path(tiny, family):
    target = tiny(family)
    logits = verify_tree(target.decoder())
    tokens = tree_tokens()
    for node in range(len(TREE)):
        path_tokens = tokens[tree_path(node)].tolist()
        expected = hf_logits(target.hf, PREFIX + path_tokens)[-1]
        assert_close(logits[node], expected, **TOL, msg=lambda m: f"node {node}: {m}")


HALF_PLACES = [p for p in PLACES if p.values[0][1] != torch.float32]


@pytest.mark.parametrize("place", HALF_PLACES)
def test_bfloat16_logits_are_as_close_to_float32_as_transformers_own(tiny, family, place):
    """In bfloat16 the decoder keeps float32 where numerics need it (norms, attention): its logits
    stay at least about as close to the float32 reference as transformers' own bfloat16 forward."""
    target = tiny(family)
    tokens = random_prompt(30, seed=3)
    reference = hf_logits(target.hf, tokens)
    theirs = hf_logits(copy.deepcopy(target.hf).to(place[0], place[1]), tokens).float().cpu()
    decoder = target.decoder(place=place)
    decoder.reset()
    ours = decoder(torch.tensor(tokens, device=place[0]))[0].float().cpu()
    assert ours.dtype == torch.float32 and decoder.embed.dtype == place[1]
    their_error = (theirs - reference).abs().max()
    assert (ours - reference).abs().max() <= 1.5 * their_error
    assert (ours.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.9


@pytest.mark.parametrize("place", HALF_PLACES)
def test_bfloat16_tree_verify_equals_its_own_autoregressive_steps(tiny, family, place):
    """Each node of a verified tree gets the logits the same bfloat16 decoder gives that path one
    token at a time: the equality greedy losslessness rests on. Bit for bit on the CPU; a GPU's
    matrix kernels are chosen by shape, so there only the argmax must agree."""
    target = tiny(family)
    device = place[0]
    tolerance = 0.0 if device == "cpu" else 0.05
    logits = verify_tree(target.decoder(place=place), device)
    tokens = tree_tokens()
    for node in range(len(TREE)):
        stepwise = target.decoder(place=place)
        stepwise.reset()
        stepwise(torch.tensor(PREFIX, device=device))
        for token in tokens[tree_path(node)].tolist():
            expected = stepwise(torch.tensor([token], device=device))[0][-1]
        assert logits[node].argmax() == expected.argmax(), f"node {node}"
        assert_close(logits[node].float(), expected.float(), atol=tolerance, rtol=0,
                     msg=lambda m: f"node {node}: {m}")


@pytest.mark.parametrize("kept", [[0, 1, 3, 6], [0, 2, 5], [0, 1], [0]],
                         ids=["deep-gaps", "right-branch", "contiguous", "root-only"])
def test_cache_keep_compacts_accepted_path(tiny, family, kept):
    target = tiny(family)
    decoder = target.decoder()
    verify_tree(decoder)
    start = len(PREFIX)
    decoder.cache.keep(start, start + torch.tensor(kept))
    assert decoder.length == start + len(kept)
    next_token = 31
    logits, _ = decoder(torch.tensor([next_token]))
    path_tokens = tree_tokens()[kept].tolist()
    assert_close(logits[0], hf_logits(target.hf, PREFIX + path_tokens + [next_token])[-1], **TOL)


def test_features_are_layer_inputs_in_requested_order(tiny, family):
    target = tiny(family)
    tokens = random_prompt(8, seed=6)
    decoder = target.decoder()
    decoder.reset()
    _, features = decoder(torch.tensor(tokens), feature_layers=(2, 2, 1), last_only=True)
    with torch.no_grad():
        hidden = target.hf(torch.tensor(tokens)[None], output_hidden_states=True).hidden_states
    # hidden_states[i] is the input of layer i (hidden_states[0]: the embeddings).
    expected = torch.cat([hidden[2][0], hidden[2][0], hidden[1][0]], dim=-1)
    assert features.shape == (len(tokens), 3 * target.config.hidden_size)
    assert_close(features, expected, **TOL)


def test_context_overflow_raises(tiny):
    decoder = tiny("llama").decoder()
    decoder.reset(capacity=16)
    decoder(torch.arange(10))
    with pytest.raises(LtdError, match="exceeds the limit of 16"):
        decoder(torch.arange(7))


def test_left_padded_rows_decode_as_if_each_were_alone(tiny, family):
    """A batch: rows of different lengths, left-padded into one cache, then one step each (one row
    already finished and fed as padding): every real row's logits equal the row decoded alone."""
    decoder = tiny(family).decoder()
    rows = [random_prompt(n, seed=10 + n) for n in (9, 4, 7)]
    width, capacity = max(map(len, rows)), 16
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    valid = torch.zeros(len(rows), capacity, dtype=torch.bool)
    for b, row in enumerate(rows):
        tokens[b, width - len(row):] = torch.tensor(row)
        valid[b, width - len(row) : width] = True
    positions = (valid[:, :width].cumsum(1) - 1).clamp(min=0)
    decoder.reset(capacity, batch=len(rows))
    prefill, _ = decoder(tokens, positions=positions, valid=valid)
    step = torch.tensor([[5], [6], [8]])
    valid[:, width] = torch.tensor([True, False, True])
    stepped, _ = decoder(step, positions=positions[:, -1:] + 1, valid=valid)
    assert torch.isfinite(stepped).all()
    for b, row in enumerate(rows):
        decoder.reset(capacity)
        alone, _ = decoder(torch.tensor(row + step[b].tolist()))
        assert_close(prefill[b, width - len(row):], alone[:-1], **TOL)
        if valid[b, width]:
            assert_close(stepped[b, 0], alone[-1], **TOL)


def test_weight_bytes_count_what_a_token_streams(tiny):
    """Every layer's matrices and norms, the final norm and the output matrix; in int8 a matrix
    takes a byte an entry and a float scale a row."""
    target = tiny("qwen2")
    config, state = target.hf.config, target.hf.state_dict()
    counted = [k for k in state if k.startswith("model.layers.") and not k.endswith("bias") or k == "model.norm.weight"]
    head = "lm_head.weight" if "lm_head.weight" in state else "model.embed_tokens.weight"
    matrices = [state[k] for k in counted if state[k].dim() == 2] + [state[head]]
    norms = [state[k] for k in counted if state[k].dim() == 1]
    assert Decoder.from_hf(config, dict(state)).weight_bytes() == 4 * sum(t.numel() for t in matrices + norms)
    assert Decoder.from_hf(config, dict(state), quantize="int8").weight_bytes() == (
        sum(t.numel() + 4 * t.shape[0] for t in matrices) + 4 * sum(t.numel() for t in norms))


@pytest.mark.parametrize("quantize", [None, "int8", "q4_k"])
def test_multiply_adds_count_every_matrix_entry_once(tiny, quantize):
    """One a weight of every layer's matrices and of the output matrix; on blocks, the columns the
    kernel pads to a multiple of 256 count too (it multiplies them)."""
    target = tiny("qwen2")
    config, state = target.hf.config, target.hf.state_dict()
    head = "lm_head.weight" if "lm_head.weight" in state else "model.embed_tokens.weight"
    matrices = [t for k, t in state.items() if k.startswith("model.layers.") and t.dim() == 2] + [state[head]]
    padded = (lambda columns: -(-columns // 256) * 256) if quantize == "q4_k" else (lambda columns: columns)
    assert Decoder.from_hf(config, dict(state), quantize=quantize).multiply_adds() == sum(
        t.shape[0] * padded(t.shape[1]) for t in matrices)


@pytest.mark.parametrize("out_features, in_features", [(96, 64), (37, 13), (1, 5)])
def test_an_int8_rows_result_is_its_own_and_near_the_floats(out_features, in_features):
    """Each row of x is quantised on its own scale and its integer products summed exactly, so a row
    gives the same floats alone, in any batch, in any order (a drafter fed 1 token or 13 proposes
    alike); and the result is the float product's within the rounding of 7-bit activations and
    8-bit weights (about 2 % of a row's norm; 4 % allowed)."""
    from ltd.models.decoder import int8_linear, int8_weight

    generator = torch.Generator().manual_seed(out_features)
    weight = torch.randn(out_features, in_features, generator=generator) * 0.05
    x = torch.randn(9, in_features, generator=generator)
    x[2] *= 1000  # a loud row: on one scale for the call it would drown the others
    x[4] *= 1e-3
    x[6] = 0
    packed = int8_weight(weight)
    out = int8_linear(x, packed)
    for i in range(len(x)):
        assert torch.equal(int8_linear(x[i : i + 1], packed)[0], out[i])
    for start, end in [(0, 3), (2, 9), (5, 7)]:
        assert torch.equal(int8_linear(x[start:end], packed), out[start:end])
    order = torch.randperm(len(x), generator=generator)
    assert torch.equal(int8_linear(x[order], packed), out[order])
    assert torch.equal(int8_linear(x.view(3, 3, -1), packed), out.view(3, 3, -1))
    assert torch.equal(int8_linear(x.t().contiguous().t(), packed), out)  # a strided view
    assert torch.equal(out[6], torch.zeros(out_features))
    if out_features > 1:  # a single output may cancel to near 0: its relative error says little
        exact = x @ weight.t()
        error = (out - exact).norm(dim=-1) / exact.norm(dim=-1).clamp(min=1e-30)
        assert error[torch.arange(len(x)) != 6].max() < 0.04


@pytest.mark.parametrize("quantize", ["null", "q4_k"])
def test_bench_decode_reports_the_drafters_step_and_the_bandwidth_bound(tmp_path, quantize):
    """In every precision; a quantised target is not compared with transformers (another model)."""
    import json
    import subprocess
    import sys

    from conftest import save_tiny_checkpoint

    save_tiny_checkpoint(tmp_path / "model")
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "ltd.cli.bench_decode", "model=smollm2-135m", "model.name=tiny",
         f"model.source={tmp_path / 'model'}", "model.max_context=256", "drafter.draft_vocab_size=64",
         f"drafter.root={tmp_path}", "prompts=1", "repeats=1", "max_new_tokens=4", "verify_sizes=[1,2]",
         "verify_context=16", "controller.depth=2", "controller.top_k=2", "controller.verify=2", "threads=1",
         f"model.quantize={quantize}", f"output={output}", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(output.read_text())
    assert report["draft_step_ms"] > 0 and report["target_step_ms"] > 0 and 0 < report["of_bandwidth_bound"]
    assert report["machine"]["threads"] == 1 and "vector extensions" in report["machine"]
    assert "one step at a 16-token context: target" in result.stdout and "copy bandwidth" in result.stdout
    assert ("transformers generate()" in result.stdout) == (quantize == "null")
    assert report["precision"] == ("float32" if quantize == "null" else "Q4_K blocks requantised by ltd")
    # on blocks, the kernel's arithmetic floor beside the verify curve
    assert ("arithmetic floor:" in result.stdout) == (quantize == "q4_k" and kernel() is not None
                                                      and kernel().path() != "portable")
