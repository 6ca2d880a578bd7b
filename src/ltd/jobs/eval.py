"""One task's evaluation, as `make eval` and `make train` run it: warm every method up, then
decode question after question with the methods interleaved, writing the records after each. An
evaluation read back from its records goes on where it stopped, with the same method order."""
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ltd.core.artefacts import Artefact
from ltd.core.errors import LtdError
from ltd.core.tasks import Question
from ltd.core.tracking import Tracker, metric_name
from ltd.decoding.engine import Engine
from ltd.eval.machine_load import Load, LoadGuard
from ltd.eval.records import Records
from ltd.eval.runner import AUTOREGRESSIVE, Method, run_question


@dataclass
class EvalSettings:
    max_new_tokens: int
    temperature: float = 0.0
    seed: int = 0
    warmup_tokens: int = 32  # each method decodes this much of the first prompt before timing starts
    repeats: int = 1  # each question decoded this many times by every method (the records' `repeat`)
    guard: LoadGuard = field(default_factory=LoadGuard)


def evaluate_task(engine: Engine, target, methods: list[Method], questions: list[Question], settings: EvalSettings,
                  records: Records, run: dict,
                  on_question: Callable[[int, list[dict], dict], None] = lambda number, rows, summary: None,
                  first: int = 0) -> dict:
    """Decode the `questions` that `records` does not hold yet; `run` (what the summary says about
    the run) gains the counts and timing. `on_question(number, question rows, summary)` follows
    every question. `first`: the questions the job decoded before this task's (the order of the
    methods rotates across tasks). Returns the summary."""
    s = settings
    done = records.question_ids
    if done != [q.id for q in questions[: len(done)]]:
        raise LtdError(f"the records in {records.directory} are of other questions than this task's first {len(done)}")
    run.update(questions_planned=len(questions), questions_done=len(done), decode_seconds=records.decode_seconds,
               loop_seconds=records.loop_seconds)
    # Everything in the loop that is not decoding: the harness's own cost, records included.
    run["harness_overhead"] = 1 - run["decode_seconds"] / run["loop_seconds"] if run["loop_seconds"] else 0.0
    summary = dict(run, methods=records.summary_rows())
    if len(done) == len(questions):
        return summary
    s.guard.before_timing()
    warm_up = target.encode_chat([{"role": "user", "content": questions[0].turns[0]}])
    for method in methods:
        method.generate(engine, warm_up, s.warmup_tokens, s.temperature, s.seed)
    start, before = time.perf_counter(), records.loop_seconds
    for number in range(len(done), len(questions)):
        cycle_rows, question_rows = run_question(engine, target, methods=methods, question=questions[number],
                                                 number=first + number, max_new_tokens=s.max_new_tokens,
                                                 temperature=s.temperature, seed=s.seed, repeats=s.repeats)
        s.guard.check(Load.of_question(question_rows[0]), f"question {questions[number].id}")
        records.add(cycle_rows, question_rows)
        records.loop_seconds = before + time.perf_counter() - start
        run["questions_done"] += 1
        run["decode_seconds"] = records.decode_seconds
        run["loop_seconds"] = records.loop_seconds
        run["harness_overhead"] = 1 - run["decode_seconds"] / run["loop_seconds"]
        summary = records.write(run)
        on_question(number, question_rows, summary)
    return summary


def summary_metrics(summary: dict) -> dict:
    """The summary as flat W&B keys: `<method>/<metric>` (`ltd/speedup`, `ltd/tokens_per_s`) and the
    run's own numbers."""
    flat = {metric_name(k): v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for row in summary["methods"]:
        for column, value in row.items():
            if column != "method" and value is not None:
                flat[f"{row['method']}/{metric_name(column)}"] = value
    return flat


def open_records(run_dir: Path, key: dict, names: list[str], resume: bool, or_new: bool = False,
                 repeats: int = 1) -> Records:
    """The run directory's records: new, or (`resume`) those of the interrupted evaluation there,
    which must have run under `key`; with `or_new` (a sweep's job), new where there are none."""
    evaluation = Artefact(run_dir, key, "an evaluation", directory=True)
    stored = evaluation.stored_key()
    if not resume or (or_new and stored is None):
        if stored is not None:
            raise LtdError(f"{run_dir} already holds an evaluation: resume={run_dir} goes on with it")
        evaluation.seal()
        return Records(run_dir, names, repeats)
    if stored is None:
        raise LtdError(f"{run_dir} holds no evaluation to resume (no key.json): resume= names a make eval run "
                       f"directory")
    if stored != evaluation.key:
        raise LtdError(f"cannot resume {run_dir}: it ran under other settings ({evaluation.changes()})")
    return Records.resume(run_dir, names, repeats)


def evaluate_tracked(engine: Engine, target, methods: list[Method], questions: list[Question],
                     settings: EvalSettings, records: Records, run: dict, tracker: Tracker, task: str) -> dict:
    """evaluate_task with a progress bar showing the first three methods' speed-ups so far, each
    question's throughputs logged, and, however it ends (Ctrl-C too), what finished (already on
    disk) mirrored to the tracker. Returns the summary."""
    shown = [m.name for m in methods if m.name != AUTOREGRESSIVE][:3]
    done = len(records.question_ids)
    if done:
        print(f"resuming {records.directory}: {done} of {len(questions)} questions already decoded")
    bar = tqdm(total=len(questions), initial=done, desc=f"eval {task}", unit="question")

    def on_question(number: int, question_rows: list[dict], summary: dict) -> None:
        by_method = {row["method"]: row for row in summary["methods"]}
        bar.set_postfix({n: f"{by_method[n]['speed-up']:.2f}x" for n in shown}, refresh=False)
        bar.update()
        tracker.log({f"{row['method']}/throughput": row["throughput"] for row in question_rows}, step=number)

    try:
        summary = evaluate_task(engine, target, methods=methods, questions=questions, settings=settings,
                                records=records, run=run, on_question=on_question)
        bar.close()
        tracker.made(records.directory, files=[
            records.directory / name for name in ("summary.json", "questions.parquet", "cycles.parquet")])
    finally:
        if records.questions:
            summary = dict(run, methods=records.summary_rows())
            tracker.summarise(summary_metrics(summary))
            tracker.table("questions", records.frames()[1])
        tracker.finish()
    return summary
