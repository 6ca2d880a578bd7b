"""The policies' environments, rewards, PPO and the LTD controller, on traces of a tiny target
drafting for itself: TorchRL's spec checks, determinism, rewards priced from the trace and the cost
model, observations equal to the engine's, PPO learning, resumption, save and load."""
import pytest
import torch
from torchrl.envs.utils import check_env_specs

from conftest import random_prompt
from ltd.controllers.ltd import LTD
from ltd.core.errors import LtdError
from ltd.decoding.engine import Engine
from ltd.decoding.tree import DraftTree
from ltd.rl.backends import ReplayBackend
from ltd.rl.ltd.depth_env import DepthOnlineEnv, DepthReplayEnv
from ltd.rl.ltd.size_env import SizeOnlineEnv, SizeReplayEnv
from ltd.rl.ltd.stages import schedule, train_ltd
from ltd.rl.observations import depth_observation, size_observation
from ltd.rl.policies import CONTINUE, STOP, Policy, PolicySpec, policy_depths
from ltd.rl.ppo import PPOTrainer, learning_rate_factor
from ltd.rl.rewards import Reward
from ltd.rl.settings import LtdSettings, PPOSettings
from ltd.rl.trace_table import TraceTable
from ltd.rl.validation import replay_speedup
from ltd.traces.cost_model import CostModel
from ltd.traces.trace import accepted_for, record_answer

TOP_K, MAX_DEPTH = 3, 4
SIZES = [0, 1, 2, 4, 8]


class Bare:
    def __init__(self, decoder):
        self.decoder = decoder


