"""make dashboard: the W&B workspace and report build offline, their specs are written, and every
panel plots keys the jobs really log, gathered by running each job's logging code on fakes."""
import ast
import importlib
import inspect
import json
import re
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from ltd.baselines import tree_search
from ltd.cli.dashboard import main
from ltd.config.files import CONFIG_PATH
from ltd.drafter import ppow
from ltd.eval.runner import QUESTION_COLUMNS, summarise
from ltd.jobs import dashboard
from ltd.jobs import train as train_job
from ltd.jobs import ppow as ppow_job
from ltd.jobs import resps as resps_job
from ltd.rl.ppo import PPOTrainer, batch_metrics
from ltd.rl.settings import LtdSettings, PPOSettings

evaluate_task = importlib.import_module("ltd.jobs.eval")


class Tracker:
    """Takes what a job logs and summarises: its keys by job type."""

    def __init__(self):
        self.keys = set()

    def log(self, values: dict, step=None) -> None:
        self.keys |= set(values)

    def step_axis(self, prefix: str, step_key: str) -> None:
        assert f"{prefix}/{step_key}" not in self.keys  # defined before the first row

    summarise = log

    def table(self, key, frame) -> None:
        pass

    def finish(self) -> None:
        pass

    def made(self, path, inputs=(), files=None, reference_only=False) -> None:
        pass  # artifacts: lineage, not panels


class AnyTerms(torch.nn.Module):
    """A stand-in for ClipPPOLoss: whichever terms PPOTrainer._update reads, each differentiable."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, minibatch):
        terms = type("Terms", (dict,), {"__missing__": lambda terms, key: self.weight * 1.0})
        return terms()


def ppo_row() -> dict:
    """One batch's row as PPOTrainer.train logs it: batch_metrics of a fake batch, given the losses
    PPOTrainer._update returns (run with everything around it faked), plus what train adds."""
    loss = AnyTerms()
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.1)
    trainer = SimpleNamespace(settings=SimpleNamespace(epochs=1, rollout=1, minibatch=1, max_grad_norm=1.0),
                              advantage=lambda data: None, loss=loss, optimizer=optimizer,
                              scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda u: 1.0))
    buffer = SimpleNamespace(empty=lambda: None, extend=lambda data: None, sample=lambda: None)
    losses = PPOTrainer._update(trainer, torch.zeros(1), buffer)
    ended = torch.tensor([[True, False, True]])
    batch = {"next": {"reward": torch.rand(1, 3), "cycle_end": ended, "cycle_accepted": torch.tensor([[2, 0, 3]]),
                      "cycle_depth": torch.tensor([[4, 0, 5]]), "cycle_verify": torch.tensor([[8, 0, 12]])}}
    return dict(batch=1, frames=3, **batch_metrics(batch, losses), lr=1e-3, validation=1.5)  # PPOTrainer.train's


def train_keys(monkeypatch) -> set[str]:
    """make train: train_job's logging of every stage of the full schedule (11 rounds), and its summary."""
    def train_ltd(environments, held_out, costs, settings, component, directory, log, progress):
        from ltd.rl.ltd.stages import schedule
        for stage in schedule(settings, component):
            log(stage.name, ppo_row())

    monkeypatch.setattr(train_job, "train_ltd", train_ltd)
    tracker, ppo = Tracker(), PPOSettings(frames=2048)
    job = SimpleNamespace(settings=LtdSettings((4, 8), ppo, ppo, rounds=11), cfg=SimpleNamespace(component="full"))
    train_job.train_policies(job, None, held_out=[], costs=None, directory=None, tracker=tracker)
    assert 'tracker.summarise({f"{row[\'method\']}/speedup"' in inspect.getsource(train_job.report)
    return tracker.keys | {f"{m}/speedup" for m in dashboard.methods()}


