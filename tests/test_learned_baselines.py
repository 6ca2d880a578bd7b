"""The learned baselines (DISCO, SpecDec++, C2T): features from traces equal the engine's, training
learns, weights round-trip, the controllers decode losslessly and follow their classifiers, and
the entry point trains all three from a trace directory."""
import subprocess
import sys

import pytest
import torch
from test_lossless import CPU_FP32, MAX_NEW, PROMPT, autoregressive

from conftest import PLACES, decoder_of, random_prompt
from ltd.baselines.classifiers import Classifier, TrainedClassifier, load_classifier, save_classifier
from ltd.baselines.features import (candidate_depths, candidate_features, depth_features, tree_candidate_features,
                                    tree_depth_features)
from ltd.baselines.fit import KINDS, FitSettings, dataset, disco_rows, train_baseline, train_classifier
from ltd.controllers.registry import make_controller
from ltd.core.errors import LtdError
from ltd.decoding.controller import Controller
from ltd.decoding.engine import Engine
from ltd.decoding.tree import DraftTree
from ltd.models.draft_lm import DraftLM
from ltd.traces.trace import record_answer

TOP_K, MAX_DEPTH, C2T_DEPTH = 3, 4, 3
NEW_TOKENS = 24
HIDDEN = {"disco": 128, "specdec_pp": 1024, "c2t": 64}  # the paper's
FAST = FitSettings(epochs=30, batch_size=32, lr=1e-3, seed=0)  # the tiny traces hold a few hundred rows


class Bare:
    """What record_answer needs of a loaded target: its decoder."""

    def __init__(self, decoder):
        self.decoder = decoder


def drafters(tiny_target, small_draft_hf, place=CPU_FP32):
    """The target drafting for itself (its drafts are accepted) and an unrelated small LM (rejected):
    together, traces of both labels."""
    return {"self": tiny_target.self_drafter(place),
            "draft_lm": DraftLM(decoder_of(small_draft_hf, place=place), tiny_target.config.vocab_size)}


@pytest.fixture(scope="module")
def recorded(tiny, small_draft_hf):
    """Traces of greedy answers of the tiny llama, by both drafters, and what made them."""
    tiny_target = tiny("llama")
    target = tiny_target.decoder()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests that use it run: another thread count sums floats in another order
    traces, makers = [], []
    for name, drafter in drafters(tiny_target, small_draft_hf).items():
        engine = Engine(target, (), drafter)
        for seed in (1, 2, 3):
            prompt = random_prompt(8, seed=seed)
            answer = engine.generate_autoregressive(prompt, NEW_TOKENS).tokens
            traces.append(record_answer(Bare(target), drafter, prompt=prompt, answer=answer, top_k=TOP_K,
                                        max_depth=MAX_DEPTH))
            makers.append((engine, prompt, len(answer)))
    torch.set_num_threads(threads)
    return traces, makers


@pytest.fixture(scope="module")
def weights(recorded, tmp_path_factory):
    """Each baseline trained on the recorded traces, saved: {kind: path}."""
    directory = tmp_path_factory.mktemp("baselines")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    paths = {}
    for kind in KINDS:
        trained, _ = train_baseline(kind, recorded[0], HIDDEN[kind], FAST, C2T_DEPTH if kind == "c2t" else None)
        paths[kind] = directory / f"{kind}.pt"
        save_classifier(paths[kind], trained)
    torch.set_num_threads(threads)
    return paths


def settings_of(kind: str, path, **extra) -> dict:
    depth = {"depth": C2T_DEPTH} if kind == "c2t" else {"max_depth": MAX_DEPTH}
    return {"kind": kind, "weights": str(path), "top_k": TOP_K, "verify": 8, **depth, **extra}


# -- features: a trace row and the engine's tree --------------------------------------------------

class Spy(Controller):
    """A static tree of MAX_DEPTH levels that keeps the features the engine's tree gives, by position."""

    top_k = TOP_K

    def __init__(self, prompt_length: int):
        self.prompt_length, self.seen = prompt_length, []

    def keep_drafting(self, tree: DraftTree, context_length: int) -> bool:
        # The tree of this cycle so far: only the levels drafted yet.
        self.seen.append((context_length - self.prompt_length, tree.depth,
                          tree_depth_features(tree, [tree.depth], MAX_DEPTH)[0]))
        return tree.depth < MAX_DEPTH

    def verify_size(self, tree: DraftTree, context_length: int) -> int:
        self.seen.append((context_length - self.prompt_length, "c2t", tree_candidate_features(tree, MAX_DEPTH)))
        return 5


