"""Speculative sampling must draw exactly from the target's distribution.

Statistical tests use fixed seeds, so they are deterministic: each either always passes or always
fails. The bound is a chi-square test at significance 1e-3 (the correct algorithm fails it for
one seed in a thousand); for each kind of test, a check shows that the bound rejects a broken rule.
"""
import pytest
import torch

from conftest import PLACES, build_hf, decoder_of, hf_logits, tiny_config
from ltd.decoding.acceptance import accept_sampling
from ltd.decoding.controller import StaticTree
from ltd.decoding.engine import Engine
from ltd.decoding.tree import Selection
from ltd.models.draft_lm import DraftLM

SIGNIFICANCE = 1e-3


def chi_square(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> tuple[float, float]:
    """Pearson's statistic and p-value of `counts` under `probs` (flattened). Cells expected fewer
    than `min_expected` times are pooled into one, where the chi-square approximation holds."""
    counts, probs = counts.flatten().double(), probs.flatten().double()
    expected = probs * counts.sum()
    big = expected >= min_expected
    observed = torch.cat((counts[big], counts[~big].sum()[None]))
    expected = torch.cat((expected[big], expected[~big].sum()[None]))
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    statistic = float(((observed - expected) ** 2 / expected).sum())
    dof = observed.numel() - 1
    p_value = float(torch.special.gammaincc(torch.tensor(dof / 2), torch.tensor(statistic / 2)))
    return statistic, p_value


def chi_square_bound(probs: torch.Tensor, n: int) -> float:
    """The statistic at which chi_square's p-value reaches SIGNIFICANCE (by bisection)."""
    expected = probs.flatten().double() * n
    pooled = bool((expected[expected < 5] > 0).any())
    dof = int((expected >= 5).sum()) + pooled - 1
    lo, hi = 0.0, 1e4
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(torch.special.gammaincc(torch.tensor(dof / 2), torch.tensor(mid / 2))) > SIGNIFICANCE:
            lo = mid
        else:
            hi = mid
    return hi


def expected_statistic(wrong: torch.Tensor, probs: torch.Tensor, n: int) -> float:
    """The statistic of n draws from `wrong` that land exactly on their expected counts, tested
    against `probs`: the typical size of what a broken rule would produce."""
    counts = wrong.flatten().double() * n
    return chi_square(counts, probs)[0]


# -- end to end: Engine.generate at temperature 1 ---------------------------------------------------
VOCAB = 16
SMALL_VOCAB = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                   num_key_value_heads=1, head_dim=16, max_position_embeddings=64)
PROMPT = [1, 2, 3, 4, 5]
# Per drafter; ~2 ms each. At these seeds the correct rule gives p = 0.46 (self) and 0.86 (draft
# LM) against the 1e-3 bound (chi2 64 and 52 vs 105); always accepting the top draft would give
# chi2 ~2700 and ~23000.
RUNS = 1500


@pytest.fixture(scope="module")
def small_target():
    model = build_hf(tiny_config("llama", **SMALL_VOCAB), seed=10)
    # lm_head std 0.2: the top token has p ~0.3, so drafts are accepted often but not always.
    with torch.no_grad():
        model.lm_head.weight.copy_(0.2 * torch.randn(model.lm_head.weight.shape,
                                                     generator=torch.Generator().manual_seed(3)))
    return model


@pytest.fixture(scope="module")
def small_drafter_model():
    return build_hf(tiny_config("llama", **SMALL_VOCAB), seed=11)


def exact_joint(model, prompt) -> torch.Tensor:
    """[VOCAB, VOCAB]: P(first token = a, second = b) under the target, from transformers' logits."""
    first = torch.softmax(hf_logits(model, prompt)[-1].double(), -1)
    second = torch.stack([torch.softmax(hf_logits(model, prompt + [a])[-1].double(), -1) for a in range(VOCAB)])
    return first[:, None] * second


def always_accept_joint(joint: torch.Tensor, draft_model, prompt) -> torch.Tensor:
    """The joint a broken rule that always accepts the drafter's first child would produce."""
    broken = torch.zeros_like(joint)
    for a in range(VOCAB):
        broken[a, int(hf_logits(draft_model, prompt + [a])[-1].argmax())] = joint[a].sum()
    return broken


