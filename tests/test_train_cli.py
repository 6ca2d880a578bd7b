"""make train end to end on a tiny model: every step runs through the command a user types, the
tables are printed, the store is appended, and a second run reuses everything already done."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltd.traces.trace import Trace

PPO = ["frames=128", "rollout=64", "minibatch=32", "epochs=1", "critic_hidden=[8]", "validate_every=1"]


def tiny_model(tiny_model_dir, tmp_path):
    """The tiny model and its untrained head, as every job here names them."""
    return ["model=smollm2-135m", "model.name=tiny", f"model.source={tiny_model_dir}", "model.max_context=256",
            "drafter.draft_vocab_size=64", f"drafter.root={tmp_path}"]


def train(tiny_model_dir, tmp_path, *overrides, methods="[autoregressive,eagle3_default,best-constant]", run="run",
          logger="none"):
    args = [
        sys.executable, "-m", "ltd.cli.train", *tiny_model(tiny_model_dir, tmp_path), f"logger={logger}",
        f"results={tmp_path / 'results'}", "threads=1", "profile.contexts=[16,64]", "profile.verify_sizes=[0,1,4]",
        "profile.repeats=1", "record.tasks=[mt_bench]", "record.questions=3", "record.validation=1",
        "record.max_new_tokens=10", "record.top_k=3", "record.max_depth=3", "ltd.sizes=[0,1,2,4]", "ltd.fixed_depth=2",
        "ltd.depth_verify=2", "ltd.size_hidden=[8]", "ltd.depth_hidden=[8]", "ltd.size_envs=4", "ltd.depth_envs=8",
        "ltd.rounds=1", *(f"ltd.size_ppo.{o}" for o in PPO), *(f"ltd.depth_ppo.{o}" for o in PPO),
        "evaluate.tasks=[mt_bench,gsm8k]", "evaluate.questions=1", "evaluate.max_new_tokens=8",
        *([f"evaluate.methods={methods}"] if methods else []), f"hydra.run.dir={tmp_path / run}", *overrides]
    return subprocess.run(args, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})


def test_make_train_runs_every_step_then_reuses_them(tiny_model_dir, tmp_path):
    first = train(tiny_model_dir, tmp_path, logger="wandb")
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    assert "cost model: measured" in out and "traces: " in out and "cost model against the engine" in out
    assert "stage1-size" in out and "round1-size" in out
    assert "mt_bench" in out and "gsm8k" in out and "mean speed-up" in out
    policies = tmp_path / "results" / "policies" / "tiny-eagle3-throughput-full"
    assert (policies / "depth.pt").is_file() and (policies / "size.pt").is_file()
    rows = [json.loads(line) for line in (tmp_path / "results" / "store.jsonl").read_text().splitlines()]
    assert {(r["task"], r["method"]) for r in rows} == {(t, m) for t in ("mt_bench", "gsm8k") for m in (
        "autoregressive", "eagle3_default", "best-constant", "ltd")}
    assert all(r["lossless"] for r in rows) and {r["reward"] for r in rows} == {"throughput"}
    # one question per task: the store keeps the interval's columns, empty (NaN) where nothing resamples
    assert all({"speed-up low", "speed-up high", "tok/s low", "other load", "steal"} <= set(r) for r in rows)
    ltd_rows = [r for r in rows if r["method"] == "ltd"]
    assert {r["best static"] for r in ltd_rows} == {"best-constant"} and all("ratio to best static" in r for r in ltd_rows)
    assert "test replay on 2 answers held out from training and validation: ltd " in out
    assert "ltd / best-constant (the best static tree here): " in out
    best = (policies / "best-constant.yaml").read_text()
    assert best.startswith("# the best constant tree of the replay") and "kind: static" in best
    assert (tmp_path / "run" / "train.md").is_file()

    lineage_of_policies_and_evaluation(tiny_model_dir, tmp_path, policies)

    bench = subprocess.run([sys.executable, "-m", "ltd.cli.bench_env", *tiny_model(tiny_model_dir, tmp_path),
                            "traces=mt_bench", f"results={tmp_path / 'results'}", "ltd.sizes=[0,1,2,4]",
                            "ltd.depth_verify=2", "batches=[1,4]", "steps=5", f"hydra.run.dir={tmp_path / 'bench'}"],
                           capture_output=True, text=True)
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert bench.stdout.count("size") >= 2 and bench.stdout.count("depth") >= 2 and "steps/s" in bench.stdout

    # what make ablation runs: LTD retrained with one change, against autoregressive decoding alone
    again = train(tiny_model_dir, tmp_path, "reward=acceptance", "component=size_only", "+experiment=ablation",
                  methods=None)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "measured before" in again.stdout and "stage1-depth" not in again.stdout
    rows = [json.loads(line) for line in (tmp_path / "results" / "store.jsonl").read_text().splitlines()]
    ablation = [r for r in rows if r["experiment"] == "ablation"]
    assert {(r["reward"], r["component"], r["method"]) for r in ablation} == {
        ("acceptance", "size_only", "autoregressive"), ("acceptance", "size_only", "ltd")}


def test_another_drafter_or_setting_is_never_served_what_was_made_before(tiny_model_dir, tmp_path):
    """The profile, the traces and the policies are keyed by the drafter's weights and the settings
    that shape them: a run with another drafter or another answer length makes them again, and the
    policies of one drafter are refused to another."""
    assert train(tiny_model_dir, tmp_path, methods="[autoregressive]").returncode == 0
    traces = lambda: sorted(p.name for p in (tmp_path / "results" / "traces").iterdir())
    first = traces()

    # another untrained head: another drafter
    other_drafter = train(tiny_model_dir, tmp_path, "drafter.seed=1", methods="[autoregressive]")
    assert other_drafter.returncode == 0, other_drafter.stderr[-3000:]
    assert "cost model: measured" in other_drafter.stdout and len(traces()) == 2
    assert "holds ltd policies made under other settings (" in other_drafter.stderr
    assert "drafter.seed 0 -> 1" in other_drafter.stderr and "stage1-size" in other_drafter.stdout

    longer = train(tiny_model_dir, tmp_path, "drafter.seed=1", "record.max_new_tokens=12", methods="[autoregressive]")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "measured before" in longer.stdout and len(traces()) == 3 and first[0] in traces()
    assert "holds ltd policies made under other settings (" in longer.stderr and "stage1-size" in longer.stdout

    policies = tmp_path / "results" / "policies" / "tiny-eagle3-throughput-full"
    decode = subprocess.run(
        [sys.executable, "-m", "ltd.cli.decode", *tiny_model(tiny_model_dir, tmp_path), "controller=ltd",
         f"controller.depth_policy={policies / 'depth.pt'}", f"controller.size_policy={policies / 'size.pt'}",
         "task.name=tiny", f"task.path={Path(__file__).parents[1] / 'data/bench/mt_bench/question.jsonl'}",
         "questions=1", "max_new_tokens=4", f"hydra.run.dir={tmp_path / 'decode'}"], capture_output=True, text=True)
    assert decode.returncode == 2 and decode.stderr.strip().splitlines()[-1] == (
        f"error: {policies / 'depth.pt'} was trained for another drafter (seed 1 -> 0): train it again for this one")


def test_bad_choices_are_one_line(tiny_model_dir, tmp_path):
    result = train(tiny_model_dir, tmp_path, "component=both")
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: unknown component 'both'; choose from: full, no_coadapt, size_only, depth_only")
    result = train(tiny_model_dir, tmp_path, "reward=speed")
    assert result.returncode == 2 and "unknown reward 'speed'" in result.stderr
    result = train(tiny_model_dir, tmp_path, "reward=tokens_saved", "reward.rate=-1")
    assert result.returncode == 2 and result.stderr.strip() == "error: reward rate must be a number > 0 or null, got -1.0"


@pytest.mark.parametrize("temperature, reward, name", [(0, "throughput", "throughput-size_only"),
                                                        (1, "throughput", "throughput-size_only-t1"),
                                                        (0, "tokens_saved", "tokens_saved-size_only")])
def test_online_backend_trains_in_the_real_engine(tiny_model_dir, tmp_path, temperature, reward, name):
    """Greedy, or sampling as it will be evaluated (the policies then named for their temperature);
    tokens_saved pricing the wall clock's cycles in the cost model's steps, at the rate of the best
    constant tree."""
    result = train(tiny_model_dir, tmp_path, "env=online", "env.task=mt_bench", "env.questions=2",
                   "env.max_new_tokens=12", "component=size_only", "evaluate.tasks=[mt_bench]",
                   f"temperature={temperature}", f"reward={reward}")
    assert result.returncode == 0, result.stderr[-3000:]
    if reward == "tokens_saved":
        assert "reward tokens_saved: rate " in result.stdout and "the best constant tree's replayed speed-up" in result.stdout
    training = json.loads((tmp_path / "results" / "policies" / f"tiny-eagle3-{name}" / "training.json").read_text())
    assert training["backend"] == "OnlineBackend" and [s["stage"] for s in training["stages"]] == ["stage1-size"]
    rows = [json.loads(line) for line in (tmp_path / "results" / "store.jsonl").read_text().splitlines()]
    assert {r["temperature"] for r in rows} == {temperature}
    assert {r["lossless"] for r in rows} == ({True} if temperature == 0 else {None})


def test_replay_cannot_train_at_a_temperature(tiny_model_dir, tmp_path):
    result = train(tiny_model_dir, tmp_path, "temperature=1")
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: the replay environments replay greedy traces: temperature > 0 trains online (env=online)")


def test_make_resps_trains_from_the_profiles_bins_and_the_run_decodes_with_it(tiny_model_dir, tmp_path):
    tiny = tiny_model(tiny_model_dir, tmp_path)
    results = f"results={tmp_path / 'results'}"
    resps = [sys.executable, "-m", "ltd.cli.train_resps", *tiny, results, "threads=1", "tasks=[mt_bench]",
             "questions=2", "validation=1", "top_k=3", "resps.hidden=[8]", "resps.persistence=2",
             "resps.max_new_tokens=12", "resps.envs=4", "resps.ppo.frames=32", "resps.ppo.rollout=16",
             "resps.ppo.minibatch=8", "resps.ppo.critic_hidden=[8]", "logger=none", f"hydra.run.dir={tmp_path / 'resps'}"]
    missing = subprocess.run(resps, capture_output=True, text=True)
    assert missing.returncode == 2 and "make profile measures one" in missing.stderr
    profile = subprocess.run([sys.executable, "-m", "ltd.cli.profile", *tiny, results, "threads=1", "top_k=3",
                              "max_depth=4", "contexts=[16,64]", "verify_sizes=[0,1,2,4,8]", "repeats=1",
                              f"hydra.run.dir={tmp_path / 'profile'}"], capture_output=True, text=True)
    assert profile.returncode == 0, profile.stderr[-3000:]
    trained = subprocess.run(resps, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "tree shapes" in trained.stdout and "most likely shapes" in trained.stdout
    assert "the best constant shape" in trained.stdout and "held N cycles: N 1:" in trained.stdout
    # The answers recorded once per top-k of the grid, with the target's states.
    recorded = {json.loads((d / "key.json").read_text())["top_k"]: Trace.load(next(d.glob("*.safetensors")))
                for d in (tmp_path / "results" / "traces").glob("tiny-eagle3-mt_bench-*")}
    assert sorted(recorded) == [2, 3] and all(t.states is not None for t in recorded.values())
    policy = tmp_path / "results" / "policies" / "tiny-eagle3-resps" / "policy.pt"
    assert policy.is_file()
    run = subprocess.run([sys.executable, "-m", "ltd.cli.decode", *tiny, "controller=resps",
                          f"controller.policy={policy}", "tasks=[qa]", "max_new_tokens=12", "threads=1",
                          results, f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resps" in run.stdout and "lossless (greedy outputs identical): True" in run.stdout
    # make train evaluates Re-SpS beside LTD once it is trained, held each of evaluate.resps cycles
    trained_ltd = train(tiny_model_dir, tmp_path, "evaluate.resps=[1,30]", methods="[autoregressive]")
    assert trained_ltd.returncode == 0, trained_ltd.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "results" / "store.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"autoregressive", "resps", "resps-p1", "ltd"}, trained_ltd.stderr[-2000:]
    assert all(r["lossless"] for r in rows)


def lineage_of_policies_and_evaluation(tiny_model_dir, tmp_path, policies):
    """W&B offline, as make train then make eval run it: train logs the cost model, the traces and
    the policies as artifacts (the policies' metadata naming the other two); eval names the policies'
    version among its inputs and logs its rows made from them. So eval <- policies <- traces, profile."""
    train_lineage = json.loads((tmp_path / "run" / "lineage.json").read_text())
    made = train_lineage["outputs"]
    [policy_ref] = [ref for ref in made if ref.startswith("ltd-policies-tiny-eagle3-throughput-full:k")]
    profile_refs = [ref for ref in made if ref.startswith("cost-model-")]
    trace_refs = [ref for ref in made if ref.startswith("traces-")]
    assert profile_refs and trace_refs and sorted(made[policy_ref]["inputs"]) == sorted(profile_refs + trace_refs)
    [train_log] = (tmp_path / "run").glob("wandb/offline-run-*/run-*.wandb")
    logged = train_log.read_bytes()  # the record log: artifact names, aliases and metadata as plain UTF-8
    for ref in (policy_ref, *profile_refs, *trace_refs):
        name, alias = ref.split(":")
        assert name.encode() in logged and alias.encode() in logged, ref

    evaluation = subprocess.run(
        [sys.executable, "-m", "ltd.cli.eval", *tiny_model(tiny_model_dir, tmp_path), "task=mt_bench", "questions=1",
         "max_new_tokens=6", "warmup_tokens=2", "threads=1", "methods=[autoregressive,ltd]", "logger=wandb",
         f"results={tmp_path / 'results'}", f"hydra.run.dir={tmp_path / 'eval'}"],
        capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    eval_lineage = json.loads((tmp_path / "eval" / "lineage.json").read_text())
    assert policy_ref in eval_lineage["inputs"] and eval_lineage["inputs"][policy_ref] == str(policies)
    [(rows_ref, rows)] = eval_lineage["outputs"].items()
    assert rows_ref.startswith("evaluation-eval:k") and policy_ref in rows["inputs"]
    [eval_log] = (tmp_path / "eval").glob("wandb/offline-run-*/run-*.wandb")
    assert policy_ref.encode() in eval_log.read_bytes()  # the run's config: inputs
