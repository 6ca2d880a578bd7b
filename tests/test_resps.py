"""Re-SpS: its action grid, the target state the engine shows it, persistence, lossless decoding,
its environment's specs and a resumed training."""
from dataclasses import replace

import pytest
import torch
from test_lossless import MAX_NEW, PROMPT, autoregressive, make_drafter
from test_rl import Bare, Interrupt, stop_after_two
from torchrl.envs.utils import check_env_specs

from conftest import PLACES, random_prompt
from ltd.controllers.registry import make_controller
from ltd.controllers.resps import ReSpS
from ltd.core.errors import LtdError
from ltd.decoding.controller import Controller, StaticTree
from ltd.decoding.engine import Engine
from ltd.rl.policies import Policy, PolicySpec
from ltd.rl.resps.actions import Shape, action_grid, cost_model_bins, paper_grid, valid
from ltd.rl.resps.env import ReSpSOnlineEnv, resps_spec, train_resps
from ltd.rl.resps.replay import ReSpSReplayEnv, ShapeTables, resps_replay_speedup
from ltd.rl.settings import PPOSettings
from ltd.traces.cost_model import CostModel
from ltd.traces.trace import record_answer

GRID = action_grid([2, 4, 8], [2, 3, 4], [2, 3])
HIDDEN = 64  # the tiny targets' hidden size


def test_the_paper_grid_keeps_177_shapes_by_its_rule():
    grid = paper_grid()
    assert len(grid) == 177 and all(valid(s) for s in grid)
    # A tree of depth 3 and top-k 8 holds no more than 8^2 = 64 total tokens: TT 80, 96 and 128 go.
    assert {Shape(tt - 1, 3, 8) for tt in (80, 96, 128)} & set(grid) == set()
    assert Shape(63, 3, 8) in grid and not valid(Shape(64, 3, 8)) and not valid(Shape(3, 5, 1))


def test_cost_model_bins_stay_within_the_budget():
    # A step of 10 ms; verifying V tokens adds V ms; each level of drafting 3 ms, the first more when it
    # absorbs more tokens (the bins price a cycle absorbing one).
    costs = CostModel(model="m", drafter="d", device="cpu", threads=2, top_k=3, contexts=[100, 200, 300],
                      verify_sizes=[0, 4, 8, 16, 32], verify_s=[[0.010, 0.014, 0.018, 0.026, 0.042]] * 3,
                      absorb_s=[[0.003 + 0.001 * n for n in range(13)]] * 3, expand_s=[[0.003] * 11] * 3,
                      overhead_s=[[0.0] + [0.001] * 4] * 3)
    sizes, depths, top_ks = cost_model_bins(costs, top_k=3, budget=2.0)
    assert sizes == [4, 8] and depths == [1, 2, 3, 4, 5, 6] and top_ks == [2, 3]


def policy_file(tmp_path, grid=GRID, seed=0) -> str:
    torch.manual_seed(seed)
    spec = PolicySpec("resps", top_k=max(s.top_k for s in grid), max_depth=max(s.depth for s in grid), hidden=(16,),
                      state_width=HIDDEN, grid=tuple((s.verify, s.depth, s.top_k) for s in grid))
    Policy(spec).save(tmp_path / "resps.pt")
    return str(tmp_path / "resps.pt")


class Watcher(Controller):
    """A static tree that keeps every state the engine shows it."""
    kind = "watcher"
    reads_state = True
    top_k = 2

    def __init__(self):
        self.states = []

    def see(self, state):
        self.states.append(state())

    def keep_drafting(self, tree, context_length):
        return tree.depth < 2

    def verify_size(self, tree, context_length):
        return 3


