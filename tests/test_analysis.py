"""make analysis on results a tiny model made through the commands a user types (make train, an
ablation, an evaluation at temperature 1, one on MMLU): every notebook runs headless and writes its
tables and figures; missing results are named with the command that makes them."""
import json
import subprocess
import sys

import pandas as pd
import pytest
from test_train_cli import tiny_model, train

from ltd.analysis import tables
from ltd.analysis.notebooks import with_parameters
from ltd.eval.table1 import table1

FIGURES = ["speedup_vs_tau", "cost_model", "policy_choices_tiny-eagle3", "accepted_per_cycle_tiny-eagle3",
           "ppo_tiny-eagle3-throughput-full", "mmlu_subjects"]


def evaluate(tiny_model_dir, tmp, *overrides, run):
    return subprocess.run(
        [sys.executable, "-m", "ltd.cli.eval", *tiny_model(tiny_model_dir, tmp), "logger=none", f"results={tmp / 'results'}",
         "threads=1", "questions=1", "max_new_tokens=8", "methods=[autoregressive,eagle3_default,ltd]",
         f"hydra.run.dir={tmp / run}", *overrides], capture_output=True, text=True)


def analysis(*args):
    return subprocess.run([sys.executable, "-m", "ltd.cli.analysis", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def results(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analysis")
    runs = [train(tiny_model_dir, tmp),
            train(tiny_model_dir, tmp, "reward=acceptance", "+experiment=ablation", methods=None, run="ablation"),
            evaluate(tiny_model_dir, tmp, "task=gsm8k", "temperature=1.0", run="hot"),
            evaluate(tiny_model_dir, tmp, "task=mmlu", "task.per_category=1", "questions=3", run="mmlu")]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    return tmp / "results"


def test_make_analysis_runs_every_notebook_and_writes_tables_and_figures(results):
    done = analysis(f"results={results}", "reference=eagle3_default")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = results / "analysis"
    for name in ("table1", "ablations", "cost_model", "policies", "temperature", "mmlu"):
        assert f"{name}: written" in done.stdout
        notebook = json.loads((out / f"{name}.ipynb").read_text())
        errors = [o for c in notebook["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert errors == [] and (out / f"{name}.html").stat().st_size > 10_000
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / "figures" / f"{name}.svg").is_file()

    table1 = pd.read_csv(out / "table1.csv")
    assert set(table1["method"]) == {"autoregressive", "eagle3_default", "best-constant", "ltd"}
    assert {"mt_bench speed-up", "gsm8k tau", "mean speed-up"} <= set(table1.columns)
    assert table1.loc[table1["method"] == "autoregressive", "mean speed-up"].item() == pytest.approx(1.0)
    ablations = pd.read_csv(out / "ablations.csv")
    assert list(ablations["reward"]) == ["acceptance"] and ablations["tasks"].item() == 2
    temperature = pd.read_csv(out / "temperature.csv", header=[0, 1])
    assert {("speedup", 0.0), ("speedup", 1.0), ("tau", 1.0)} <= {
        (name, float(t)) for name, t in temperature.columns if t.replace(".", "").isdigit()}
    mmlu = pd.read_csv(out / "mmlu.csv", index_col=0)
    assert len(mmlu) == 3 and (mmlu["questions"] == 1).all()

    # the PPO curves: one row per batch of every stage, with what the figure plots
    stage = json.loads((results / "policies" / "tiny-eagle3-throughput-full" / "stage1-size.json").read_text())
    assert [row["batch"] for row in stage["curve"]] == [1, 2]
    assert {"reward_per_step", "tau", "entropy", "loss_objective", "verify_chosen"} <= set(stage["curve"][0])


def test_missing_results_are_skipped_with_the_command_that_makes_them(results, tmp_path):
    store = [line for line in (results / "store.jsonl").read_text().splitlines()
             if json.loads(line)["experiment"] == "default"]
    (tmp_path / "store.jsonl").write_text("\n".join(store) + "\n")
    done = analysis(f"results={tmp_path}", "only=ablations,cost_model")
    assert done.returncode == 0, done.stderr
    assert "ablations: skipped, no results for it yet (make ablation reward=acceptance" in done.stdout
    assert "cost_model: skipped, no results for it yet (make profile" in done.stdout


@pytest.mark.parametrize("args, message", [
    ([], "error: no results in {store}: run make train (or make eval) first"),
    (["only=tables"], "error: unknown notebook tables; choose from: table1, ablations, cost_model, policies, "
                      "temperature, mmlu"),
    (["figures=x"], "error: unknown argument 'figures=x': make analysis "),
])
def test_bad_or_missing_input_is_one_line(tmp_path, args, message):
    if args:
        (tmp_path / "store.jsonl").write_text(json.dumps({"task": "gsm8k", "method": "ltd"}) + "\n")
    done = analysis(f"results={tmp_path}", *args)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith(message.format(store=tmp_path / "store.jsonl"))


def row(model, task, method, speedup, tau, time="2026-01-01"):
    return dict(model=model, drafter="eagle3", task=task, method=method, **{"speed-up": speedup}, tau=tau, time=time)


def test_table1_takes_the_latest_row_and_marks_the_fastest_method_per_column():
    rows = pd.DataFrame([row("m", "gsm8k", "autoregressive", 1.0, 1.0), row("m", "gsm8k", "ltd", 1.5, 3.0),
                         row("m", "gsm8k", "tuned", 1.4, 3.5), row("m", "qa", "autoregressive", 1.0, 1.0),
                         row("m", "qa", "ltd", 1.1, 2.0), row("m", "qa", "tuned", 1.2, 2.5),
                         row("m", "qa", "tuned", 1.3, 2.6, time="2026-02-01")])
    table = table1(rows).set_index("method")
    assert table.loc["tuned", "qa speed-up"] == 1.3 and table.loc["ltd", "mean speed-up"] == pytest.approx(1.3)
    text = tables.table1_markdown(table.reset_index())
    assert "| ltd | **1.50x / 3.00** | 1.10x / 2.00 |" in text and "| tuned | 1.40x / 3.50 | **1.30x / 2.60** |" in text


def test_subject_speedups_compare_two_methods_per_subject():
    questions = pd.DataFrame([dict(category=c, method=m, throughput=t) for c, m, t in [
        ("algebra", "autoregressive", 10.0), ("algebra", "ltd", 20.0), ("algebra", "tuned", 16.0),
        ("law", "autoregressive", 10.0), ("law", "ltd", 12.0), ("law", "tuned", 15.0)]])
    table = tables.subject_speedups(questions, "ltd", "tuned")
    assert list(table.index) == ["algebra", "law"]
    assert table.loc["algebra", "ltd / tuned"] == pytest.approx(1.25) and table.loc["law", "ltd"] == pytest.approx(1.2)


def test_parameters_are_injected_after_the_parameters_cell():
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# title"),
                                               nbformat.v4.new_code_cell("results = 'results'",
                                                                         metadata={"tags": ["parameters"]}),
                                               nbformat.v4.new_code_cell("print(results)")])
    cells = with_parameters(notebook, {"results": "/tmp/r"}).cells
    assert [c.source for c in cells] == ["# title", "results = 'results'", "results = '/tmp/r'", "print(results)"]
