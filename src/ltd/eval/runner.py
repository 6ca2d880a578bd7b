"""The evaluation harness: every method decodes every turn of a question, interleaved, on the
same decoder; the records say what each cycle and each question cost, and what else ran on the
machine meanwhile (ltd.eval.machine_load).

Multi-turn questions continue from the autoregressive answer (the target's own greedy output),
so every method sees the same conversation. The order of the methods rotates from one question
(or repeat) to the next, across the tasks of a job, so slow drift of the machine hits them all alike.
"""
from dataclasses import dataclass

import pandas as pd
import torch

from ltd.core.errors import LtdError, NotLossless
from ltd.core.tasks import Question
from ltd.decoding.controller import Controller
from ltd.decoding.engine import Engine, Generation
from ltd.decoding.reference import matches_reference
from ltd.eval.machine_load import Load, LoadMeter, job_cpus
from ltd.eval.spread import Spread

AUTOREGRESSIVE = "autoregressive"

CYCLE_COLUMNS = ["method", "question_id", "category", "repeat", "turn", "cycle", "depth", "verify_size", "accepted",
                 "draft_s", "verify_s", "policy_s", "context_length", "tree_mass"]
# other_load, steal, loadavg: what the load guard read over the question (every method's decoding of it)
# order: the method's place in the question's rotation (0: it decoded first)
QUESTION_COLUMNS = ["method", "question_id", "category", "repeat", "order", "turns", "tokens", "seconds", "throughput",
                    "cycles", "tau", "draft_s", "verify_s", "policy_s", "lossless", "other_load", "steal", "loadavg"]
SUMMARY_COLUMNS = ["method", "questions", "repeats", "interval over", "tokens", "seconds", "tok/s", "tok/s low",
                   "tok/s high", "speed-up", "speed-up low", "speed-up high", "speed-up (total)", "tau", "draft share",
                   "verify share", "policy share", "other load", "steal", "load average", "lossless"]
# What a terminal table shows of a summary: each interval beside its value (ltd.eval.report)
SUMMARY_SHOWN = ["method", "questions", "tokens", "seconds", "tok/s", "speed-up", "speed-up (total)", "tau",
                 "draft share", "verify share", "policy share", "lossless"]


@dataclass
class Method:
    name: str
    controller: Controller | None = None  # None: autoregressive decoding, the baseline
    engine: Engine | None = None  # its own engine (another drafter over the same target); None: the run's
    outside: bool = False  # a decoder of its own (llama.cpp): its outputs are its model's, not compared

    def generate(self, engine: Engine, prompt: list[int], max_new_tokens: int, temperature: float,
                 seed: int) -> Generation:
        engine = self.engine or engine
        # Sampling draws where the logits live: CUDA's sampling takes only a CUDA generator.
        generator = torch.Generator(device=engine.target.device).manual_seed(seed)
        if self.controller is None:
            return engine.generate_autoregressive(prompt, max_new_tokens, temperature, generator)
        return engine.generate(prompt, self.controller, max_new_tokens, temperature, generator)


def check_methods(methods: list[Method]) -> None:
    names = [m.name for m in methods]
    if AUTOREGRESSIVE not in names:
        raise LtdError(f"methods must include {AUTOREGRESSIVE} (the baseline of every speed-up); got {names}")
    if len(set(names)) != len(names):
        raise LtdError(f"methods are listed more than once: {names}")


def rotation(methods: list[Method], turn: int) -> list[Method]:
    """The order of the methods on the `turn`-th question (or repeat) of a job: each goes first in
    turn, so slow drift of the machine hits them all alike."""
    shift = turn % len(methods)
    return methods[shift:] + methods[:shift]