def eval_keys(monkeypatch) -> set[str]:
    """make eval: evaluate_tracked on one question of every method the dashboard names."""
    names = dashboard.methods()
    questions = pd.DataFrame([dict(zip(QUESTION_COLUMNS, (m, "q1", "c", 0, 0, 1, 10, 1.0, 10.0, 3, 2.5, 0.2, 0.7, 0.0,
                                                          True, 0.0, 0.0, 0.5))) for m in names])

    def fake_evaluate_task(engine, target, **named):
        summary = dict(named["run"], methods=named["records"].summary_rows())
        named["on_question"](0, questions.to_dict("records"), summary)
        return summary

    monkeypatch.setattr(evaluate_task, "evaluate_task", fake_evaluate_task)
    records = SimpleNamespace(question_ids=[], questions=1, summary_rows=lambda: summarise(questions, names),
                              frames=lambda: (None, questions), directory=Path("run"))
    tracker = Tracker()
    evaluate_task.evaluate_tracked(None, None, methods=[SimpleNamespace(name=m) for m in names], questions=[None],
                                   settings=None, records=records, run=dict(task="t", questions_planned=1),
                                   tracker=tracker, task="t")
    return tracker.keys


def dict_keywords(function) -> set[str]:
    """The keywords of the dict(...) calls in `function`: the names of the numbers a PPOW step returns."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return {k.arg for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "dict"
            for k in node.keywords if k.arg}


def ppow_keys() -> set[str]:
    """make drafter-rl: each variant's step rows under `<variant>/`, and the heads' table summarised."""
    row = dict_keywords(ppow.draw_windows) | dict_keywords(ppow.ppow_loss) | {"step", "seconds"}  # optimise adds these
    assert {"reward", "accepted", "kl"} <= row
    assert 'tracker.log({f"{settings.name}/{k}": v' in inspect.getsource(ppow_job.train_variant)
    heads = [ppow_job.SUPERVISED] + dashboard.ppow_variants()
    results = pd.DataFrame([dict(task=t, method=h, tau=2.0, lossless=True, **{"speed-up": 1.5})
                            for h in heads for t in ("gsm8k", "qa")])
    assert "tracker.summarise(head_metrics(rows))" in inspect.getsource(ppow_job.run)
    summary = set(ppow_job.head_metrics(ppow_job.table(results)))
    return {f"{v}/{k}" for v in dashboard.ppow_variants() for k in row} | summary


def resps_keys(monkeypatch, tmp_path) -> set[str]:
    """make resps: resps_job.ppo's logging of a batch, and of the persistence ablation."""
    monkeypatch.setattr(resps_job, "best_constant_shape", lambda held: (0, dict(speedup=1.0, tau=2.0)))
    monkeypatch.setattr(resps_job, "resps_replay_speedup", lambda *a: dict(speedup=1.2, tau=2.0, shapes=1))
    monkeypatch.setattr(resps_job, "train_resps", lambda make_env, spec, **named: named["log"](ppo_row()))
    tracker = Tracker()
    settings = SimpleNamespace(ppo=SimpleNamespace(frames=1), persistence=1)
    resps_job.ppo(None, None, settings=settings, directory=tmp_path, tracker=tracker,
                  held=SimpleNamespace(grid=["a shape"]))
    return tracker.keys


def sweep_keys(monkeypatch) -> set[str]:
    """make sweep-tree: tree_search.search's logging of a trial and of the best one."""
    tree = SimpleNamespace(depth=3, top_k=2, verify=4)
    monkeypatch.setattr(tree_search, "run_study", lambda study, trials, **named: named["on_trial"](
        0, tree, 1.5, dict(tau=2.0, questions=10)))
    monkeypatch.setattr(tree_search, "finished", lambda study: [1])
    monkeypatch.setattr(tree_search, "counted", lambda study: [1])
    monkeypatch.setattr(tree_search, "best_tree", lambda study: tree)
    monkeypatch.setattr(tree_search, "best_trial", lambda study: SimpleNamespace(value=1.5))
    tracker = Tracker()
    tree_search.search(None, 1, mode="tpe", space=None, measure=None, tracker=tracker, description="sweep")
    return tracker.keys


@pytest.fixture
def logged(monkeypatch, tmp_path) -> dict[str, set[str]]:
    """Every key each job type logs or summarises."""
    return {"train": train_keys(monkeypatch), "eval": eval_keys(monkeypatch), "drafter-rl": ppow_keys(),
            "resps": resps_keys(monkeypatch, tmp_path), "sweep": sweep_keys(monkeypatch)}