def test_features_of_trace_rows_equal_those_of_the_engines_trees(recorded):
    traces, makers = recorded
    compared = 0
    for trace, (engine, prompt, new_tokens) in zip(traces, makers):
        spy = Spy(len(prompt))
        engine.generate(prompt, spy, new_tokens)
        for position, depth, live in spy.seen:
            if position >= trace.positions:  # the last cycle may start past the trace's last position
                continue
            row = slice(position, position + 1)
            if depth == "c2t":
                expected = candidate_features(trace.scores[row], trace.parents[row], TOP_K, MAX_DEPTH)[0]
            else:
                expected = depth_features(trace.scores[row], trace.parents[row], entropies=trace.entropies[row],
                                          depth=torch.tensor([depth]), top_k=TOP_K, max_depth=MAX_DEPTH)[0]
            if position == 0:  # both grew it from the same prefill: the same floats
                assert torch.equal(live, expected), depth
            else:  # the engine absorbed accepted tokens in chunks, the recorder one by one: float noise
                torch.testing.assert_close(live, expected, rtol=1e-4, atol=1e-4, msg=f"{position}, {depth}")
            compared += 1
    assert compared > 50


def test_depth_features_read_the_best_candidate_of_the_level():
    """A two-level tree by hand: level 2's best child comes from the second fed node."""
    tree = DraftTree(2)
    tree.add_root(torch.tensor([[0.6, 0.4]]).log(), torch.tensor([[5, 6]]), torch.tensor([1.5]))
    tree.add_expansion(torch.tensor([[0.5, 0.5], [0.9, 0.1]]).log(), torch.tensor([[7, 8], [9, 10]]),
                       torch.tensor([0.7, 0.2]))
    features = tree_depth_features(tree, [1, 2], 4)
    p = torch.tensor([0.6 * 0.5, 0.6 * 0.5, 0.4 * 0.9, 0.4 * 0.1])
    expected = torch.tensor([
        [0.6, 1.0, 0.6, 1.5, 0.25],  # level 1: best 0.6, mass of both, own 0.6, the root's entropy
        [0.4 * 0.9, float(p.topk(2).values.sum()), 0.9, 0.2, 0.5],  # level 2: best 0.36, from the 2nd fed node
    ])
    expected[:, :3] = expected[:, :3].log()
    torch.testing.assert_close(features, expected)


def test_candidate_features_rank_within_each_level():
    scores = torch.tensor([[-0.2, -0.1, -0.9, -0.4, -0.9, -0.3]])
    parents = torch.tensor([[-1, -1, 1, 1, 0, 0]])
    features = candidate_features(scores, parents, 2, 4)[0]
    assert candidate_depths(6, 2).tolist() == [1, 1, 2, 2, 2, 2]
    assert features[:, 1].tolist() == pytest.approx([-0.2, -0.1, -0.8, -0.3, -0.7, -0.1])
    assert features[:, 2].tolist() == [0.25, 0.25, 0.5, 0.5, 0.5, 0.5]
    assert features[:, 3].tolist() == [0.5, 0.0, 0.5, 0.25, 0.75, 0.0]  # ties: the older ranks first


# -- training -------------------------------------------------------------------------------------

def test_disco_labels_say_whether_the_next_levels_best_is_on_the_path(recorded):
    trace = recorded[0][0]  # the target drafting for itself: accepted until the answer runs out
    x, y = disco_rows(trace, MAX_DEPTH)
    for d in range(1, MAX_DEPTH):
        start = TOP_K + (d - 1) * TOP_K * TOP_K  # level d + 1
        level = slice(start, start + TOP_K * TOP_K)
        for p in range(trace.positions):
            best = start + int(trace.scores[p, level].argmax())
            assert bool(y[(d - 1) * trace.positions + p]) == bool(trace.on_path[p, best])
    assert y.any() and not y.all()


@pytest.mark.parametrize("kind", KINDS)
def test_datasets_are_balanced(recorded, kind):
    x, y = dataset(kind, recorded[0], C2T_DEPTH if kind == "c2t" else MAX_DEPTH, torch.Generator().manual_seed(0))
    assert int(y.sum()) * 2 == len(y) > 20
    assert x.shape == (len(y), 4 if kind == "c2t" else 5) and torch.isfinite(x).all()


