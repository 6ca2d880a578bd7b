"""Greedy speculative decoding must reproduce greedy autoregressive decoding token for token, in
float32 and in bfloat16 (on the CPU; on a GPU where there is one)."""
import pytest
import torch

from conftest import FAMILIES, PLACES, decoder_of, random_prompt
from ltd.core.errors import LtdError
from ltd.decoding.controller import StaticTree
from ltd.decoding.engine import Engine
from ltd.decoding.reference import TIE, matches_reference
from ltd.models.decoder import Decoder
from ltd.models.draft_lm import DraftLM

PROMPT = random_prompt(10, seed=7)
MAX_NEW = 40
SHAPES = [(1, 1, 1), (3, 2, 4), (8, 10, 60), (5, 4, 68), (12, 3, 7)]  # (5, 4, 68): the whole tree


CPU_FP32 = ("cpu", torch.float32)


def make_drafter(kind, tiny_target, small_draft_hf, place=CPU_FP32):
    """A drafter factory (target Decoder -> drafter) for Tiny.engine; the drafter on `place`."""
    if kind == "eagle3":
        return lambda target: tiny_target.eagle3_drafter(target, draft_vocab_size=64)
    if kind == "draft_lm":
        return lambda target: DraftLM(decoder_of(small_draft_hf, place=place), tiny_target.config.vocab_size)
    if kind == "draft_lm_int8":  # a cheap approximate drafter: the output must not change
        return lambda target: DraftLM(Decoder.from_hf(small_draft_hf.config, small_draft_hf.state_dict(),
                                                      quantize="int8"), tiny_target.config.vocab_size)
    return lambda target: tiny_target.self_drafter(place)


_AR_CACHE = {}


def autoregressive(tiny_target, family, prompt=PROMPT, max_new=MAX_NEW, place=CPU_FP32) -> list[int]:
    key = (family, tuple(prompt), max_new, place)
    if key not in _AR_CACHE:
        engine, _ = tiny_target.engine(place=place)
        _AR_CACHE[key] = engine.generate_autoregressive(prompt, max_new).tokens
    return _AR_CACHE[key]


