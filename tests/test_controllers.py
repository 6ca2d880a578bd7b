"""The training-free dynamic baselines: lossless decoding, each stopping rule on hand-built trees,
the controller factory and its configs, and the drafters' entropies that SVIP reads."""
import math
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from test_lossless import MAX_NEW, PROMPT, autoregressive, make_drafter
from torch.testing import assert_close

from conftest import PLACES, decoder_of, hf_logits, random_prompt, randomize_
from ltd.controllers.heuristics import DDD, SVIP, ConfidenceThreshold, GammaTune
from ltd.controllers.registry import make_controller
from ltd.core.errors import LtdError
from ltd.decoding.controller import StaticTree
from ltd.decoding.tree import DraftTree
from ltd.models.draft_lm import DraftLM
from ltd.models.proposals import top_k_entropy

CONTROLLER_CONF = Path(__file__).resolve().parents[1] / "conf" / "controller"
BASELINES = {"ddd": DDD, "svip": SVIP, "gammatune": GammaTune, "disco_threshold": ConfidenceThreshold}


def entropy_of(logits: torch.Tensor) -> torch.Tensor:
    """The reference: torch's own categorical entropy, per row."""
    return torch.distributions.Categorical(logits=logits.float()).entropy()


def level(probs: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """An expansion as a drafter returns it: per fed node, the children's log-probs (best first)
    and some distinct tokens."""
    logp = torch.tensor(probs).log()
    return logp, torch.arange(logp.numel()).reshape(logp.shape)


def chain_tree(k: int, depth: int, probs: list[float], entropy: float | None = None) -> DraftTree:
    """A tree `depth` levels deep whose every fed node proposes children with probabilities `probs`."""
    tree = DraftTree(k)
    fed_entropy = None if entropy is None else torch.tensor([entropy])
    tree.add_root(*level([probs]), fed_entropy)
    while tree.depth < depth:
        fed = tree.frontier.numel()
        tree.add_expansion(*level([probs] * fed), None if entropy is None else torch.full((fed,), entropy))
    return tree


# -- lossless -------------------------------------------------------------------------------------

@pytest.mark.parametrize("drafter", ["eagle3", "draft_lm", "self"])
@pytest.mark.parametrize("kind", list(BASELINES))
@pytest.mark.parametrize("place", PLACES)
def test_baselines_decode_losslessly(tiny, small_draft_hf, place, kind, drafter):
    target = tiny("llama")
    engine, _ = target.engine(make_drafter(drafter, target, small_draft_hf, place), place=place)
    controller = BASELINES[kind]()
    generation = engine.generate(PROMPT, controller, MAX_NEW)

    assert generation.tokens == autoregressive(target, "llama", place=place)
    for cycle in generation.cycles:
        assert 1 <= cycle.depth <= controller.max_depth
        assert 1 <= cycle.verify_size <= controller.verify
        assert 0 <= cycle.accepted <= cycle.depth
        if kind == "ddd":  # the cache has room for 12 levels here, so only the checks stop it
            assert cycle.depth in (5, 7, 9, 12)


def test_gammatune_in_the_engine_deepens_and_restarts(tiny):
    """Self-drafting chains are accepted whole, so gamma climbs from 4 to its cap of 6 (eta 0.5
    gets there within the generation); the next generation starts from 4 again."""
    target = tiny("llama")
    engine, _ = target.engine(lambda t: target.self_drafter())
    controller = GammaTune(top_k=1, verify=12, depth=4, eta=0.5)
    for _ in range(2):
        generation = engine.generate(PROMPT, controller, MAX_NEW)
        assert generation.tokens == autoregressive(target, "llama")
        depths = [c.depth for c in generation.cycles]
        assert depths[0] == 4 and max(depths) == 6
        assert depths[:-1] == sorted(depths[:-1])  # the last cycle may end early at max_new_tokens
        assert all(c.accepted == c.depth for c in generation.cycles[:-1])


# -- the rules on hand-built trees ----------------------------------------------------------------

def test_ddd_stops_at_a_check_depth_only_when_the_frontier_mass_is_low():
    ddd = DDD()
    # A confident drafter: the two beams keep 0.95^5 + 0.95^4 * 0.05 of the mass, log -0.21.
    assert ddd.keep_drafting(chain_tree(2, 5, [0.95, 0.05]), 0)
    # An unsure one: two beams of 0.5^5 each, log -2.8.
    unsure = [0.5, 0.5]
    assert not ddd.keep_drafting(chain_tree(2, 5, unsure), 0)
    assert not ddd.keep_drafting(chain_tree(2, 7, unsure), 0)
    for depth in (1, 4, 6, 8, 10, 11):  # between checks it never stops
        assert ddd.keep_drafting(chain_tree(2, depth, unsure), 0)
    assert not ddd.keep_drafting(chain_tree(2, 12, [0.99, 0.01]), 0)  # max_depth
    # The threshold is on the log mass: 0.9^5 + 0.9^4 * 0.1 = 0.656, log -0.42.
    assert not DDD(check_depths=(5,)).keep_drafting(chain_tree(2, 5, [0.9, 0.1]), 0)
    assert DDD(check_depths=(5,), threshold=-0.5).keep_drafting(chain_tree(2, 5, [0.9, 0.1]), 0)


def test_svip_stops_on_a_high_entropy_node():
    svip = SVIP()  # stops when sqrt(0.15 H) > 0.3, i.e. H > 0.6 nats
    assert svip.keep_drafting(chain_tree(2, 1, [0.9, 0.1], entropy=0.55), 0)
    assert not svip.keep_drafting(chain_tree(2, 1, [0.9, 0.1], entropy=0.65), 0)
    assert svip.keep_drafting(chain_tree(2, 3, [0.9, 0.1], entropy=0.1), 0)
    assert not svip.keep_drafting(chain_tree(2, 3, [0.9, 0.1], entropy=2.0), 0)
    assert not svip.keep_drafting(chain_tree(2, 12, [0.9, 0.1], entropy=0.0), 0)  # max_depth
    assert SVIP(min_entropy=0.6).keep_drafting(chain_tree(2, 1, [0.9, 0.1], entropy=2.0), 0)


@pytest.mark.parametrize("best_from, stops", [(0, False), (1, True)])
def test_svip_reads_the_fed_node_of_the_best_child(best_from, stops):
    """Two fed nodes, calm (H 0.1) and unsure (H 2.0): the one whose child scores best decides."""
    tree = DraftTree(2)
    tree.add_root(*level([[0.5, 0.5]]), torch.tensor([0.1]))
    children = [[0.6, 0.4], [0.6, 0.4]]
    children[best_from] = [0.9, 0.1]
    tree.add_expansion(*level(children), torch.tensor([0.1, 2.0]))
    assert SVIP().keep_drafting(tree, 0) is not stops


def test_svip_without_entropies_says_so():
    with pytest.raises(LtdError, match="entropies"):
        SVIP().keep_drafting(chain_tree(2, 2, [0.9, 0.1]), 0)


def test_gammatune_depth_follows_acceptance_within_its_clip():
    tune = GammaTune()  # depth 8, eta 0.2: gamma within [4, 12]
    tree = {d: chain_tree(1, d, [1.0]) for d in range(1, 13)}

    def drafted() -> int:
        return next(d for d in range(1, 13) if not tune.keep_drafting(tree[d], 0))

    assert drafted() == 8
    depths = []
    for _ in range(30):  # every draft accepted: gamma moves towards depth + 1 each cycle
        tune.observe(drafted())
        depths.append(drafted())
    assert depths == sorted(depths) and depths[0] == 8 and depths[-1] == 12
    assert tune.gamma == 12.0  # clipped at 1.5 x depth, although accepted + 1 is 13
    for _ in range(30):  # nothing accepted: gamma falls towards 1, clipped at depth / 2
        tune.observe(0)
    assert tune.gamma == 4.0 and drafted() == 4
    tune.observe(0)
    assert tune.gamma == 4.0
    tune.start()
    assert drafted() == 8
    tune.observe(8)  # 0.8 * 8 + 0.2 * 9 = 8.2
    assert tune.gamma == pytest.approx(8.2)


def test_gammatune_never_drafts_deeper_than_max_depth():
    tune = GammaTune(depth=8, max_depth=10)
    for _ in range(30):
        tune.observe(12)
    assert tune.gamma == 12.0
    assert tune.keep_drafting(chain_tree(1, 9, [1.0]), 0)
    assert not tune.keep_drafting(chain_tree(1, 10, [1.0]), 0)


def test_confidence_threshold_reads_conditional_not_cumulative_probabilities():
    rule = ConfidenceThreshold()  # stops below 0.4
    assert rule.keep_drafting(chain_tree(2, 1, [0.5, 0.5]), 0)
    assert not rule.keep_drafting(chain_tree(2, 1, [0.3, 0.3, 0.2, 0.2]), 0)
    # Cumulative probabilities fall with depth; the child's own probability does not.
    deep = chain_tree(2, 6, [0.8, 0.2])
    assert math.exp(float(deep.all_scores()[deep.frontier].max())) < 0.4
    assert rule.keep_drafting(deep, 0)
    # The latest level decides: a confident level under an unsure one continues, and vice versa.
    tree = DraftTree(2)
    tree.add_root(*level([[0.3, 0.3, 0.2, 0.2]]))
    tree.add_expansion(*level([[0.9, 0.1], [0.2, 0.1]]))
    assert rule.keep_drafting(tree, 0)
    tree.add_expansion(*level([[0.35, 0.3], [0.35, 0.3]]))
    assert not rule.keep_drafting(tree, 0)
    assert ConfidenceThreshold(threshold=0.3).keep_drafting(tree, 0)
    assert not rule.keep_drafting(chain_tree(2, 12, [0.99, 0.01]), 0)  # max_depth


@pytest.mark.parametrize("kind", list(BASELINES))
def test_every_baseline_verifies_its_fixed_size_and_stops_at_max_depth(kind):
    extra = {"depth": 3} if kind == "gammatune" else {}  # its starting depth must be within max_depth
    controller = BASELINES[kind](max_depth=3, verify=7, top_k=2, **extra)
    tree = chain_tree(2, 3, [0.999, 0.001], entropy=0.0)
    assert not controller.keep_drafting(tree, 0)
    assert controller.verify_size(tree, 0) == 7
    assert controller.top_k == 2


# -- the factory, the configs, validation ---------------------------------------------------------

@pytest.mark.parametrize("kind", list(BASELINES))
def test_configs_state_the_paper_defaults(kind):
    """Each conf/controller file names every field, with the values the dataclass defaults to."""
    cls = BASELINES[kind]
    settings = OmegaConf.to_container(OmegaConf.load(CONTROLLER_CONF / f"{kind}.yaml"))
    assert settings.pop("kind") == kind
    assert list(settings) == [f.name for f in fields(cls) if f.init]
    assert make_controller({"kind": kind, **settings}) == cls()
    assert (cls().top_k, cls().verify, cls().max_depth) == (10, 60, 12)


def test_make_controller_builds_each_kind_with_its_settings():
    assert make_controller({"kind": "static", "depth": 3, "top_k": 2, "verify": 5}) == StaticTree(3, 2, 5)
    ddd = make_controller({"kind": "ddd", "check_depths": [4, 6], "threshold": -1})
    assert ddd == DDD(check_depths=(4, 6), threshold=-1)
    assert make_controller(OmegaConf.create({"kind": "ddd", "check_depths": [4, 6]})).check_depths == (4, 6)
    assert make_controller({"kind": "gammatune", "depth": 5}).gamma == 5.0
    assert isinstance(make_controller({"kind": "disco_threshold"}), ConfidenceThreshold)
    assert make_controller({"kind": "svip", "factor": 1}).factor == 1


@pytest.mark.parametrize("settings, expected", [
    ({"kind": "eagle"}, r"unknown controller kind 'eagle'; choose from: static, ddd, svip, gammatune, disco_threshold"),
    ({"kind": "autoregressive"}, "unknown controller kind 'autoregressive'"),
    ({"depth": 3}, "controller settings have no kind; choose from: static"),
    ({"kind": ["ddd"]}, r"unknown controller kind \['ddd'\]"),
    ({"kind": "ddd", "foo": 1}, r"controller ddd has no setting 'foo'; it takes: top_k, verify, max_depth, "
                                "check_depths, threshold"),
    ({"kind": "gammatune", "gamma": 3.0}, "controller gammatune has no setting 'gamma'"),
    ({"kind": "static", "max_depth": 3}, "controller static has no setting 'max_depth'"),
    ({"kind": "ddd", "top_k": "10"}, "ddd top_k must be an integer >= 1, got '10'"),
    ({"kind": "ddd", "check_depths": 5}, "ddd check_depths must be a list of integers >= 1, got 5"),
    ({"kind": "ddd", "check_depths": "5,7"}, "ddd check_depths must be a list of integers"),
    ({"kind": "ddd", "check_depths": [5, "7"]}, "ddd check_depths must be a list of integers"),
    ({"kind": "ddd", "check_depths": [5, 0]}, r"ddd check_depths must be a list of integers >= 1, got \(5, 0\)"),
    ({"kind": "ddd", "threshold": "low"}, "ddd threshold must be a number <= 0, got 'low'"),
    ({"kind": "ddd", "threshold": 0.1}, "ddd threshold must be a number <= 0, got 0.1"),
    ({"kind": "svip", "factor": 0}, "svip factor must be a number > 0, got 0"),
    ({"kind": "svip", "min_entropy": float("nan")}, "svip min_entropy must be a number >= 0, got nan"),
    ({"kind": "gammatune", "eta": 1.5}, r"gammatune eta must be a number in \(0, 1\], got 1.5"),
    ({"kind": "gammatune", "depth": 13}, r"gammatune depth must be an integer from 1 to max_depth \(12\), got 13"),
    ({"kind": "gammatune", "verify": True}, "gammatune verify must be an integer >= 1, got True"),
    ({"kind": "disco_threshold", "threshold": 1.2}, "disco_threshold threshold must be a probability"),
    ({"kind": "disco_threshold", "max_depth": 0}, "disco_threshold max_depth must be an integer >= 1, got 0"),
])
def test_make_controller_errors_are_one_line(settings, expected):
    with pytest.raises(LtdError, match=expected) as error:
        make_controller(settings)
    assert "\n" not in str(error.value)


def test_make_controller_needs_a_mapping():
    with pytest.raises(LtdError, match="controller settings must be a mapping"):
        make_controller("ddd")


# -- entropies ------------------------------------------------------------------------------------

def test_top_k_entropy_matches_the_categorical_entropy():
    logits = 3 * torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    logits[1, :30] = -math.inf  # masked entries add nothing and must not make it nan
    logp, ids, entropy = top_k_entropy(logits, 4)
    assert entropy.dtype == torch.float32 and entropy.shape == (5,)
    assert_close(entropy, entropy_of(logits))
    values, expected_ids = logits.topk(4, dim=-1)
    assert torch.equal(ids, expected_ids) and torch.equal(logp, values - logits.logsumexp(-1, keepdim=True))
    half = top_k_entropy(logits.bfloat16(), 4)[2]
    assert half.dtype == torch.float32
    assert_close(half, entropy_of(logits.bfloat16()), atol=1e-5, rtol=1e-5)


def test_a_peaked_rows_entropy_is_never_below_zero():
    """Wide, peaked rows (a Qwen vocabulary's logits of a confident draft LM) made float32's
    logsumexp - sum(p z) come out below zero, and SVIP's sqrt of it failed."""
    logits = 100 * torch.randn(200, 151936, generator=torch.Generator().manual_seed(0))
    entropy = top_k_entropy(logits, 3)[2]
    assert float(entropy.min()) >= 0.0


def test_draft_lm_entropies_are_those_of_its_logits(tiny):
    """Over the target's vocabulary only (here the first 60 of the draft LM's 101 ids), for the
    root and for every fed node; the tree keeps them per level."""
    target = tiny("llama")
    prompt = random_prompt(8, seed=3)
    drafter = DraftLM(decoder_of(target.hf), 60)
    drafter.reset(64)
    tree = DraftTree(3)
    root = drafter.update(torch.tensor(prompt), None, 3)
    assert_close(root.entropy, entropy_of(hf_logits(target.hf, prompt)[-1:, :60]), atol=1e-4, rtol=1e-4)
    tree.add_root(*root)
    fed = tree.frontier_tokens()
    children = drafter.expand(fed, tree.frontier_parent_slots, tree.depth, 3)
    expected = torch.stack([entropy_of(hf_logits(target.hf, prompt + [int(t)])[-1, :60]) for t in fed])
    assert_close(children.entropy, expected, atol=1e-4, rtol=1e-4)
    tree.add_expansion(*children)
    assert [e.tolist() for e in tree.entropies] == [root.entropy.tolist(), children.entropy.tolist()]


def test_eagle3_entropies_are_over_the_draft_vocabulary(tiny):
    target = tiny("llama")
    decoder = target.decoder()
    drafter = target.eagle3_drafter(decoder, draft_vocab_size=64)
    head = randomize_(drafter.head, seed=5)  # the default init's near-uniform output would test little
    prompt = random_prompt(8, seed=4)
    decoder.reset()
    _, features = decoder(torch.tensor(prompt), feature_layers=drafter.feature_layers)
    drafter.reset(64)
    root = drafter.update(torch.tensor(prompt[1:] + [7]), features, 3)

    def logits(hidden):
        return F.linear(head.norm(hidden), head.lm_head.weight)

    assert logits(drafter.root_hidden).shape[-1] == 64
    assert_close(root.entropy, entropy_of(logits(drafter.root_hidden)))
    children = drafter.expand(root.tokens[0], torch.full((3,), -1), 1, 3)
    assert_close(children.entropy, entropy_of(logits(drafter.slot_hidden[:3])))
    assert children.entropy.shape == (3,) and children.logp.shape == (3, 3)