def test_training_beats_a_constant_guess_on_a_separable_toy():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 3, generator=generator) * torch.tensor([10.0, 0.1, 1.0]) + 5  # scales the network must fix
    y = (x[:, 0] - 5) + 100 * (x[:, 1] - 5) > 0
    torch.manual_seed(0)
    classifier = Classifier(3, 32)
    metrics = train_classifier(classifier, x, y, FitSettings(epochs=10, batch_size=64, lr=1e-3))
    assert metrics["held_out_rows"] == 200 and metrics["train_rows"] == 1800
    assert metrics["held_out_loss"] < 0.5 * metrics["held_out_loss_before"]
    assert metrics["balanced_accuracy"] > 0.95  # a constant guess scores 0.5


@pytest.mark.parametrize("kind", KINDS)
def test_training_on_traces_lowers_the_held_out_loss(recorded, kind):
    _, metrics = train_baseline(kind, recorded[0], HIDDEN[kind], FAST, C2T_DEPTH if kind == "c2t" else None)
    assert metrics["held_out_loss"] < metrics["held_out_loss_before"]
    assert metrics["balanced_accuracy"] > 0.6


def test_training_needs_both_labels(recorded):
    with pytest.raises(LtdError, match="do not hold both labels"):
        train_classifier(Classifier(2, 4), torch.zeros(10, 2), torch.ones(10, dtype=torch.bool), FAST)
    with pytest.raises(LtdError, match="c2t depth 9 needs traces of at least that many levels"):
        train_baseline("c2t", recorded[0], 4, FAST, 9)


# -- weights on disk ------------------------------------------------------------------------------

def test_weights_round_trip(weights, tmp_path):
    x = torch.randn(7, 5)
    for kind in ("disco", "specdec_pp"):
        first, second = load_classifier(weights[kind], kind), load_classifier(weights[kind], kind)
        assert (first.kind, first.top_k, first.max_depth) == (kind, TOP_K, MAX_DEPTH)
        assert torch.equal(first.classifier(x), second.classifier(x))
    torch.manual_seed(3)
    trained = TrainedClassifier("c2t", 4, 6, Classifier(4, 16))
    trained.classifier.fit_scaling(torch.randn(50, 4) * 3)
    save_classifier(tmp_path / "c2t.pt", trained)
    loaded = load_classifier(tmp_path / "c2t.pt", "c2t")
    x = torch.randn(9, 4)
    assert torch.equal(loaded.classifier(x), trained.classifier(x))
    assert (loaded.top_k, loaded.max_depth, loaded.classifier.hidden) == (4, 6, 16)


@pytest.mark.parametrize("write, expected", [
    (None, r"no trained disco weights at .*missing\.pt: python -m ltd.cli.train_baselines trains them"),
    (b"not a torch file", r"cannot read disco weights .*bad\.pt: "),
])
def test_missing_or_broken_weights_are_one_line(tmp_path, monkeypatch, write, expected):
    monkeypatch.chdir(tmp_path)
    path = "missing.pt" if write is None else "bad.pt"
    if write is not None:
        (tmp_path / path).write_bytes(write)
    with pytest.raises(LtdError, match=expected) as error:
        make_controller({"kind": "disco", "weights": path})
    assert "\n" not in str(error.value)


def test_weights_of_another_baseline_or_tree_are_refused(weights):
    with pytest.raises(LtdError, match="holds disco weights, not specdec_pp"):
        make_controller(settings_of("specdec_pp", weights["disco"]))
    with pytest.raises(LtdError, match=r"trained for top-k 3 and depth 4, not this disco's 10 and 12"):
        make_controller({"kind": "disco", "weights": str(weights["disco"])})
    with pytest.raises(LtdError, match="disco threshold must be a probability"):
        make_controller(settings_of("disco", weights["disco"], threshold=2))


# -- the controllers ------------------------------------------------------------------------------