@pytest.fixture(scope="module")
def recorded(tiny):
    """Traces of three greedy answers of a tiny target drafting for itself, and the pieces that made them."""
    tiny_target = tiny("llama")
    target = tiny_target.decoder()
    drafter = tiny_target.self_drafter()
    engine = Engine(target, (), drafter)
    prompts = [random_prompt(8, seed=s) for s in (1, 2, 3)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests that use it run: another thread count sums floats in another order
    traces = [record_answer(Bare(target), drafter, prompt=p, answer=engine.generate_autoregressive(p, 20).tokens,
                            top_k=TOP_K, max_depth=MAX_DEPTH)
              for p in prompts]
    torch.set_num_threads(threads)
    return traces, prompts, target, drafter, engine


def costs(verify_per_token: float = 0.01) -> CostModel:
    return CostModel(model="tiny", drafter="self", device="cpu", threads=1, top_k=TOP_K, contexts=[8, 64],
                     verify_sizes=[0, 1, 16], verify_s=[[0.01, 0.01 + verify_per_token, 0.01 + 16 * verify_per_token],
                                                        [0.02, 0.02 + verify_per_token, 0.02 + 16 * verify_per_token]],
                     absorb_s=[[ms * n for n in range(1, MAX_DEPTH + 2)] for ms in (0.001, 0.002)],
                     expand_s=[[0.002] * (MAX_DEPTH - 1), [0.003] * (MAX_DEPTH - 1)], overhead_s=[[0.0, 0.0005, 0.0008], [0.0, 0.001, 0.0015]])


def small_ppo(frames: int, **changes) -> PPOSettings:
    return PPOSettings(**dict(dict(frames=frames, rollout=256, minibatch=64, epochs=4, critic_hidden=(32,),
                                   validate_every=2, gamma=0.9), **changes))


def replay_envs(traces, batch=4, seed=0):
    return [SizeReplayEnv(traces, costs(), SIZES, batch=batch, seed=seed),
            DepthReplayEnv(traces, costs(), batch=batch, verify=4, seed=seed)]


def test_replay_specs_pass_torchrls_check(recorded):
    for env in replay_envs(recorded[0]):
        check_env_specs(env)


def test_online_specs_pass_torchrls_check(recorded):
    _, prompts, _, _, engine = recorded
    check_env_specs(SizeOnlineEnv(engine, prompts, SIZES, TOP_K, MAX_DEPTH, max_new_tokens=12))
    check_env_specs(DepthOnlineEnv(engine, prompts, TOP_K, MAX_DEPTH, verify=2, max_new_tokens=12))


def test_same_seed_same_rollout(recorded):
    def roll(index, seed):
        env = replay_envs(recorded[0], batch=3, seed=seed)[index]
        torch.manual_seed(0)  # the random policy's actions
        return env.rollout(30, break_when_any_done=False)

    for index in (0, 1):
        first, second, other = roll(index, 5), roll(index, 5), roll(index, 6)
        assert torch.equal(first["next", "reward"], second["next", "reward"])
        assert torch.equal(first["observation"], second["observation"])
        assert not torch.equal(first["observation"], other["observation"])


def test_reward_functions():
    accepted, draft, verify, step = torch.tensor([3.0]), torch.tensor([0.1]), torch.tensor([0.3]), torch.tensor([0.2])
    assert Reward("throughput")(accepted, draft, verify, step).item() == pytest.approx(4 / 0.4)
    assert Reward("acceptance")(accepted, draft, verify, step).item() == 4.0
    assert Reward("time_cost")(accepted, draft, verify, step).item() == pytest.approx(-0.4)
    # 4 tokens in 0.4 s, where 1.5 x autoregressive speed (a step of 0.2 s) makes 3: 1 token saved
    assert Reward("tokens_saved", 1.5)(accepted, draft, verify, step).item() == pytest.approx(1.0)
    with pytest.raises(LtdError, match="unknown reward 'speed'"):
        Reward("speed")
    with pytest.raises(LtdError, match="reward rate must be a number > 0 or null, got -1"):
        Reward("tokens_saved", -1)
    with pytest.raises(LtdError, match="reward tokens_saved has no rate"):
        Reward("tokens_saved")(accepted, draft, verify, step)


def test_tokens_saved_ranks_policies_as_their_throughput_does():
    """Two policies' cycles: the one with the higher mean per-cycle throughput decodes slower (its quick
    cycles make few tokens, its long ones many); tokens_saved at a rate between their speeds ranks them
    as tokens / time does."""
    step = torch.tensor([1.0, 1.0])
    short_and_long = (torch.tensor([0.0, 5.0]), torch.tensor([0.2, 3.0]), torch.tensor([0.3, 3.0]))  # 7 in 6.5 s
    steady = (torch.tensor([1.0, 1.0]), torch.tensor([0.4, 0.4]), torch.tensor([1.0, 1.0]))  # 4 tokens in 2.8 s
    per_cycle = [Reward("throughput")(*cycles, step).mean() for cycles in (short_and_long, steady)]
    assert per_cycle[0] > per_cycle[1]  # 1.5 tokens/s against 1.43, while 7 / 6.5 < 4 / 2.8
    saved = [Reward("tokens_saved", 1.2)(*cycles, step).mean() for cycles in (short_and_long, steady)]
    assert saved[0] < saved[1]


@pytest.mark.parametrize("reward", ["throughput", "acceptance", "time_cost", "tokens_saved"])
def test_size_rewards_price_the_trace_with_the_cost_model(recorded, reward):
    traces = recorded[0]
    model = costs()
    reward = Reward(reward, rate=1.2 if reward == "tokens_saved" else None)
    env = SizeReplayEnv(traces, model, SIZES, batch=2, depth=3, reward=reward, seed=0)
    td = env.reset()
    rows = [(int(env.trace_index[i]), int(env.position[i])) for i in range(2)]
    td["action"] = torch.tensor([4, 1])
    out = env.step(td)["next"]
    for i, (t, p) in enumerate(rows):
        trace, verify = traces[t], SIZES[int(td["action"][i])]
        accepted = accepted_for(trace, p, 3, verify)
        context = trace.prompt_length + p
        # The draft absorbs what the cycle accepts; the overhead goes with the verification.
        draft_s = model.draft_seconds(3, context, accepted)
        verify_s = model.verify_seconds(verify, context) + model.overhead_seconds(verify, context)
        expected = reward(torch.tensor(float(accepted)), torch.tensor(draft_s), torch.tensor(verify_s),
                          torch.tensor(model.verify_seconds(0, context)))
        assert float(out["reward"][i]) == pytest.approx(float(expected))
        assert int(out["cycle_accepted"][i]) == accepted and int(out["cycle_verify"][i]) == verify
        assert int(env.position[i]) == p + accepted + 1 or bool(out["done"][i])


def test_size_episodes_walk_the_answer_to_its_end(recorded):
    traces = recorded[0]
    env = SizeReplayEnv(traces, costs(), SIZES, batch=1, depth=MAX_DEPTH, seed=3)
    td = env.reset()
    trace, position = traces[int(env.trace_index[0])], int(env.position[0])
    cycles = 0
    while True:  # the environment's walk with the largest V ...
        td["action"] = torch.tensor([len(SIZES) - 1])
        td = env.step(td)["next"]
        cycles += 1
        if bool(td["done"][0]):
            break
    walked = 0
    while position < trace.positions:  # ... is the engine's walk over the same answer
        position += accepted_for(trace, position, MAX_DEPTH, SIZES[-1]) + 1
        walked += 1
    assert cycles == walked


def test_depth_episode_is_one_cycle_paid_at_the_stop(recorded):
    traces = recorded[0]
    model = costs()
    env = DepthReplayEnv(traces, model, batch=1, verify=2, seed=1)
    td = env.reset()
    assert td["observation"][0, -2] == pytest.approx(1 / MAX_DEPTH)  # the root expansion is forced: depth 1
    trace, position = traces[int(env.trace_index[0])], int(env.position[0])
    rewards = []
    for _ in range(MAX_DEPTH - 1):  # always continue: the tree stops by itself at MAX_DEPTH
        td["action"] = torch.tensor([CONTINUE])
        td = env.step(td)["next"]
        rewards.append(float(td["reward"][0]))
        if bool(td["done"][0]):
            break
    assert len(rewards) == MAX_DEPTH - 1 and rewards[:-1] == [0.0] * (MAX_DEPTH - 2)
    context = trace.prompt_length + position
    accepted = accepted_for(trace, position, MAX_DEPTH, 2)
    expected = (accepted + 1) / (model.draft_seconds(MAX_DEPTH, context, accepted) + model.verify_seconds(2, context)
                                 + model.overhead_seconds(2, context))
    assert rewards[-1] == pytest.approx(expected, rel=1e-5)
    td = env.reset()
    td["action"] = torch.tensor([STOP])  # stopping at once verifies the one-level tree
    out = env.step(td)["next"]
    assert bool(out["done"][0]) and int(out["cycle_depth"][0]) == 1


def test_replay_validation_prices_each_cycle_with_what_it_accepts(recorded):
    """The held-out speed-up walks each answer as the engine would, each cycle priced with the
    tokens it accepts and its overhead, against one root-alone target pass per token."""
    traces = recorded[0]
    model = costs()
    speedups, most = [], 0
    for trace in traces:
        position, seconds = 0, 0.0
        while position < trace.positions:
            context, accepted = trace.prompt_length + position, accepted_for(trace, position, 3, 4)
            seconds += (model.draft_seconds(3, context, accepted) + model.verify_seconds(4, context)
                        + model.overhead_seconds(4, context))
            position, most = position + accepted + 1, max(most, accepted)
        autoregressive = sum(model.verify_seconds(0, trace.prompt_length + p) for p in range(trace.positions))
        speedups.append(autoregressive / seconds)
    assert most > 0  # else the test could not tell an accepted-blind price
    replayed = replay_speedup(TraceTable(traces, model), 3, 4)["speedup"]
    assert replayed == pytest.approx(sum(speedups) / len(speedups), rel=1e-5)


def test_an_online_reset_mid_cycle_goes_on_with_that_cycle(recorded):
    """TorchRL's collector resets its environment at every batch, mid-cycle as often as not: the
    online depth environment goes on drafting the tree it has (drafting the cycle again would feed
    the drafter the same tokens twice), and the answer stays the target's own."""
    _, prompts, _, _, engine = recorded
    env = DepthOnlineEnv(engine, prompts[:1], TOP_K, MAX_DEPTH, verify=4, max_new_tokens=16)
    td, resets_mid_cycle = env.reset(), 0
    while True:
        td["action"] = torch.tensor([CONTINUE])
        td = env.step(td)["next"]
        if env.run.done:  # a reset would start the next answer
            break
        tree, ended = env.tree, bool(td["done"][0])
        td = env.reset()
        if not ended:
            assert env.tree is tree and torch.equal(td["observation"], env._observe())
            resets_mid_cycle += 1
    assert resets_mid_cycle > 0
    assert env.run.result.tokens == engine.generate_autoregressive(prompts[0], 16).tokens
    run = env.new_answer(engine, prompts[0], TOP_K, 16, 0.0)
    run.draft_root()
    with pytest.raises(LtdError, match="verify it before drafting the next"):
        run.draft_root()  # the run itself refuses what the environment used to do


def test_the_engines_tree_gives_the_environments_observations(recorded):
    traces, prompts, target, drafter, _ = recorded
    size_env = SizeReplayEnv(traces[:1], costs(), SIZES, batch=1, depth=2, seed=0)
    depth_env = DepthReplayEnv(traces[:1], costs(), batch=1, verify=2, seed=0)
    for env in (size_env, depth_env):
        env.reset()
        env.trace_index[0], env.position[0] = 0, 0  # the answer's first cycle
    size_observed, depth_observed = size_env._observe()[0], depth_env._observe()[0]
    # The engine's first cycle on the same prompt: prefill, then the drafter grows two levels.
    tokens = torch.tensor(prompts[0])
    target.reset(target.max_positions)  # as the engine does: the same cache layout, the same floats
    logits, features = target(tokens, feature_layers=drafter.feature_layers, last_only=True)
    drafter.reset(target.max_positions)
    tree = DraftTree(TOP_K)
    tree.add_root(*drafter.update(torch.cat((tokens, logits[-1].argmax()[None])), features, TOP_K))
    assert torch.equal(depth_observation(tree, target.length, MAX_DEPTH), depth_observed)
    tree.add_expansion(*drafter.expand(tree.frontier_tokens(), tree.frontier_parent_slots, tree.depth, TOP_K))
    assert torch.equal(size_observation(tree, target.length, MAX_DEPTH), size_observed)


def test_policy_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    policy = Policy(PolicySpec("size", TOP_K, MAX_DEPTH, (16, 8), tuple(SIZES)))
    policy.save(tmp_path / "size.pt")
    loaded = Policy.load(tmp_path / "size.pt", "size")
    observation = torch.randn(5, policy.spec.observation_width)
    assert loaded.spec == policy.spec and torch.equal(loaded(observation), policy(observation))
    with pytest.raises(LtdError, match="is a size policy, not a depth policy"):
        Policy.load(tmp_path / "size.pt", "depth")
    with pytest.raises(LtdError, match="no policy at .*missing.pt: make train trains one"):
        Policy.load(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_text("not a policy")
    with pytest.raises(LtdError, match="cannot read policy .*bad.pt: "):
        Policy.load(tmp_path / "bad.pt")


def test_ppo_learns_the_best_size_on_a_replay_problem(recorded, tmp_path):
    """Verifying is free here and the drafter is the target itself: the most tokens win. PPO must
    go from its initial choice to the best fixed V's speed-up."""
    traces = recorded[0]
    model = costs(verify_per_token=0.0)
    table = TraceTable(traces, model)
    spec = PolicySpec("size", TOP_K, MAX_DEPTH, (32,), tuple(SIZES))
    best_fixed = max(replay_speedup(table, MAX_DEPTH, v)["speedup"] for v in SIZES)
    trainer = PPOTrainer(lambda: SizeReplayEnv(traces, model, SIZES, batch=16, depth=MAX_DEPTH, seed=0), spec,
                         small_ppo(8192, lr=3e-3, gamma=0.0), tmp_path / "ppo.pt")
    before = replay_speedup(table, MAX_DEPTH, trainer.policy)["speedup"]
    rewards = []
    policy = trainer.train(log=lambda m: rewards.append(m["reward_per_step"]))
    after = replay_speedup(table, MAX_DEPTH, policy)["speedup"]
    assert before < best_fixed - 0.05
    assert after == pytest.approx(best_fixed)
    assert sum(rewards[-3:]) > sum(rewards[:3])


class Interrupt(Exception):
    pass


def stop_after_two(metrics):
    """A training's log hook that stops it in batch 3, after a checkpoint was written."""
    if metrics["batch"] == 3:
        raise Interrupt


def test_interrupted_training_resumes_as_if_never_stopped(recorded, tmp_path):
    traces = recorded[0]
    spec = PolicySpec("depth", TOP_K, MAX_DEPTH, (16,))
    make_env = lambda: DepthReplayEnv(traces, costs(), batch=8, verify=2, seed=0)
    settings = small_ppo(256 * 4)
    whole = PPOTrainer(make_env, spec, settings, tmp_path / "whole.pt").train()

    with pytest.raises(Interrupt):
        PPOTrainer(make_env, spec, settings, tmp_path / "cut.pt").train(log=stop_after_two)
    resumed = PPOTrainer(make_env, spec, settings, tmp_path / "cut.pt")
    assert resumed.batch == 2
    resumed = resumed.train()
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_learning_rate_warms_up_then_decays():
    factors = [learning_rate_factor(u, 100, 0.1) for u in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0
    assert factors[10] > factors[50] > factors[99] > 0


def test_ltd_schedule_and_its_components():
    s = LtdSettings(sizes=(0, 1), size_ppo=small_ppo(512), depth_ppo=small_ppo(1024), rounds=3, round_scale=0.5)
    assert [st.name for st in schedule(s, "full")] == ["stage1-size", "stage1-depth", "round1-size", "round2-depth",
                                                       "round3-size"]
    assert [st.settings.frames for st in schedule(s, "full")][2:] == [256, 512, 256]
    assert [st.name for st in schedule(s, "no_coadapt")] == ["stage1-size", "stage1-depth"]
    assert [st.name for st in schedule(s, "size_only")] == ["stage1-size"]
    assert [st.name for st in schedule(s, "depth_only")] == ["stage1-depth"]
    with pytest.raises(LtdError, match="unknown component 'both'"):
        schedule(s, "both")


def test_train_ltd_keeps_finished_stages_and_the_controller_runs_them_losslessly(recorded, tiny, tmp_path):
    traces, prompts, _, _, engine = recorded
    s = LtdSettings(sizes=tuple(SIZES), size_ppo=small_ppo(512), depth_ppo=small_ppo(512), rounds=1,
                    depth_verify=2, fixed_depth=2, size_hidden=(16,), depth_hidden=(16,))
    backend = ReplayBackend(traces[:2], costs(), tuple(SIZES), Reward(), size_envs=8, depth_envs=8)
    trained = train_ltd(backend, traces[2:], costs=costs(), settings=s, component="full", directory=tmp_path)
    assert [st["stage"] for st in trained.stages] == ["stage1-size", "stage1-depth", "round1-size"]
    assert all((tmp_path / f"{st['stage']}.pt").is_file() for st in trained.stages)
    logged = []
    again = train_ltd(backend, traces[2:], costs=costs(), settings=s, component="full", directory=tmp_path,
                      log=lambda stage, metrics: logged.append(stage))
    assert logged == [] and again.stages == trained.stages  # nothing trained twice
    # Each stage reports what its training gained over the policy it started from (keep-best: never
    # less), and the bar it had to clear: the best constant tree in the same replay.
    for st in trained.stages:
        assert st["trained"] >= st["start"] and isinstance(st["best_batch"], int)
        assert st["depth_sd"] >= 0 and st["verify_sd"] >= 0
    assert trained.stalled() == [st["stage"] for st in trained.stages if st["best_batch"] == 0]
    held = TraceTable(traces[2:], costs())
    grid = [replay_speedup(held, d, v)["speedup"] for d in range(1, MAX_DEPTH + 1) for v in SIZES if v > 0]
    assert trained.constant["speedup"] == max(grid)

    controller = LTD(depth_policy=str(trained.depth), size_policy=str(trained.size))
    assert (controller.top_k, controller.max_depth) == (TOP_K, MAX_DEPTH)
    for prompt in prompts:
        out = engine.generate(prompt, controller, 16)
        assert out.tokens == engine.generate_autoregressive(prompt, 16).tokens
        assert all(c.policy_s > 0 for c in out.cycles)  # the policies' time is counted
        assert {c.verify_size for c in out.cycles} <= set(SIZES)
    # On a bfloat16 target the policies read the same observations (in float32) and stay lossless.
    half, _ = tiny("llama").engine(lambda t: tiny("llama").self_drafter(("cpu", torch.bfloat16)),
                                   place=("cpu", torch.bfloat16))
    for prompt in prompts:
        assert half.generate(prompt, controller, 16).tokens == half.generate_autoregressive(prompt, 16).tokens
    # The controller decides as the replay environment's partner would on the same tree.
    table = TraceTable(traces[:1], costs())
    rows, context = table.rows(torch.tensor([0]), torch.tensor([0]))
    assert int(policy_depths(controller.depth_net, table.scores[rows], context)[0]) >= 1


def test_partner_best_constant_trains_beside_the_replays_best_constant_tree(recorded, tmp_path):
    traces = recorded[0]
    s = LtdSettings(sizes=tuple(SIZES), size_ppo=small_ppo(512), depth_ppo=small_ppo(512), rounds=0,
                    depth_verify=2, fixed_depth=MAX_DEPTH + 5, partner="best-constant", size_hidden=(16,),
                    depth_hidden=(16,))
    backend = ReplayBackend(traces[:2], costs(), tuple(SIZES), Reward(), size_envs=8, depth_envs=8)
    # fixed_depth is out of the traces' range, and unused: the partner is the replay's best constant tree.
    trained = train_ltd(backend, traces[2:], costs=costs(), settings=s, component="size_only", directory=tmp_path)
    c = trained.constant
    assert trained.partner == (round(c["depth"]), round(c["verify"]))
    # size_only: the size policy decides V, the partner every depth.
    assert trained.stages[-1]["depth"] == trained.partner[0] and trained.stages[-1]["depth_sd"] == 0
    s.partner = "fixed"
    with pytest.raises(LtdError, match=f"fixed_depth {MAX_DEPTH + 5} is outside the traces' 1..{MAX_DEPTH}"):
        train_ltd(backend, traces[2:], costs=costs(), settings=s, component="size_only", directory=tmp_path / "f")
    s.partner = "best"
    with pytest.raises(LtdError, match="ltd.partner must be one of fixed, best-constant, got 'best'"):
        s.validate()


def test_depth_rows_too_short_for_a_whole_cycle_are_refused(recorded, tmp_path):
    traces = recorded[0]
    s = LtdSettings(sizes=tuple(SIZES), size_ppo=small_ppo(512), depth_ppo=small_ppo(512), rounds=0,
                    depth_verify=2, fixed_depth=2, size_hidden=(16,), depth_hidden=(16,))
    backend = ReplayBackend(traces[:2], costs(), tuple(SIZES), Reward(), size_envs=8, depth_envs=128)
    with pytest.raises(LtdError, match="ltd.depth_envs 128 rows step 2 times per rollout of 256; cycles of up to 4 "
                                      "levels need at least 12"):
        train_ltd(backend, traces[2:], costs=costs(), settings=s, component="no_coadapt", directory=tmp_path)


def test_a_damaged_stage_or_checkpoint_is_trained_again(recorded, tmp_path, capsys):
    traces = recorded[0]
    s = LtdSettings(sizes=tuple(SIZES), size_ppo=small_ppo(512), depth_ppo=small_ppo(512), rounds=0,
                    depth_verify=2, fixed_depth=2, size_hidden=(16,), depth_hidden=(16,))
    backend = ReplayBackend(traces[:2], costs(), tuple(SIZES), Reward(), size_envs=8, depth_envs=8)
    train_ltd(backend, traces[2:], costs=costs(), settings=s, component="no_coadapt", directory=tmp_path)
    stage = tmp_path / "stage1-depth.pt"
    stage.write_bytes(stage.read_bytes()[:100])  # cut short
    # Its PPO checkpoint holds the finished training: the stage's policy is made again from it.
    trained = train_ltd(backend, traces[2:], costs=costs(), settings=s, component="no_coadapt", directory=tmp_path)
    assert [st["stage"] for st in trained.stages] == ["stage1-size", "stage1-depth"] and Policy.load(stage, "depth")
    assert f"note: {stage} is damaged (PytorchStreamReader failed reading zip archive" in capsys.readouterr().err

    checkpoint = tmp_path / "checkpoints" / "cut.pt"
    checkpoint.parent.mkdir(exist_ok=True)
    checkpoint.write_text("not a checkpoint")
    make_env = lambda: DepthReplayEnv(traces, costs(), batch=8, verify=2, seed=0)
    trainer = PPOTrainer(make_env, PolicySpec("depth", TOP_K, MAX_DEPTH, (16,)), small_ppo(512), checkpoint)
    err = capsys.readouterr().err
    assert trainer.batch == 0 and not checkpoint.exists()
    assert f"note: {checkpoint} is damaged (" in err and "); starting the stage over" in err


def test_ltd_controller_errors_are_one_line(tmp_path):
    with pytest.raises(LtdError, match="needs a depth policy, a size policy, or both"):
        LTD()
    with pytest.raises(LtdError, match="no policy at"):
        LTD(depth_policy=str(tmp_path / "none.pt"))
    Policy(PolicySpec("depth", TOP_K, MAX_DEPTH, (4,))).save(tmp_path / "depth.pt")
    Policy(PolicySpec("size", 5, MAX_DEPTH, (4,), (1, 2))).save(tmp_path / "size.pt")
    with pytest.raises(LtdError, match="trained on different trees"):
        LTD(depth_policy=str(tmp_path / "depth.pt"), size_policy=str(tmp_path / "size.pt"))


def test_bad_settings_are_one_line(recorded):
    traces = recorded[0]
    with pytest.raises(LtdError, match="depth 9 is outside 1..4"):
        SizeReplayEnv(traces, costs(), SIZES, depth=9)
    with pytest.raises(LtdError, match="unknown reward 'speed'"):
        DepthReplayEnv(traces, costs(), reward="speed")
    with pytest.raises(LtdError, match="reward tokens_saved prices a cycle's time in autoregressive steps"):
        SizeOnlineEnv(None, [[1, 2]], SIZES, top_k=TOP_K, max_depth=MAX_DEPTH, reward=Reward("tokens_saved", 1.2))
    with pytest.raises(LtdError, match="frames >= rollout"):
        small_ppo(100).validate()


def test_acting_on_a_prefix_gives_the_full_observations_action():
    torch.manual_seed(0)
    policy = Policy(PolicySpec("size", TOP_K, MAX_DEPTH, (16, 8), tuple(SIZES)))
    width = policy.spec.observation_width
    for used in (TOP_K, TOP_K + TOP_K * TOP_K, width - 2):
        for _ in range(20):
            observation = torch.randn(width)
            observation[used:-2] = 0
            assert policy.act_on_prefix(observation, used) == int(policy.act(observation[None])[0])


def test_frozen_policy_partners_in_every_environment(recorded):
    traces, prompts, _, _, engine = recorded
    torch.manual_seed(0)
    depth_policy = Policy(PolicySpec("depth", TOP_K, MAX_DEPTH, (8,))).eval()
    size_policy = Policy(PolicySpec("size", TOP_K, MAX_DEPTH, (8,), tuple(SIZES))).eval()
    for env in (SizeReplayEnv(traces, costs(), SIZES, batch=4, depth=depth_policy),
                DepthReplayEnv(traces, costs(), batch=4, verify=size_policy),
                SizeOnlineEnv(engine, prompts, SIZES, TOP_K, MAX_DEPTH, depth=depth_policy, max_new_tokens=12),
                DepthOnlineEnv(engine, prompts, TOP_K, MAX_DEPTH, verify=size_policy, max_new_tokens=12)):
        check_env_specs(env)
        rollout = env.rollout(20, break_when_any_done=False)
        ended = rollout["next", "cycle_end"]
        assert ended.any() and set(rollout["next", "cycle_verify"][ended].tolist()) <= set(SIZES)