def run_question(engine: Engine, target, methods: list[Method], question: Question, number: int,
                 max_new_tokens: int, temperature: float, seed: int,
                 repeats: int = 1) -> tuple[list[dict], list[dict]]:
    """Decode every turn of `question` with every method, `repeats` times (each a new place in the
    rotation: `number` counts the job's questions so far); returns (cycle rows, question rows: one
    per method and repeat)."""
    cycle_rows, question_rows = [], []
    for repeat in range(repeats):
        meter = LoadMeter().start()
        order = rotation(methods, number * repeats + repeat)
        cycles, totals = decode_turns(engine, target, order=order, question=question, max_new_tokens=max_new_tokens,
                                      temperature=temperature, seed=seed + repeat)
        load = meter.read()
        for row in cycles:
            row["repeat"] = repeat
        cycle_rows += cycles
        for m in methods:
            t = totals[m.name]
            question_rows.append(dict(
                method=m.name, question_id=question.id, category=question.category, repeat=repeat,
                order=order.index(m), turns=len(question.turns), tokens=t["tokens"], seconds=t["seconds"],
                throughput=t["tokens"] / t["seconds"], cycles=t["cycles"], tau=t["accepted"] / max(1, t["cycles"]),
                draft_s=t["draft_s"], verify_s=t["verify_s"], policy_s=t["policy_s"],
                # At temperature > 0 the same seed need not give the same tokens: losslessness is then a
                # property of the distribution, which tests check, not one output.
                lossless=t["lossless"] if temperature == 0 else None,
                other_load=load.other if load else None, steal=load.steal if load else None,
                loadavg=load.loadavg if load else None,
            ))
    return cycle_rows, question_rows


def decode_turns(engine: Engine, target, order: list[Method], question: Question, max_new_tokens: int,
                 temperature: float, seed: int) -> tuple[list[dict], dict[str, dict]]:
    """Every turn of `question` by every method of `order`, in that order. Multi-turn questions
    continue from the autoregressive answer, so every method sees the same conversation."""
    cycle_rows = []
    totals = {m.name: dict(tokens=0, seconds=0.0, cycles=0, accepted=0, draft_s=0.0, verify_s=0.0, policy_s=0.0,
                           lossless=True) for m in order}
    messages = []
    for turn, text in enumerate(question.turns):
        messages.append({"role": "user", "content": text})
        prompt = target.encode_chat(messages)
        outputs = {m.name: m.generate(engine, prompt, max_new_tokens, temperature, seed) for m in order}
        outside = {m.name for m in order if m.outside}
        reference = outputs[AUTOREGRESSIVE].tokens
        for name, out in outputs.items():
            t = totals[name]
            t["tokens"] += len(out.tokens)
            t["seconds"] += out.seconds
            t["cycles"] += len(out.cycles)
            if name in outside:
                t["lossless"] = None
            elif temperature == 0:
                t["lossless"] &= matches_reference(engine.target, prompt, reference, out.tokens)
            for index, c in enumerate(out.cycles):
                t["accepted"] += c.accepted + 1
                t["draft_s"] += c.draft_s
                t["verify_s"] += c.verify_s
                t["policy_s"] += c.policy_s
                cycle_rows.append(dict(method=name, question_id=question.id, category=question.category, turn=turn,
                                       cycle=index, depth=c.depth, verify_size=c.verify_size, accepted=c.accepted,
                                       draft_s=c.draft_s, verify_s=c.verify_s, policy_s=c.policy_s,
                                       context_length=c.context_length, tree_mass=c.tree_mass))
        answer = target.tokenizer.decode(reference, skip_special_tokens=True)
        messages.append({"role": "assistant", "content": answer})
    return cycle_rows, totals


def decode_questions(engine: Engine, target, methods: list[Method], questions: list[Question],
                     max_new_tokens: int, temperature: float, seed: int, first: int = 0, repeats: int = 1,
                     done=lambda rows: None) -> pd.DataFrame:
    """Every question with every method, interleaved; the question rows. `first`: how many
    questions the job decoded before these (the rotation goes on across tasks); `done(rows)`
    follows each question with its rows."""
    rows = []
    for number, question in enumerate(questions):
        question_rows = run_question(engine, target, methods=methods, question=question, number=first + number,
                                     max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                     repeats=repeats)[1]
        rows += question_rows
        done(question_rows)
    return pd.DataFrame(rows, columns=QUESTION_COLUMNS)


def warm_up(engine: Engine, target, methods: list[Method], question: Question, temperature: float, seed: int) -> None:
    """Each method decodes a few tokens of `question` first: kernels built, caches touched."""
    prompt = target.encode_chat([{"role": "user", "content": question.turns[0]}])
    for method in methods:
        method.generate(engine, prompt[:64], 16, temperature, seed)