@pytest.mark.parametrize("drafter", ["self", "draft_lm"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("place", PLACES)
def test_learned_baselines_decode_losslessly(tiny, small_draft_hf, weights, place, kind, drafter):
    target = tiny("llama")
    engine, _ = target.engine(lambda t: drafters(target, small_draft_hf, place)[drafter], place=place)
    controller = make_controller(settings_of(kind, weights[kind]))
    generation = engine.generate(PROMPT, controller, MAX_NEW)

    assert generation.tokens == autoregressive(target, "llama", place=place)
    for cycle in generation.cycles:
        assert 1 <= cycle.verify_size <= 8
        assert cycle.depth == C2T_DEPTH if kind == "c2t" else 1 <= cycle.depth <= MAX_DEPTH


@pytest.mark.parametrize("kind, threshold, depths, sizes", [
    ("disco", 0.0, {MAX_DEPTH}, None),  # p(continue) is never below 0: always the deepest tree
    ("disco", 1.0, {1}, None),  # nor ever 1 or more: stops after the root's expansion
    ("specdec_pp", 1.0, {MAX_DEPTH}, None),  # a rejection is never more than certain
    ("c2t", 1.0, {C2T_DEPTH}, {1}),  # no candidate above 1: one token, the lower clamp
    ("c2t", 0.0, {C2T_DEPTH}, {8}),  # every candidate above 0: the cap
])
def test_the_thresholds_steer_the_decisions(tiny, small_draft_hf, weights, kind, threshold, depths, sizes):
    target = tiny("llama")
    engine, _ = target.engine(lambda t: drafters(target, small_draft_hf)["draft_lm"])
    generation = engine.generate(PROMPT, make_controller(settings_of(kind, weights[kind], threshold=threshold)), 12)
    assert {c.depth for c in generation.cycles} == depths
    assert sizes is None or {c.verify_size for c in generation.cycles} == sizes


def test_specdec_pp_stops_once_a_rejection_is_likely(tmp_path):
    """Its stop is 1 - the product of the head's acceptance probabilities over the drafted levels
    (an untrained head: probabilities near 0.5, far from the saturated ends)."""
    torch.manual_seed(0)
    save_classifier(tmp_path / "head.pt", TrainedClassifier("specdec_pp", TOP_K, MAX_DEPTH, Classifier(5, 1024)))
    build = lambda threshold: make_controller(settings_of("specdec_pp", tmp_path / "head.pt", threshold=threshold))
    tree = DraftTree(TOP_K)
    tree.add_root(torch.tensor([[0.5, 0.3, 0.2]]).log(), torch.tensor([[1, 2, 3]]), torch.tensor([1.0]))
    for _ in range(2):
        tree.add_expansion(torch.tensor([[0.5, 0.3, 0.2]] * TOP_K).log(), torch.arange(9).reshape(3, 3),
                           torch.ones(TOP_K))
    p = build(0.5).trained.classifier.probability(tree_depth_features(tree, [1, 2, 3], MAX_DEPTH))
    assert ((0.05 < p) & (p < 0.95)).all()
    rejected = 1 - float(p.prod())
    assert build(rejected - 1e-3).stop(tree) and not build(rejected + 1e-3).stop(tree)
    shallow = 1 - float(p[:2].prod())  # after two levels the product has two factors
    tree.scores, tree.parents, tree.entropies = tree.scores[:2], tree.parents[:2], tree.entropies[:2]
    assert build(shallow - 1e-3).stop(tree) and not build(shallow + 1e-3).stop(tree)


# -- the entry point ------------------------------------------------------------------------------

def test_train_baselines_writes_all_three(recorded, tmp_path):
    traces = tmp_path / "traces"
    for i, trace in enumerate(recorded[0]):
        trace.save(traces / f"{i}-0.safetensors")
    command = [sys.executable, "-m", "ltd.cli.train_baselines", f"traces={traces}", f"output={tmp_path / 'out'}",
               "c2t_depth=3", "epochs=1", "threads=1", f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.pt")) == ["c2t.pt", "disco.pt", "specdec_pp.pt"]
    for kind in KINDS:
        assert any(line.startswith(kind) for line in result.stdout.splitlines())
    assert load_classifier(tmp_path / "out" / "c2t.pt", "c2t").max_depth == 3


def test_train_baselines_without_traces_is_one_line(tmp_path):
    command = [sys.executable, "-m", "ltd.cli.train_baselines", f"traces={tmp_path / 'none'}",
               f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: no traces in {tmp_path / 'none'}: make record ARGS='model=qwen2.5-coder-1.5b drafter=qwen2.5-coder-0.5b' records them"]