def test_every_panel_plots_keys_its_job_logs(logged):
    for part in dashboard.parts():
        others = set().union(*(keys for job, keys in logged.items() if job != part.job_type))
        for panel in part.panels:
            keys = getattr(panel, "metrics", None) or getattr(panel, "y", None) or []
            assert set(keys) <= logged[part.job_type], (part.name, panel.title)
            regex = getattr(panel, "metric_regex", None)
            assert keys or regex, (part.name, panel.title)
            if regex:
                assert any(re.search(regex, key) for key in logged[part.job_type]), (part.name, panel.title)
                assert not any(re.search(regex, key) for key in others), (part.name, panel.title)
    # Every stage's curve, not just some: each of the PPO panels' keys under each stage name logged.
    stage_keys = {key for key in logged["train"] if "/" in key and not key.endswith("/speedup")}
    stages = {key.split("/")[0] for key in stage_keys}
    assert stages >= {"stage1-size", "stage1-depth", "round1-size", "round10-depth"}
    for key in ("tau", "depth_chosen", "verify_chosen", "validation", "reward_per_cycle", *dashboard.PPO_LOSSES):
        matched = {k for k in stage_keys if re.search(dashboard.stage_regex(key), k)}
        assert matched == {f"{stage}/{key}" for stage in stages}, key


def test_the_dashboard_names_every_method_and_variant_the_jobs_run():
    conf = lambda name: OmegaConf.load(f"{CONFIG_PATH}/{name}.yaml")
    run = set(conf("eval").methods) | set(conf("train").evaluate.methods) | set(conf("decode").methods)
    resps = {"resps"} | {f"resps-p{n}" for n in resps_job.PERSISTENCE_ABLATION}
    assert run | resps | {"ltd"} <= set(dashboard.methods())
    assert set(conf("train_ppow").variants) <= set(dashboard.ppow_variants())


def test_offline_it_writes_both_specs_and_says_how_to_publish(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    main([f"out={tmp_path / 'dash'}", "project=ltd-test"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "wrote" in out[0] and 'WANDB_MODE=online make dashboard ARGS="entity=' in out[0]
    workspace, report = (json.loads((tmp_path / "dash" / f"{name}.json").read_text())
                         for name in ("workspace", "report"))
    assert (workspace["entity"], workspace["project"]) == (dashboard.ENTITY_PLACEHOLDER, "ltd-test")
    assert report["project"] == {"name": "ltd-test", "entityName": dashboard.ENTITY_PLACEHOLDER}
    sections = workspace["spec"]["section"]["panelBankConfig"]["sections"]
    assert [s["name"] for s in sections] == [p.name for p in dashboard.parts()]
    expected = sorted(json.dumps(getattr(panel, "metric_regex", None) or getattr(panel, "metrics", None) or panel.y)
                      for part in dashboard.parts() for panel in part.panels)
    assert plotted(workspace) == plotted(report) == expected


def plotted(spec) -> list[str]:
    """What each panel of a written spec plots: its metric regex, else its metrics."""
    if isinstance(spec, list):
        return sorted(x for item in spec for x in plotted(item))
    if not isinstance(spec, dict):
        return []
    if "viewType" in spec:
        return [json.dumps(spec["config"].get("metricRegex") or spec["config"]["metrics"])]
    return plotted(list(spec.values()))


def test_publishing_needs_an_entity_and_prints_the_urls(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "not-a-key")  # never sent: publish is faked below
    with pytest.raises(SystemExit) as exit:
        main([f"out={tmp_path / 'dash'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and len(err) == 1 and "entity=<your entity>" in err[0]
    assert not (tmp_path / "dash").exists()
    monkeypatch.setattr(dashboard, "publish", lambda views: {name: f"https://wandb.test/{name}" for name in views})
    main([f"out={tmp_path / 'dash'}", "entity=me"])
    assert capsys.readouterr().out.split() == ["workspace:", "https://wandb.test/workspace", "report:",
                                               "https://wandb.test/report"]
    assert json.loads((tmp_path / "dash" / "workspace.json").read_text())["entity"] == "me"


@pytest.mark.parametrize("argv", [["colour=blue"], ["entity"], ["project="]])
def test_a_bad_argument_is_one_line_and_exit_2(argv, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(SystemExit) as exit:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")
