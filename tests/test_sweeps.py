"""Sweeps (sweeps/*.yaml): every file composes for its job; a sweep runs its jobs (through submitit's
local executor too), appends their rows to the store, skips finished jobs when run again, reports a
failing job in one line without stopping the others; Table 1 marks the cells it lacks."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from test_train_cli import tiny_model

from ltd.config.files import CONFIG_PATH
from ltd.config.schema import check_config
from ltd.core.errors import LtdError
from ltd.eval.table1 import MISSING, markdown, sweep_cells, table1
from ltd.jobs.sweeps import SWEEPS, sweep_job, swept_values

SWEEP = """defaults:
  - eval
  - override logger: none
  - override hydra: sweep
  - _self_
experiment: test_sweep
questions: 1
max_new_tokens: 4
methods: [autoregressive, eagle3_default]
hydra:
  mode: MULTIRUN
  sweeper:
    params:
      task: mt_bench,gsm8k
"""


@pytest.mark.parametrize("name", sorted(p.stem for p in SWEEPS.glob("*.yaml")))
def test_every_job_of_every_sweep_composes_and_passes_its_schema(name):
    import itertools

    swept = swept_values(name)
    jobs = list(itertools.product(*([f"{key}={value}" for value in values] for key, values in swept.items())))
    assert len(jobs) >= 2
    with initialize_config_dir(config_dir=str(SWEEPS), version_base=None):
        for overrides in jobs:
            cfg = compose(name, overrides=[f"hydra.searchpath=[file://{CONFIG_PATH}]", *overrides])
            check_config(cfg, sweep_job(name))
            assert cfg.experiment == name


def test_the_paper_table_sweeps_the_papers_five_targets_on_four_tasks():
    swept = swept_values("paper_table1")
    assert len(swept["model"]) * len(swept["task"]) == 20


def test_the_papers_three_sweeps_chain_and_fill_every_cell_of_table1_once_they_ran(tmp_path):
    """paper_tree_search tunes, paper_train trains and paper_table1 evaluates the same five targets;
    the trees and policies the first two write are the ones the third's `tuned` and `ltd` read; and
    with every row of paper_table1 in the store, make table1's table has no missing cell."""
    from omegaconf import OmegaConf

    from ltd.eval.store import append_rows
    from ltd.jobs.sweeps import write_table1

    models = swept_values("paper_table1")["model"]
    assert swept_values("paper_tree_search")["model"] == models == swept_values("paper_train")["model"]
    with initialize_config_dir(config_dir=str(SWEEPS), version_base=None):
        searchpath = f"hydra.searchpath=[file://{CONFIG_PATH}]"
        search, train = compose("paper_tree_search", [searchpath]), compose("paper_train", [searchpath])
    assert search.write_best and search.mode == "grid" and search.trees.top_k == 10
    assert train.tune is False and f"{train.reward.kind}-{train.component}" == "throughput-full"  # conf/controller/ltd.yaml's
    evaluation = OmegaConf.load(SWEEPS / "paper_table1.yaml")
    assert {"tuned", "ltd"} <= set(evaluation.methods)
    append_rows(tmp_path / "store.jsonl", [
        dict(time="2026-12-05", experiment="paper_table1", model=model, drafter="eagle3", task=task, method=method,
             **{"speed-up": 2.0, "tau": 3.0})
        for model in models for task in swept_values("paper_table1")["task"] for method in evaluation.methods])
    table, _ = write_table1("paper_table1", str(tmp_path))
    assert len(table) == 5 * 3 and not (table == MISSING).any().any()


def run_sweep(tiny_model_dir, tmp_path, *overrides):
    (tmp_path / "sweeps").mkdir(exist_ok=True)
    (tmp_path / "sweeps" / "test_sweep.yaml").write_text(SWEEP)
    command = [sys.executable, "-m", "ltd.cli.eval", "--config-dir", str(tmp_path / "sweeps"), "--config-name",
               "test_sweep", *tiny_model(tiny_model_dir, tmp_path), f"results={tmp_path / 'results'}", "threads=1",
               f"hydra.sweep.dir={tmp_path / 'multirun'}", *overrides]
    return subprocess.run(command, capture_output=True, text=True)


def stored(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "results" / "store.jsonl").read_text().splitlines()]