def check_cycles(generation, controller):
    for cycle in generation.cycles:
        assert cycle.depth == controller.depth
        assert 0 <= cycle.verify_size <= controller.verify
        assert 0 <= cycle.accepted <= cycle.depth
        assert min(cycle.draft_s, cycle.verify_s, cycle.policy_s) >= 0
    # The prefill emits one token and each cycle its accepted drafts plus one; only the last
    # cycle may be cut short by the token limit.
    emitted = [c.accepted + 1 for c in generation.cycles]
    assert 1 + sum(emitted[:-1]) < len(generation.tokens) <= 1 + sum(emitted)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("drafter", ["eagle3", "draft_lm", "draft_lm_int8", "self"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("place", PLACES)
def test_greedy_speculative_equals_autoregressive(tiny, small_draft_hf, place, family, drafter, shape):
    if drafter == "draft_lm_int8" and place[0] != "cpu":
        pytest.skip("int8 drafting is a CPU path")
    target = tiny(family)
    expected = autoregressive(target, family, place=place)
    assert len(expected) == MAX_NEW

    engine, _ = target.engine(make_drafter(drafter, target, small_draft_hf, place), place=place)
    controller = StaticTree(*shape)
    generation = engine.generate(PROMPT, controller, MAX_NEW)

    assert generation.tokens == expected
    check_cycles(generation, controller)


@pytest.mark.parametrize("family", FAMILIES)
def test_self_drafting_accepts_every_single_draft(tiny, family):
    """The target drafting for itself proposes exactly the greedy token: with one draft token per
    cycle, every cycle accepts it, so tau is exactly 2."""
    target = tiny(family)
    engine, _ = target.engine(lambda t: target.self_drafter())
    generation = engine.generate(PROMPT, StaticTree(depth=1, top_k=1, verify=1), MAX_NEW)
    assert generation.tokens == autoregressive(target, family)
    assert all(c.accepted == 1 for c in generation.cycles)
    assert generation.acceptance_length == 2.0


def test_self_drafting_deep_tree_accepts_full_depth(tiny):
    """With a chain of depth 4, self-drafting accepts all 4 drafts in every full cycle."""
    target = tiny("llama")
    engine, _ = target.engine(lambda t: target.self_drafter())
    generation = engine.generate(PROMPT, StaticTree(depth=4, top_k=1, verify=4), MAX_NEW)
    assert generation.tokens == autoregressive(target, "llama")
    assert all(c.accepted == 4 for c in generation.cycles)


@pytest.mark.parametrize("drafter", ["eagle3", "draft_lm", "self"])
def test_stop_token_stops_both_identically(tiny, small_draft_hf, drafter):
    target = tiny("qwen2")
    full = autoregressive(target, "qwen2")
    # A token AR first emits mid-way: both decoders must stop right after its first occurrence.
    stop = next(t for t in full[15:] if t not in full[:15])
    expected = full[: full.index(stop) + 1]

    ar_engine, _ = target.engine(stop_token_ids=(stop,))
    assert ar_engine.generate_autoregressive(PROMPT, MAX_NEW).tokens == expected

    engine, _ = target.engine(make_drafter(drafter, target, small_draft_hf), stop_token_ids=(stop,))
    assert engine.generate(PROMPT, StaticTree(4, 3, 10), MAX_NEW).tokens == expected


@pytest.mark.parametrize("max_new", [1, 2, 7, 23])
def test_max_new_tokens_is_respected_exactly(tiny, max_new):
    target = tiny("llama")
    expected = autoregressive(target, "llama")[:max_new]
    ar_engine, _ = target.engine()
    assert ar_engine.generate_autoregressive(PROMPT, max_new).tokens == expected
    # Self-drafting accepts whole chains, so cycles overshoot max_new unless the engine trims.
    engine, _ = target.engine(lambda t: target.self_drafter())
    assert engine.generate(PROMPT, StaticTree(5, 2, 8), max_new).tokens == expected


@pytest.mark.parametrize("speculative", [False, True], ids=["autoregressive", "speculative"])
def test_zero_max_new_tokens_generates_nothing(tiny, speculative):
    """Asking for no tokens must not return one (an empty result or an LtdError both do)."""
    target = tiny("llama")
    engine, _ = target.engine(lambda t: target.self_drafter())
    try:
        if speculative:
            tokens = engine.generate(PROMPT, StaticTree(2, 2, 4), 0).tokens
        else:
            tokens = engine.generate_autoregressive(PROMPT, 0).tokens
    except LtdError:
        return
    assert tokens == []


@pytest.mark.parametrize("drafter", ["eagle3", "draft_lm", "self"])
def test_context_limit_stops_both_identically(tiny, small_draft_hf, drafter):
    """Near the context limit, speculative decoding must stop where AR does (the engine promises
    comparable outputs when the context is full), not fail while drafting."""
    target = tiny("llama")
    max_context = 48
    ar_engine, _ = target.engine(max_context=max_context)
    expected = ar_engine.generate_autoregressive(PROMPT, 100).tokens
    assert len(PROMPT) + len(expected) == max_context

    engine, _ = target.engine(make_drafter(drafter, target, small_draft_hf), max_context=max_context)
    assert engine.generate(PROMPT, StaticTree(4, 4, 8), 100).tokens == expected


def test_an_int8_drafter_guesses_as_its_float_self_mostly(tiny):
    """int8 weights move the logits a little, not the model: on the tiny target drafting for itself,
    int8 proposals agree with the float ones on most tokens and accept most drafts."""
    import torch

    target = tiny("llama")
    exact = target.decoder()
    cheap = Decoder.from_hf(target.hf.config, target.hf.state_dict(), quantize="int8")
    tokens = torch.tensor(PROMPT)
    for decoder in (exact, cheap):
        decoder.reset(64)
    top_exact = exact(tokens)[0].argmax(-1)
    top_cheap = cheap(tokens)[0].argmax(-1)
    assert (top_exact == top_cheap).float().mean() > 0.8
    engine, _ = target.engine(lambda t: DraftLM(Decoder.from_hf(target.hf.config, target.hf.state_dict(),
                                                                quantize="int8"), target.config.vocab_size))
    generation = engine.generate(PROMPT, StaticTree(depth=1, top_k=1, verify=1), MAX_NEW)
    assert generation.tokens == autoregressive(target, "llama") and generation.acceptance_length > 1.8
    with pytest.raises(LtdError, match="quantize must be one of int8"):
        Decoder.from_hf(target.hf.config, target.hf.state_dict(), quantize="int4")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_a_difference_counts_as_lossless_only_at_a_tie_in_half_precision(tiny, dtype):
    """A greedy output that leaves autoregressive decoding's for the runner-up where the two top
    logits tie within bfloat16's rounding is still the target's; one that leaves it elsewhere, or
    any difference in float32, is not."""
    target = tiny("llama")
    decoder = target.decoder(place=("cpu", dtype))
    reference = Engine(decoder, ()).generate_autoregressive(PROMPT, MAX_NEW).tokens
    decoder.reset()
    logits = decoder(torch.tensor(PROMPT + reference[:-1]))[0][len(PROMPT) - 1:].float()
    top2 = logits.topk(2, dim=-1)
    gaps = (top2.values[:, 0] - top2.values[:, 1]) / logits.abs().max(-1).values
    tied = int((gaps < TIE[torch.bfloat16] / 2).nonzero()[0])  # a clear tie, not one at the tolerance's edge
    clear = int((gaps > 2 * TIE[torch.bfloat16]).nonzero()[0])
    runner_up = lambda at: reference[:at] + [int(top2.indices[at, 1])] + reference[at + 1:]
    assert matches_reference(decoder, PROMPT, reference, reference)
    assert matches_reference(decoder, PROMPT, reference, runner_up(tied)) == (dtype == torch.bfloat16)
    assert not matches_reference(decoder, PROMPT, reference, runner_up(clear))
    assert not matches_reference(decoder, PROMPT, reference, reference[:-1])  # cut short is no tie


@pytest.mark.parametrize("quantize", ["int8", "q4_k"])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_quantised_target_of_every_family_is_lossless(family, quantize):
    """A quantised target attends each row on its own (ltd's attention kernel, with the q/k norms of
    qwen3 applied first): speculation equals its own autoregressive decoding, drafted by a float
    draft LM or by one in ltd's Q4_K blocks (columns padded: 64 wide)."""
    from conftest import build_hf, tiny_config

    hf = build_hf(tiny_config(family), seed=3)
    target = Decoder.from_hf(hf.config, hf.state_dict(), quantize=quantize)
    draft_hf = build_hf(tiny_config(family), seed=4)
    draft = (decoder_of(draft_hf) if quantize == "int8"
             else Decoder.from_hf(draft_hf.config, draft_hf.state_dict(), quantize="q4_k"))
    drafter = DraftLM(draft, hf.config.vocab_size)
    engine = Engine(target, stop_token_ids=(), drafter=drafter)
    expected = engine.generate_autoregressive(PROMPT, MAX_NEW).tokens
    for depth, top_k, verify in [(3, 2, 4), (5, 1, 5)]:
        got = engine.generate(PROMPT, StaticTree(depth=depth, top_k=top_k, verify=verify), MAX_NEW).tokens
        assert got == expected