@pytest.mark.parametrize("drafter", ["eagle3", "draft_lm"])
def test_the_engine_shows_the_targets_state_at_the_last_accepted_token(tiny, small_draft_hf, drafter):
    target = tiny("llama")
    engine, decoder = target.engine(make_drafter(drafter, target, small_draft_hf))
    watcher = Watcher()
    out = engine.generate(PROMPT, watcher, 12)
    assert out.tokens == autoregressive(target, "llama")[:12]
    # The state before each cycle: at the prompt's last token, then at the last token each cycle accepted.
    positions = [len(PROMPT) - 1]
    for cycle in out.cycles[:-1]:
        positions.append(positions[-1] + cycle.accepted + 1)
    assert len(watcher.states) == len(out.cycles)
    fresh = target.decoder()
    fresh.reset()
    layers = engine.drafter.feature_layers or (fresh.spec.num_layers,)
    _, features = fresh(torch.tensor(PROMPT + out.tokens), feature_layers=layers)
    for state, position in zip(watcher.states, positions):
        expected = features[position].view(len(layers), -1).mean(0)
        torch.testing.assert_close(state, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("persistence", [1, 3, 7])
def test_a_shape_is_held_for_exactly_persistence_cycles(tiny, tmp_path, persistence):
    target = tiny("llama")
    engine, _ = target.engine(lambda t: target.self_drafter())
    controller = ReSpS(policy=policy_file(tmp_path), persistence=persistence, temperature=5.0)
    calls = []
    forward = controller.net.forward
    controller.net.forward = lambda x: calls.append(len(calls)) or forward(x)
    shapes = []
    controller.cycle_top_k = lambda: shapes.append(controller.shape) or controller.shape.top_k
    out = engine.generate(PROMPT, controller, MAX_NEW)
    assert len(calls) == -(-len(out.cycles) // persistence)  # one decision per window
    for start in range(0, len(shapes), persistence):
        assert len(set(shapes[start:start + persistence])) == 1
    assert len(set(shapes)) > 1  # at temperature 5 the windows do not all draw one shape
    for cycle, shape in zip(out.cycles, shapes):
        assert cycle.depth == shape.depth and cycle.verify_size <= shape.verify


@pytest.mark.parametrize("drafter", ["eagle3", "draft_lm", "self"])
@pytest.mark.parametrize("place", PLACES)
def test_resps_decodes_losslessly(tiny, small_draft_hf, tmp_path, place, drafter):
    target = tiny("llama")
    engine, _ = target.engine(make_drafter(drafter, target, small_draft_hf, place), place=place)
    controller = make_controller({"kind": "resps", "policy": policy_file(tmp_path), "persistence": 2,
                                  "temperature": 3.0})
    out = engine.generate(PROMPT, controller, MAX_NEW)
    assert out.tokens == autoregressive(target, "llama", place=place)
    assert len({(c.depth) for c in out.cycles}) > 1  # shapes changed between windows


def test_resps_settings_errors_are_one_line(tmp_path):
    with pytest.raises(LtdError, match="no policy at .*: make resps trains one"):
        ReSpS(policy=str(tmp_path / "none.pt"))
    with pytest.raises(LtdError, match="resps persistence must be a whole number of cycles >= 1, got 0"):
        ReSpS(policy=policy_file(tmp_path), persistence=0)
    spec = PolicySpec("size", top_k=2, max_depth=3, hidden=(4,), sizes=(1, 2))
    Policy(spec).save(tmp_path / "size.pt")
    with pytest.raises(LtdError, match="is a size policy, not a resps policy"):
        ReSpS(policy=str(tmp_path / "size.pt"))


class StepClock:
    """A clock that advances 1 ms a reading: cycle times, and so rewards, the same on every run."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 0.001
        return self.now


def online_engine(tiny):
    target = tiny("llama")
    engine = Engine(target.decoder(), (), target.self_drafter())
    engine.clock = StepClock()
    return engine


def test_the_online_environment_passes_torchrls_check_and_holds_its_shape(tiny):
    engine = online_engine(tiny)
    prompts = [random_prompt(8, seed=s) for s in (1, 2)]
    env = ReSpSOnlineEnv(engine, prompts, GRID, HIDDEN, persistence=3, max_new_tokens=20)
    check_env_specs(env)
    td = env.reset()
    td["action"] = torch.tensor([GRID.index(Shape(2, 3, 2))])
    before = len(env.run.result.cycles)
    out = env.step(td)["next"]
    cycles = env.run.result.cycles[before:]
    assert 1 <= len(cycles) <= 3 and all(c.depth == 3 and c.verify_size <= 2 for c in cycles)
    assert bool(out["done"]) and float(out["reward"]) > 0


def check_resumes(tmp_path, make_env, settings, validate=None):
    """An interrupted training resumes as if never stopped, and saves a policy of the grid."""
    spec = resps_spec(GRID, HIDDEN, (16,))
    train = lambda directory, **kw: train_resps(make_env, spec, settings, directory, validate, **kw)
    whole = train(tmp_path / "whole")
    with pytest.raises(Interrupt):
        train(tmp_path / "cut", log=stop_after_two)
    resumed = train(tmp_path / "cut")
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    saved = Policy.load(tmp_path / "cut" / "policy.pt", "resps")
    assert saved.spec.grid == tuple((s.verify, s.depth, s.top_k) for s in GRID) and saved.spec.state_width == HIDDEN


def test_an_interrupted_online_training_resumes_as_if_never_stopped(tiny, tmp_path):
    prompts = [random_prompt(8, seed=s) for s in (1, 2, 3)]
    settings = PPOSettings(frames=4 * 16, rollout=16, minibatch=8, epochs=2, lr=3e-4, critic_hidden=(16,),
                           validate_every=1, gamma=0.95, lmbda=0.9, entropy_coeff=0.1)
    check_resumes(tmp_path,
                  lambda: ReSpSOnlineEnv(online_engine(tiny), prompts, grid=GRID, state_width=HIDDEN, persistence=2,
                                         max_new_tokens=16),
                  settings)


@pytest.fixture(scope="module")
def shape_traces(tiny):
    """Greedy answers of a tiny target drafting for itself, recorded with each top-k of GRID and the
    states, and the pieces that made them."""
    tiny_target = tiny("llama")
    target, drafter = tiny_target.decoder(), tiny_target.self_drafter()
    engine = Engine(target, (), drafter)
    prompts = [random_prompt(8, seed=s) for s in (1, 2, 3, 4)]
    answers = [engine.generate_autoregressive(p, 24).tokens for p in prompts]
    by_top_k = {k: [record_answer(Bare(target), drafter, prompt=p, answer=a, top_k=k, max_depth=4,
                                  states=True) for p, a in zip(prompts, answers)]
                for k in (2, 3)}
    return by_top_k, prompts, engine


def test_traces_hold_the_state_the_engine_shows(shape_traces):
    by_top_k, prompts, engine = shape_traces
    watcher = Watcher()
    out = engine.generate(prompts[0], watcher, 24)
    position = 0
    for state, cycle in zip(watcher.states, out.cycles):
        torch.testing.assert_close(by_top_k[2][0].states[position].float(), state, atol=2e-2, rtol=1e-2)
        position += cycle.accepted + 1
    assert torch.equal(by_top_k[2][0].states, by_top_k[3][0].states)


def test_a_replayed_shape_accepts_what_the_engine_accepts(shape_traces):
    by_top_k, prompts, engine = shape_traces
    from test_rl import costs

    tables = ShapeTables(by_top_k, costs(), GRID)
    for shape in (Shape(2, 3, 2), Shape(4, 4, 2), Shape(2, 2, 3), Shape(8, 3, 3), Shape(8, 4, 3)):
        cycles = [c for p in prompts for c in engine.generate(p, StaticTree(shape.depth, shape.top_k, shape.verify),
                                                                24).cycles]
        # The engine's last cycle may run past the answer's end, which the replay's cannot: count cycles.
        replayed = int(tables.length.sum()) / resps_replay_speedup(tables, GRID.index(shape), 5)["tau"]
        assert replayed == pytest.approx(len(cycles)), shape


def test_the_replay_environment_passes_torchrls_check_and_holds_its_shape(shape_traces):
    from test_rl import costs

    tables = ShapeTables(shape_traces[0], costs(), GRID)
    env = ReSpSReplayEnv(tables, persistence=3, batch=4)
    check_env_specs(env)
    td = env.reset()
    start = env.position.clone()
    td["action"] = torch.full((4,), GRID.index(Shape(8, 4, 3)))
    out = env.step(td)["next"]
    assert out["done"].all() and (out["reward"] > 0).all() and (out["cycle_depth"] == 4).all()
    walked = env.position - start  # three cycles of at least one token each, unless the answer ended
    assert ((walked >= 3) | (env.position >= tables.length[env.trace_index])).all()
    torch.testing.assert_close(out["observation"][0], tables.observe(env.trace_index, env.position)[0])


def test_a_replayed_window_is_priced_with_what_its_cycle_accepts(shape_traces):
    from test_rl import costs

    model = costs()
    tables = ShapeTables(shape_traces[0], model, GRID)
    env = ReSpSReplayEnv(tables, persistence=1, batch=4)
    td = env.reset()
    rows, contexts = tables.first.rows(env.trace_index, env.position)
    accepted = tables.tables[3].accepted(rows, torch.full((4,), 4), torch.full((4,), 8))
    td["action"] = torch.full((4,), GRID.index(Shape(8, 4, 3)))
    out = env.step(td)["next"]
    seconds = [model.draft_seconds(4, c, a) + model.verify_seconds(8, c) + model.overhead_seconds(8, c)
               for c, a in zip(contexts.tolist(), accepted.tolist())]
    torch.testing.assert_close(out["reward"].reshape(-1), (accepted + 1) / torch.tensor(seconds, dtype=torch.float32))


def test_replay_needs_the_states_and_every_top_k(shape_traces):
    from test_rl import costs

    by_top_k = shape_traces[0]
    with pytest.raises(LtdError, match=r"the grid has top-k \[3\] but no traces were recorded with it"):
        ShapeTables({2: by_top_k[2]}, costs(), GRID)
    stateless = {k: [replace(t, states=None) for t in traces] for k, traces in by_top_k.items()}
    with pytest.raises(LtdError, match="make record states=true"):
        ShapeTables(stateless, costs(), GRID)


def test_an_interrupted_replay_training_resumes_as_if_never_stopped(shape_traces, tmp_path):
    from test_rl import costs

    tables = ShapeTables(shape_traces[0], costs(), GRID)
    settings = PPOSettings(frames=4 * 32, rollout=32, minibatch=16, epochs=2, lr=3e-4, critic_hidden=(16,),
                           validate_every=1, gamma=0.95, lmbda=0.9, entropy_coeff=0.1)
    check_resumes(tmp_path, lambda: ReSpSReplayEnv(tables, 3, batch=8), settings,
                  lambda policy: resps_replay_speedup(tables, policy, 3)["speedup"])