def test_a_sweep_runs_through_submitit_and_skips_its_finished_jobs_when_run_again(tiny_model_dir, tmp_path):
    result = run_sweep(tiny_model_dir, tmp_path, "hydra/launcher=local", "hydra.launcher.timeout_min=10")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = stored(tmp_path)
    assert sorted((r["task"], r["method"]) for r in rows) == [
        ("gsm8k", "autoregressive"), ("gsm8k", "eagle3_default"), ("mt_bench", "autoregressive"),
        ("mt_bench", "eagle3_default")]
    assert all(r["experiment"] == "test_sweep" and "task=" in r["overrides"] and r["lossless"] for r in rows)
    assert len({r["run_dir"] for r in rows}) == 2
    again = run_sweep(tiny_model_dir, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished already") == 2 and len(stored(tmp_path)) == 4


def test_a_failing_job_is_one_line_and_the_others_run(tiny_model_dir, tmp_path):
    result = run_sweep(tiny_model_dir, tmp_path, "model.device=cpu,cuda", "task=qa")
    assert result.returncode == 2
    failed = [line for line in result.stderr.splitlines() if "error:" in line]
    # The line as the job printed it, and again in the sweep's report.
    assert len(failed) == 2 and all("model.device=cuda" in line and "model tiny asks for a CUDA GPU (cuda) and there is no CUDA GPU here" in line
                                   for line in failed)
    assert failed[1].strip().startswith("1 job (task=qa model=smollm2-135m")
    assert "Traceback" not in result.stderr
    assert "2 jobs" in result.stdout and "1 failed" in result.stdout
    assert {r["task"] for r in stored(tmp_path)} == {"qa"}
    [error] = list((tmp_path / "multirun").glob("*/error.txt"))
    assert "model.device=cuda" in error.parent.name


def test_table1_marks_what_a_sweep_lacks():
    rows = pd.DataFrame([
        dict(time="1", model="m", task="a", method="ltd", **{"speed-up": 2.0, "tau": 3.0}),
        dict(time="2", model="m", task="a", method="ltd", **{"speed-up": 2.5, "tau": 3.5}),  # the latest counts
        dict(time="1", model="m", task="b", method="ltd", **{"speed-up": 1.5, "tau": 2.0}),
        dict(time="1", model="m", task="a", method="tuned", **{"speed-up": 1.2, "tau": 2.0}),
    ])
    table = sweep_cells(table1(rows, models=["m", "n"], tasks=["a", "b"], methods=["tuned", "ltd"]))
    by = {(r.model, r.method): r for r in table.itertuples(index=False)}
    assert by[("m", "ltd")].a == "2.50x (tau 3.50)" and by[("m", "ltd")].mean == "2.00x"
    assert by[("m", "tuned")].b == MISSING and by[("m", "tuned")].mean == MISSING
    assert (table[table.model == "n"][["a", "b", "mean"]] == MISSING).all().all()
    assert markdown(table).splitlines()[0] == "| model | method | a | b | mean |"


def test_sweep_and_table_commands_fail_in_one_line(tmp_path):
    for command in (["ltd.cli.sweep", "nonesuch"], ["ltd.cli.table1", "sweep=nonesuch"],
                    ["ltd.cli.table1", "sweep=cpu_table1", f"results={tmp_path}"], ["ltd.cli.table1", "colour=red"]):
        result = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("error: ")
    with pytest.raises(LtdError, match="unknown sweep 'x'; choose from: ablation_components"):
        sweep_job("x")


def test_two_workers_share_one_optuna_study_and_measure_no_shape_twice(tiny_model_dir, tmp_path):
    import optuna

    from ltd.baselines.tree_search import finished, measured_shape

    url = f"sqlite:///{tmp_path / 'studies' / 'shared.db'}"  # its directory made by the first worker
    command = [sys.executable, "-m", "ltd.cli.sweep_tree", *tiny_model(tiny_model_dir, tmp_path), "tasks=[qa]",
               "questions=1", "max_new_tokens=4", "warmup_tokens=2", "trials=6", "threads=1", "logger=none",
               "write_best=false", "study=shared", f"storage={url}"]
    workers = [subprocess.Popen([*command, f"hydra.run.dir={tmp_path / f'run{i}'}"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(2)]
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="shared", storage=url)
    shapes = [measured_shape(t) for t in finished(study)]
    assert len(shapes) == 6 and len(set(shapes)) == 6
    # The study is stamped with its settings: another search under the same name is refused.
    other = subprocess.run([*command[:-3], "study=shared", f"storage={url}", "max_new_tokens=5",
                            f"hydra.run.dir={tmp_path / 'run2'}"], capture_output=True, text=True)
    assert other.returncode == 2 and "study shared in sqlite" in other.stderr and "measured other settings" in other.stderr


def test_a_slurm_sweep_without_slurm_is_one_line_before_any_job(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ltd.cli.sweep", "cpu_table1", "hydra/launcher=slurm"],
                            capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "error: hydra/launcher=slurm submits through SLURM, and this machine has no sbatch or srun on its PATH: "
        "run make sweep on the cluster, or leave the launcher out to run the jobs here"]
    assert list(tmp_path.iterdir()) == []
