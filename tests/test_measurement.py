"""Speed-ups a reader can trust: intervals from a paired bootstrap, the load guard reading the
kernel's counters, the method order rotating across questions and tasks, and an output that is not
lossless ending the job with exit status 1."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import save_tiny_checkpoint
from ltd.config.files import CONFIG_PATH
from ltd.core.errors import LtdError, NotLossless
from ltd.core.provenance import Provenance
from ltd.core.tables import format_table
from ltd.core.tasks import Question
from ltd.decoding.engine import Generation
from ltd.eval import machine_load
from ltd.eval.machine_load import Load, LoadGuard, LoadMeter
from ltd.eval.report import overall_rows, ratio_rows
from ltd.eval.runner import AUTOREGRESSIVE, Method, check_lossless, decode_questions, rotation, summarise
from ltd.eval.spread import Spread

ROOT = Path(CONFIG_PATH).parent


def question_rows(throughputs: dict[str, list[float]], repeats: int = 1, lossless=True) -> pd.DataFrame:
    """Question rows as the harness writes them: `throughputs[method][i]` for question i // repeats,
    repeat i % repeats (10 tokens each)."""
    rows = []
    for method, values in throughputs.items():
        for i, value in enumerate(values):
            rows.append(dict(method=method, question_id=str(i // repeats), category="c", repeat=i % repeats, order=0,
                             turns=1, tokens=10, seconds=10 / value, throughput=value, cycles=5, tau=2.0, draft_s=0.0,
                             verify_s=0.0, policy_s=0.0, lossless=lossless, other_load=0.02, steal=0.0, loadavg=1.0))
    return pd.DataFrame(rows)


def test_the_interval_holds_the_papers_speed_up_and_narrows_with_questions():
    rng = np.random.default_rng(1)
    base = rng.uniform(5, 10, 40)
    tree = base * rng.normal(2.0, 0.2, 40)
    few = {r["method"]: r for r in summarise(question_rows({AUTOREGRESSIVE: base[:4], "tree": tree[:4]}),
                                              [AUTOREGRESSIVE, "tree"])}["tree"]
    many = {r["method"]: r for r in summarise(question_rows({AUTOREGRESSIVE: base, "tree": tree}),
                                               [AUTOREGRESSIVE, "tree"])}["tree"]
    assert many["speed-up"] == pytest.approx(tree.mean() / base.mean())  # the paper's definition, unchanged
    for row in (few, many):
        assert row["speed-up low"] < row["speed-up"] < row["speed-up high"]
        assert row["tok/s low"] < row["tok/s"] < row["tok/s high"]
    assert many["speed-up high"] - many["speed-up low"] < few["speed-up high"] - few["speed-up low"]
    assert many["interval over"] == "40 questions" and many["questions"] == 40


def test_resampling_is_paired_across_methods():
    """A tree exactly 1.5x autoregressive on every question has no spread in its speed-up, however
    much the questions differ from one another."""
    base = np.array([2.0, 8.0, 3.0, 12.0, 5.0])
    row = {r["method"]: r for r in summarise(question_rows({AUTOREGRESSIVE: base, "tree": 1.5 * base}),
                                              [AUTOREGRESSIVE, "tree"])}["tree"]
    assert row["speed-up low"] == pytest.approx(1.5) and row["speed-up high"] == pytest.approx(1.5)
    assert row["tok/s high"] - row["tok/s low"] > 1.0  # the throughput itself does vary


def test_one_question_resamples_its_repeats_and_alone_has_no_interval():
    repeated = summarise(question_rows({AUTOREGRESSIVE: [5.0, 6.0, 5.5], "tree": [9.0, 12.0, 10.0]}, repeats=3),
                         [AUTOREGRESSIVE, "tree"])[1]
    assert repeated["interval over"] == "3 repeats" and repeated["repeats"] == 3 and repeated["questions"] == 1
    assert repeated["speed-up low"] < repeated["speed-up high"]
    alone = summarise(question_rows({AUTOREGRESSIVE: [5.0], "tree": [9.0]}), [AUTOREGRESSIVE, "tree"])[1]
    assert np.isnan(alone["speed-up low"]) and alone["speed-up"] == pytest.approx(1.8)
    assert format_table([alone], ["method", "speed-up"]).splitlines()[-1].split()[1:] == ["1.80", "(n/a)"]


def test_the_mean_over_tasks_resamples_each_task_apart():
    per_task = {"a": question_rows({AUTOREGRESSIVE: [4.0, 5.0, 6.0], "tree": [8.0, 10.0, 11.0], "ltd": [9.0, 11.0, 13.0]}),
                "b": question_rows({AUTOREGRESSIVE: [7.0, 9.0], "tree": [7.0, 10.0], "ltd": [8.0, 12.0]})}
    order = [AUTOREGRESSIVE, "tree", "ltd"]
    rows = {r["method"]: r for r in overall_rows(per_task, order)}
    tree = rows["tree"]
    assert tree["a"] == pytest.approx(29 / 15) and tree["b"] == pytest.approx(17 / 16)
    assert tree["mean speed-up"] == pytest.approx((29 / 15 + 17 / 16) / 2)
    assert tree["mean speed-up low"] <= tree["mean speed-up"] <= tree["mean speed-up high"]
    assert tree["questions"] == 5 and tree["interval over"] == "5 questions"
    [ratio] = ratio_rows(per_task, order, "ltd", ["tree"])
    ltd_mean = (33 / 15 + 20 / 16) / 2
    assert ratio["ratio"] == pytest.approx(ltd_mean / tree["mean speed-up"])
    assert ratio["ratio low"] < ratio["ratio"] < ratio["ratio high"]
    # the same records give the same interval: the bootstrap is seeded
    again = Spread.of(per_task, order).relative(None, "ltd", "tree", AUTOREGRESSIVE)
    assert again == (ratio["ratio"], ratio["ratio low"], ratio["ratio high"])


def fake_proc(root: Path, cpu: list[int], ours: int, others: dict[int, int] | None = None, load: float = 0.5) -> None:
    """/proc/stat with one line for cpu0 (user nice system idle iowait irq softirq steal) and the stat
    files of this process and `others` (pid -> ticks)."""
    root.mkdir(exist_ok=True)
    (root / "stat").write_text("cpu  0 0 0 0 0 0 0 0\ncpu0 " + " ".join(map(str, cpu)) + " 0 0\n")
    (root / "loadavg").write_text(f"{load} 0.4 0.3 1/100 123\n")
    for pid, ticks in {os.getpid(): ours, **(others or {})}.items():
        (root / str(pid)).mkdir(exist_ok=True)
        parent = 1 if pid != os.getpid() else 0
        (root / str(pid) / "stat").write_text(f"{pid} (a (b) c) S {parent} 0 0 0 0 0 0 0 0 0 {ticks} 0 0 0 20\n")


def test_the_meter_counts_what_others_took_from_the_jobs_cpus(tmp_path, monkeypatch):
    monkeypatch.setattr(machine_load, "PROC", tmp_path)
    fake_proc(tmp_path, [100, 0, 0, 900, 0, 0, 0, 0], ours=100)
    meter = LoadMeter()
    meter.cpus = [0]
    meter.start()
    # 1000 more ticks: 600 busy, of which 200 ours; 100 stolen
    fake_proc(tmp_path, [600, 0, 100, 1200, 0, 0, 0, 100], ours=300, load=2.5)
    load = meter.read()
    assert load.other == pytest.approx(0.4) and load.steal == pytest.approx(0.1) and load.loadavg == 2.5
    assert load.share == pytest.approx(0.5) and load.describe().startswith("other processes 40% of the CPU, steal 10%")


def test_a_busy_process_on_the_jobs_cpu_is_seen():
    """Another process (not a child of the job: those count as the job's own) spinning on the job's CPU."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    # The shell starts the loop in the background and exits: the loop is nobody's child of ours.
    started = subprocess.run(["sh", "-c", f"taskset -c {cpu} {sys.executable} -c 'while True: pass' >/dev/null 2>&1 & "
                              "echo $!"], capture_output=True, text=True, check=True)
    busy = int(started.stdout)
    try:
        time.sleep(0.5)
        meter = LoadMeter()
        meter.cpus = [cpu]
        meter.start()
        time.sleep(1.0)
        load = meter.read()
    finally:
        os.kill(busy, 9)
    assert load.other > 0.5, load
    guard = LoadGuard(limit=0.1)
    assert guard.verdict(load).startswith("warning: the machine was busy while timing: other processes ")
    with pytest.raises(LtdError, match="require_quiet=true refuses the run; what finished is kept"):
        LoadGuard(limit=0.1, require_quiet=True).check(load, "question 1")
    LoadGuard(limit=0.1).check(load, "question 1")  # without require_quiet: a warning at the end, no stop


def test_a_quiet_reading_passes_and_a_bad_limit_is_one_line():
    quiet = Load(other=0.01, steal=0.0, loadavg=0.3, cpus=2)
    guard = LoadGuard(limit=0.1, require_quiet=True)
    guard.check(quiet, "question 1")
    assert guard.verdict(quiet).startswith("load while timing: other processes 1% of the CPU")
    with pytest.raises(LtdError, match="max_other_load must be a share of the CPU between 0 and 1"):
        LoadGuard(limit=5)


class Recording(Method):
    """A method that records when it decodes (and, for `wrong`, spoils its answer)."""

    def __init__(self, name: str, log: list, wrong: bool = False):
        super().__init__(name)
        self.log, self.wrong = log, wrong

    def generate(self, engine, prompt, max_new_tokens, temperature, seed):
        self.log.append(self.name)
        return Generation([2, 3] if self.wrong else [2, 2], seconds=0.1)


class Target:
    def encode_chat(self, messages):
        return [1]

    class tokenizer:
        decode = staticmethod(lambda tokens, skip_special_tokens: "w")


class Engine:
    target = None


def test_the_order_rotates_across_questions_and_tasks(monkeypatch):
    monkeypatch.setattr("ltd.eval.runner.matches_reference", lambda target, prompt, reference, tokens: True)
    log = []
    methods = [Recording(AUTOREGRESSIVE, log), Recording("tree", log), Recording("ltd", log)]
    question = lambda i: Question(str(i), "c", ["hi"])
    first = 0
    orders = []
    for task_questions in ([question(0)], [question(1)], [question(2), question(3)]):  # a question per task, then two
        rows = decode_questions(Engine(), Target(), methods=methods, questions=task_questions, max_new_tokens=4,
                                temperature=0.0, seed=0, first=first)
        first += len(task_questions)
        orders += [log[i:i + 3] for i in range(0, len(log), 3)]
        log.clear()
        assert set(rows["order"]) == {0, 1, 2}
    assert [order[0] for order in orders] == [AUTOREGRESSIVE, "tree", "ltd", AUTOREGRESSIVE]
    assert orders[1] == ["tree", "ltd", AUTOREGRESSIVE] and [m.name for m in rotation(methods, 4)] == orders[1]


def test_an_output_that_is_not_lossless_names_method_task_and_question(monkeypatch):
    monkeypatch.setattr("ltd.eval.runner.matches_reference",
                        lambda target, prompt, reference, tokens: tokens == reference)
    methods = [Recording(AUTOREGRESSIVE, []), Recording("tree", []), Recording("broken", [], wrong=True)]
    rows = decode_questions(Engine(), Target(), methods=methods, questions=[Question("7", "c", ["hi"])],
                            max_new_tokens=4, temperature=0.0, seed=0)
    check_lossless({"qa": rows[rows["method"] != "broken"]})
    with pytest.raises(NotLossless, match="^not lossless: broken on qa question 7 differs from autoregressive"):
        check_lossless({"qa": rows})


def test_make_run_exits_1_naming_the_output_that_is_not_lossless(tmp_path):
    """The job itself: a method spoilt on purpose (its verify pass picks the wrong token) ends make
    run with one line and exit status 1, its table and records kept."""
    save_tiny_checkpoint(tmp_path / "model")
    spoil = tmp_path / "spoil_acceptance.py"
    # Greedy acceptance of speculative decoding answers one token too high: every drafted method
    # then differs from autoregressive decoding.
    spoil.write_text(
        "import ltd.decoding.acceptance as a, ltd.decoding.engine as e\n"
        "def spoilt(selection, logits):\n"
        "    accepted, root = a.accept_greedy(selection, logits)\n"
        "    return accepted, (root + 1) % logits.shape[-1]\n"
        "e.accept_greedy = spoilt\n")
    result = subprocess.run(
        [sys.executable, "-c", f"import sys, runpy; sys.path.insert(0, {str(tmp_path)!r}); import spoil_acceptance; "
         "runpy.run_module('ltd.cli.decode', run_name='__main__')",
         "model=smollm2-135m", "model.name=tiny", f"model.source={tmp_path / 'model'}", "model.max_context=256",
         "drafter.draft_vocab_size=64", f"drafter.root={tmp_path / 'drafters'}", "tasks=[qa,gsm8k]", "questions=1",
         "methods=[eagle3_default]", "max_new_tokens=6", "threads=1", f"results={tmp_path / 'results'}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: not lossless: eagle3_default on qa question 321 differs from autoregressive decoding (and 1 more "
        "method-question pairs)")
    assert (tmp_path / "run" / "run.md").is_file() and (tmp_path / "run" / "questions.parquet").is_file()


def compose(name: str, overrides=()):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
        return hydra_compose(name, overrides=list(overrides))


def test_the_tree_search_covers_every_tree_ltd_may_choose_with_a_fair_budget():
    from omegaconf import OmegaConf

    from ltd.config.schema import check_config

    search = check_config(compose("sweep_tree"), "sweep_tree")
    train = check_config(compose("train", ["ltd=cpu"]), "train")
    space = OmegaConf.to_object(search.space)
    assert space.depth[0] == 1 and space.depth[1] >= train.trees.max_depth
    assert space.top_k[0] == 1 and space.top_k[1] >= train.trees.top_k
    assert space.verify[0] == 1 and space.verify[1] >= max(train.ltd.sizes)
    assert search.trials >= 32 and search.questions >= 2 and search.batch >= 1


@pytest.mark.parametrize("tune, measured_here, searches", [
    (None, False, True), (None, True, False), (True, True, True), (False, False, False)])
def test_make_train_tunes_a_tree_measured_elsewhere(tune, measured_here, searches, monkeypatch, tmp_path, capsys):
    from hydra import initialize_config_dir

    from ltd.cli import train
    from ltd.config.schema import check_config

    monkeypatch.setattr(train, "tuned_here", lambda path, who: measured_here)
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
        from hydra import compose as hydra_compose

        cfg = check_config(hydra_compose("train", ["model=smollm2-135m", f"results={tmp_path}",
                                                   f"tune={'null' if tune is None else str(tune).lower()}"]), "train")
        job = train.tree_search(cfg, Provenance({"name": "m"}, {"kind": "d"}, {"cpu": "c", "threads": 2}))
    assert (job is not None) == searches
    if job is not None:
        assert job.storage == str(tmp_path / "sweeps") and job.trials >= 32
        assert job.tuned_path.name == "tuned-smollm2-135m.yaml"
    if tune is False:
        assert "best-constant (make train's own static baseline) stands in" in capsys.readouterr().err


def test_a_new_search_measures_the_tree_there_was_first(tmp_path):
    from ltd.cli.sweep_tree import earlier_tree
    from ltd.decoding.controller import StaticTree
    from ltd.baselines.tree_search import TreeSpace

    tuned = tmp_path / "tuned-m.yaml"
    assert earlier_tree(tuned, TreeSpace([1, 12], [1, 3], [1, 24])) is None
    tuned.write_text("kind: static\ndepth: 10\ntop_k: 2\nverify: 15\n")
    assert earlier_tree(tuned, TreeSpace([1, 12], [1, 3], [1, 24])) == StaticTree(10, 2, 15)
    assert earlier_tree(tuned, TreeSpace([1, 8], [1, 3], [1, 24])) is None  # outside the space: not measured
