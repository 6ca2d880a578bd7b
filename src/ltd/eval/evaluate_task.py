"""One task's evaluation, as `make eval` and `make train` run it: warm every method up, then
decode question after question with the methods interleaved, writing the records after each. An
evaluation read back from its records goes on where it stopped, with the same method order."""
import time
from collections.abc import Callable
from dataclasses import dataclass

from ltd.decoding.engine import Engine
from ltd.errors import LtdError
from ltd.eval.records import Records
from ltd.eval.runner import Method, run_question
from ltd.eval.tasks import Question


@dataclass
class EvalSettings:
    max_new_tokens: int
    temperature: float = 0.0
    seed: int = 0
    warmup_tokens: int = 32  # each method decodes this much of the first prompt before timing starts


def evaluate_task(engine: Engine, target, methods: list[Method], questions: list[Question], settings: EvalSettings,
                  records: Records, run: dict,
                  on_question: Callable[[int, list[dict], dict], None] = lambda number, rows, summary: None) -> dict:
    """Decode the `questions` that `records` does not hold yet; `run` (what the summary says about
    the run) gains the counts and timing. `on_question(number, question rows, summary)` follows
    every question. Returns the summary."""
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
    warm_up = target.encode_chat([{"role": "user", "content": questions[0].turns[0]}])
    for method in methods:
        method.generate(engine, warm_up, s.warmup_tokens, s.temperature, s.seed)
    start, before = time.perf_counter(), records.loop_seconds
    for number in range(len(done), len(questions)):
        cycle_rows, question_rows = run_question(engine, target, methods, questions[number], number, s.max_new_tokens,
                                                 s.temperature, s.seed)
        records.add(cycle_rows, question_rows)
        records.loop_seconds = before + time.perf_counter() - start
        run["questions_done"] += 1
        run["decode_seconds"] = records.decode_seconds
        run["loop_seconds"] = records.loop_seconds
        run["harness_overhead"] = 1 - run["decode_seconds"] / run["loop_seconds"]
        summary = records.write(run)
        on_question(number, question_rows, summary)
    return summary