def decode_tasks(engine: Engine, target, methods: list[Method], questions: dict[str, list[Question]],
                 max_new_tokens: int, temperature: float, seed: int, repeats: int, guard) -> dict[str, pd.DataFrame]:
    """Every task's questions with every method, the rotation going on across tasks, a progress bar,
    and `guard` (a LoadGuard) checking each question; the question rows per task."""
    from tqdm import tqdm

    per_task, first = {}, 0

    def done(rows: list[dict]) -> None:
        bar.update()
        guard.check(Load.of_question(rows[0]), f"question {rows[0]['question_id']}")

    with tqdm(total=sum(map(len, questions.values())), unit="question") as bar:
        for task, task_questions in questions.items():
            bar.set_description(task)
            per_task[task] = decode_questions(engine, target, methods=methods, questions=task_questions,
                                              max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                              first=first, repeats=repeats, done=done)
            first += len(task_questions)
    return per_task


def summarise(questions: pd.DataFrame, method_order: list[str]) -> list[dict]:
    """One row per method: speed-up = mean per-question throughput over the autoregressive one
    (the paper's definition), with its 95 % interval (ltd.eval.spread); `speed-up (total)` = total
    tokens / total seconds, relative likewise; the load the guard read, weighted by time."""
    if "repeat" not in questions:  # records written before repeats existed
        questions = questions.assign(repeat=0)
    spread = Spread.of({"": questions}, method_order)
    by = questions.groupby("method")
    sums = by[["tokens", "seconds", "cycles", "draft_s", "verify_s", "policy_s"]].sum()
    accepted = (questions["tau"] * questions["cycles"]).groupby(questions["method"]).sum()
    base_total = sums.loc[AUTOREGRESSIVE, "tokens"] / sums.loc[AUTOREGRESSIVE, "seconds"]
    load = run_load(questions)
    rows = []
    for name in method_order:
        s = sums.loc[name]
        lossless = questions.loc[questions["method"] == name, "lossless"]
        tok_s, tok_low, tok_high = spread.throughput("", name)
        speedup, low, high = spread.ratio("", name, AUTOREGRESSIVE)
        rows.append({
            "method": name, "questions": int(questions.loc[questions["method"] == name, "question_id"].nunique()),
            "repeats": int(questions["repeat"].max()) + 1, "interval over": spread.units(""),
            "tokens": int(s["tokens"]), "seconds": float(s["seconds"]),
            "tok/s": tok_s, "tok/s low": tok_low, "tok/s high": tok_high,
            "speed-up": speedup, "speed-up low": low, "speed-up high": high,
            "speed-up (total)": float(s["tokens"] / s["seconds"] / base_total),
            "tau": float(accepted[name] / max(1, s["cycles"])),
            "draft share": float(s["draft_s"] / s["seconds"]), "verify share": float(s["verify_s"] / s["seconds"]),
            "policy share": float(s["policy_s"] / s["seconds"]),
            "other load": load.other if load else None, "steal": load.steal if load else None,
            "load average": load.loadavg if load else None,
            "lossless": None if lossless.isna().any() else bool(lossless.all()),
        })
    return rows


def run_load(questions: pd.DataFrame) -> Load | None:
    """The load over a run's questions: each question's shares weighted by its decoding time (all
    methods), the highest load average; None where the guard read nothing."""
    if "other_load" not in questions or questions["other_load"].isna().all():
        return None
    per_question = questions.groupby(["question_id", "repeat"], sort=False).agg(
        seconds=("seconds", "sum"), other=("other_load", "first"), steal=("steal", "first"),
        loadavg=("loadavg", "first")).dropna()
    weights = per_question["seconds"] / per_question["seconds"].sum()
    return Load(other=float((per_question["other"] * weights).sum()),
                steal=float((per_question["steal"] * weights).sum()), loadavg=float(per_question["loadavg"].max()),
                cpus=len(job_cpus()))


def check_lossless(per_task: dict[str, pd.DataFrame]) -> None:
    """NotLossless, naming the method, task and question, for the first greedy output (of any task's
    question rows) that is not the target's own; the count of any others."""
    failures = [(row.method, task, row.question_id) for task, rows in per_task.items()
                for row in rows.itertuples() if not pd.isna(row.lossless) and not row.lossless]
    if failures:
        method, task, question = failures[0]
        more = f" (and {len(failures) - 1} more method-question pairs)" if len(failures) > 1 else ""
        raise NotLossless(f"not lossless: {method} on {task} question {question} differs from autoregressive "
                          f"decoding{more}")
