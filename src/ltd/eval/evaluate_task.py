"""One task's evaluation, as `make eval` and `make train` run it: warm every method up, then
decode question after question with the methods interleaved, writing the records after each."""
import time
from collections.abc import Callable
from dataclasses import dataclass

from ltd.decoding.engine import Engine
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
    """Decode `questions`; `run` (what the summary says about the run) gains the counts and timing.
    `on_question(number, question rows, summary)` follows every question. Returns the summary."""
    s = settings
    run.update(questions_planned=len(questions), questions_done=0, decode_seconds=0.0, loop_seconds=0.0,
               harness_overhead=0.0)
    warm_up = target.encode_chat([{"role": "user", "content": questions[0].turns[0]}])
    for method in methods:
        method.generate(engine, warm_up, s.warmup_tokens, s.temperature, s.seed)
    start = time.perf_counter()
    summary = dict(run, methods=[])
    for number, question in enumerate(questions):
        cycle_rows, question_rows = run_question(engine, target, methods, question, number, s.max_new_tokens,
                                                 s.temperature, s.seed)
        records.add(cycle_rows, question_rows)
        run["questions_done"] += 1
        run["decode_seconds"] += sum(r["seconds"] for r in question_rows)
        run["loop_seconds"] = time.perf_counter() - start
        # Everything in the loop that is not decoding: the harness's own cost, records included.
        run["harness_overhead"] = 1 - run["decode_seconds"] / run["loop_seconds"]
        summary = records.write(run)
        on_question(number, question_rows, summary)
    return summary
