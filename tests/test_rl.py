"""The size environment's replay backend: TorchRL's spec check, determinism, rewards priced from the
trace and the cost model, and the observation the engine's tree would give."""
import pytest
import torch
from torchrl.envs.utils import check_env_specs

from conftest import random_prompt
from ltd.decoding.engine import Engine
from ltd.decoding.tree import DraftTree
from ltd.errors import LtdError
from ltd.rl.observations import size_observation
from ltd.rl.rewards import cycle_reward
from ltd.rl.size_env import SizeReplayEnv
from ltd.traces.cost_model import CostModel
from ltd.traces.record import accepted_for, record_answer

TOP_K, MAX_DEPTH = 3, 4
SIZES = [1, 2, 4, 8, 16]


class Bare:
    def __init__(self, decoder):
        self.decoder = decoder


@pytest.fixture(scope="module")
def recorded(tiny):
    """Traces of two greedy answers of a tiny target drafting for itself, and the pieces that made them."""
    tiny_target = tiny("llama")
    target = tiny_target.decoder()
    drafter = tiny_target.self_drafter()
    engine = Engine(target, (), drafter)
    prompts = [random_prompt(8, seed=s) for s in (1, 2)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests that use it run: another thread count sums floats in another order
    traces = [record_answer(Bare(target), drafter, p, engine.generate_autoregressive(p, 20).tokens, TOP_K, MAX_DEPTH)
              for p in prompts]
    torch.set_num_threads(threads)
    return traces, prompts, target, drafter


def costs() -> CostModel:
    return CostModel(model="tiny", drafter="self", device="cpu", threads=1, top_k=TOP_K, contexts=[8, 64],
                     verify_sizes=[1, 16], verify_s=[[0.01, 0.03], [0.02, 0.05]], update_s=[0.001, 0.002],
                     expand_s=[[0.002] * (MAX_DEPTH - 1), [0.003] * (MAX_DEPTH - 1)])


def test_specs_pass_torchrls_check(recorded):
    check_env_specs(SizeReplayEnv(recorded[0], costs(), SIZES, batch=4, seed=0))


def test_same_seed_same_rollout(recorded):
    def roll(seed):
        env = SizeReplayEnv(recorded[0], costs(), SIZES, batch=3, seed=seed)
        torch.manual_seed(0)  # the random policy's actions
        return env.rollout(30, break_when_any_done=False)

    first, second, other = roll(5), roll(5), roll(6)
    assert torch.equal(first["next", "reward"], second["next", "reward"])
    assert torch.equal(first["observation"], second["observation"])
    assert not torch.equal(first["observation"], other["observation"])


@pytest.mark.parametrize("reward", ["throughput", "acceptance", "time_cost"])
def test_rewards_price_the_trace_with_the_cost_model(recorded, reward):
    traces = recorded[0]
    model = costs()
    env = SizeReplayEnv(traces, model, SIZES, batch=2, depth=3, reward=reward, seed=0)
    td = env.reset()
    rows = [(int(env.trace_index[i]), int(env.position[i])) for i in range(2)]
    td["action"] = torch.tensor([4, 1])
    out = env.step(td)["next"]
    for i, (t, p) in enumerate(rows):
        trace, verify = traces[t], SIZES[int(td["action"][i])]
        accepted = accepted_for(trace, p, 3, verify)
        context = trace.prompt_length + p
        draft_s, verify_s = model.draft_seconds(3, context), model.verify_seconds(verify, context)
        expected = cycle_reward(reward, torch.tensor(float(accepted)), torch.tensor(draft_s), torch.tensor(verify_s))
        assert float(out["reward"][i]) == pytest.approx(float(expected))
        assert int(env.position[i]) == p + accepted + 1 or bool(out["done"][i])


def test_episodes_end_with_the_answer(recorded):
    env = SizeReplayEnv(recorded[0][:1], costs(), SIZES, batch=1, depth=MAX_DEPTH, seed=0)
    largest = lambda td: td.set("action", torch.tensor([len(SIZES) - 1]))
    td = env.rollout(100, policy=largest, break_when_any_done=True)
    assert bool(td["next", "done"][0, -1]) and not td["next", "done"][0, :-1].any()
    trace, position, cycles = recorded[0][0], 0, 0
    while position < trace.positions:  # the engine's walk over the same answer
        position += accepted_for(trace, position, MAX_DEPTH, SIZES[-1]) + 1
        cycles += 1
    assert td.shape[1] == cycles < trace.positions  # drafts were accepted: fewer cycles than tokens


def test_the_engines_tree_gives_the_environments_observation(recorded):
    traces, prompts, target, drafter = recorded
    env = SizeReplayEnv(traces[:1], costs(), SIZES, batch=1, depth=2, seed=0)
    observed = env.reset()["observation"][0]
    # The engine's first cycle on the same prompt: prefill, then the drafter grows two levels.
    tokens = torch.tensor(prompts[0])
    target.reset(target.max_positions)  # as the engine does: the same cache layout, the same floats
    logits, features = target(tokens, feature_layers=drafter.feature_layers, last_only=True)
    drafter.reset(target.max_positions)
    tree = DraftTree(TOP_K)
    tree.add_root(*drafter.update(torch.cat((tokens, logits[-1].argmax()[None])), features, TOP_K))
    tree.add_expansion(*drafter.expand(tree.frontier_tokens(), tree.frontier_parent_slots, tree.depth, TOP_K))
    assert torch.equal(size_observation(tree.all_scores(), 2, target.length, TOP_K, MAX_DEPTH), observed)


def test_bad_settings_are_one_line(recorded):
    with pytest.raises(LtdError, match="unknown reward 'speed'"):
        cycle_reward("speed", torch.zeros(1), torch.ones(1), torch.ones(1))
    with pytest.raises(LtdError, match="depth 9 is outside the traces' 1..4"):
        SizeReplayEnv(recorded[0], costs(), SIZES, depth=9)