@pytest.mark.parametrize("drafter_kind", ["self", "draft_lm"])
@pytest.mark.parametrize("place", PLACES)
def test_first_two_sampled_tokens_follow_the_target(small_target, small_drafter_model, place, drafter_kind):
    """In bfloat16 too: the target's distribution moves by far less than this test can see, and the
    draws come from a generator on the model's device."""
    draft_model = small_target if drafter_kind == "self" else small_drafter_model
    engine = Engine(decoder_of(small_target, place=place), (), DraftLM(decoder_of(draft_model, place=place), VOCAB))
    controller = StaticTree(depth=2, top_k=3, verify=6)

    counts = torch.zeros(VOCAB, VOCAB)
    accepted = 0
    for seed in range(RUNS):
        generation = engine.generate(PROMPT, controller, max_new_tokens=2, temperature=1.0,
                                     generator=torch.Generator(device=place[0]).manual_seed(seed))
        first, second = generation.tokens
        counts[first, second] += 1
        accepted += generation.cycles[0].accepted
    # The second token comes from the acceptance rule; both of its branches must be exercised.
    assert 0.05 * RUNS < accepted < 0.95 * RUNS * 2

    joint = exact_joint(small_target, PROMPT)
    statistic, p_value = chi_square(counts, joint)
    bound = chi_square_bound(joint, RUNS)
    assert p_value > SIGNIFICANCE, f"chi2={statistic:.1f} (bound {bound:.1f}), p={p_value:.2g}"
    # The bound must catch a rule that always accepts the top draft.
    assert expected_statistic(always_accept_joint(joint, draft_model, PROMPT), joint, RUNS) > 5 * bound


# -- accept_sampling alone, on a hand-made tree ----------------------------------------------------
def hand_made_selection(children: list[int]) -> Selection:
    """Root children `children`, plus one grandchild (token 0) under the first child."""
    n = len(children) + 1
    tokens = torch.tensor(children + [0])
    depths = torch.tensor([1] * len(children) + [2])
    parents = torch.tensor([0] * len(children) + [1])
    mask = torch.eye(n + 1, dtype=torch.bool)
    mask[:, 0] = True
    mask[n, 1] = True
    return Selection(tokens, depths, parents, mask)


ROOT_LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
DRAWS = 20000


@pytest.mark.parametrize("children", [[0, 1, 2], [7, 6, 5], [3], [7, 0, 4, 1]],
                         ids=["likely", "unlikely", "one", "mixed"])
def test_accept_sampling_root_token_follows_root_distribution(children):
    selection = hand_made_selection(children)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(selection.size + 1, ROOT_LOGITS.numel(), generator=generator)
    logits[0] = ROOT_LOGITS
    probs = torch.softmax(ROOT_LOGITS.double(), -1)

    counts = torch.zeros(ROOT_LOGITS.numel())
    for _ in range(DRAWS):
        path, next_token = accept_sampling(selection, logits, 1.0, generator)
        assert path[0] == 0
        # What the target emits first: the accepted root child, or the residual draw.
        counts[int(selection.tokens[path[1] - 1]) if path.numel() > 1 else next_token] += 1

    statistic, p_value = chi_square(counts, probs)
    assert p_value > SIGNIFICANCE, f"chi2={statistic:.1f}, p={p_value:.2g}"


def unrenormalised_rule(probs: torch.Tensor, children: list[int]) -> torch.Tensor:
    """What a classic slip emits: child x accepted with its original p(x), not p(x) / residual mass."""
    emitted, reach, residual = torch.zeros_like(probs), 1.0, probs.clone()
    for x in children:
        emitted[x] += reach * probs[x]
        reach *= 1 - probs[x]
        residual[x] = 0
    return emitted + reach * residual / residual.sum()


def test_root_bound_rejects_unrenormalised_rule():
    """The bound used above is tight enough to catch the slip on likely children."""
    probs = torch.softmax(ROOT_LOGITS.double(), -1)
    broken = unrenormalised_rule(probs, [0, 1, 2])
    assert expected_statistic(broken, probs, DRAWS) > 5 * chi_square_bound(probs, DRAWS)


def test_accept_sampling_after_accepting_a_child_follows_its_row():
    """Given the first child was accepted, the next emitted token follows that child's row."""
    selection = hand_made_selection([0, 1])  # node 1 = token 0 (p ~0.4), with grandchild token 0
    generator = torch.Generator().manual_seed(1)
    logits = torch.zeros(selection.size + 1, ROOT_LOGITS.numel())
    logits[0] = ROOT_LOGITS
    logits[1] = ROOT_LOGITS.flip(0)  # the child's own distribution, unlike the root's
    probs = torch.softmax(logits[1].double(), -1)

    counts = torch.zeros(ROOT_LOGITS.numel())
    for _ in range(DRAWS):
        path, next_token = accept_sampling(selection, logits, 1.0, generator)
        if path.numel() > 1 and path[1] == 1:
            counts[int(selection.tokens[path[2] - 1]) if path.numel() > 2 else next_token] += 1
    assert counts.sum() > 0.3 * DRAWS
    statistic, p_value = chi_square(counts, probs)
    assert p_value > SIGNIFICANCE, f"chi2={statistic:.1f}, p={p_value:.2g}"
    # The root's distribution would be rejected: the test tells the rows apart.
    assert expected_statistic(torch.softmax(ROOT_LOGITS.double(), -1), probs, int(counts.sum())) > \
        5 * chi_square_bound(probs, int(counts.sum()))
