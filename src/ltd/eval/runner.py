"""The evaluation harness: every method decodes every turn of a question, interleaved, on the
same decoder; the records say what each cycle and each question cost.

Multi-turn questions continue from the autoregressive answer (the target's own greedy output),
so every method sees the same conversation. The order of the methods rotates from one question
to the next, so slow drift of the machine hits them all alike.
"""
from dataclasses import dataclass

import pandas as pd
import torch

from ltd.decoding.controller import Controller
from ltd.decoding.engine import Engine, Generation
from ltd.decoding.reference import matches_reference
from ltd.errors import LtdError
from ltd.eval.tasks import Question

AUTOREGRESSIVE = "autoregressive"

CYCLE_COLUMNS = ["method", "question_id", "category", "turn", "cycle", "depth", "verify_size", "accepted",
                 "draft_s", "verify_s", "policy_s", "context_length", "tree_mass"]
QUESTION_COLUMNS = ["method", "question_id", "category", "turns", "tokens", "seconds", "throughput", "cycles",
                    "tau", "draft_s", "verify_s", "policy_s", "lossless"]
SUMMARY_COLUMNS = ["method", "questions", "tokens", "seconds", "tok/s", "speed-up", "speed-up (total)", "tau",
                   "draft share", "verify share", "policy share", "lossless"]


@dataclass
class Method:
    name: str
    controller: Controller | None = None  # None: autoregressive decoding, the baseline
    engine: Engine | None = None  # its own engine (another drafter over the same target); None: the run's

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


def run_question(engine: Engine, target, methods: list[Method], question: Question, number: int,
                 max_new_tokens: int, temperature: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Decode every turn of `question` with every method; returns (cycle rows, question rows)."""
    shift = number % len(methods)
    order = methods[shift:] + methods[:shift]
    cycle_rows = []
    totals = {m.name: dict(tokens=0, seconds=0.0, cycles=0, accepted=0, draft_s=0.0, verify_s=0.0, policy_s=0.0,
                           lossless=True) for m in methods}
    messages = []
    for turn, text in enumerate(question.turns):
        messages.append({"role": "user", "content": text})
        prompt = target.encode_chat(messages)
        outputs = {m.name: m.generate(engine, prompt, max_new_tokens, temperature, seed) for m in order}
        reference = outputs[AUTOREGRESSIVE].tokens
        for name, out in outputs.items():
            t = totals[name]
            t["tokens"] += len(out.tokens)
            t["seconds"] += out.seconds
            t["cycles"] += len(out.cycles)
            if temperature == 0:
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
    question_rows = []
    for m in methods:
        t = totals[m.name]
        question_rows.append(dict(
            method=m.name, question_id=question.id, category=question.category, turns=len(question.turns),
            tokens=t["tokens"], seconds=t["seconds"], throughput=t["tokens"] / t["seconds"], cycles=t["cycles"],
            tau=t["accepted"] / max(1, t["cycles"]), draft_s=t["draft_s"], verify_s=t["verify_s"],
            policy_s=t["policy_s"],
            # At temperature > 0 the same seed need not give the same tokens: losslessness is then a
            # property of the distribution, which tests check, not one output.
            lossless=t["lossless"] if temperature == 0 else None,
        ))
    return cycle_rows, question_rows


def compare(engine: Engine, target, methods: list[Method], questions: list[Question], max_new_tokens: int,
            temperature: float, seed: int, done=lambda: None) -> list[dict]:
    """Every question with every method, interleaved (`done` follows each question); the summary
    rows (speed-up over the first method, autoregressive decoding)."""
    rows = []
    for number, question in enumerate(questions):
        rows += run_question(engine, target, methods, question, number, max_new_tokens, temperature, seed)[1]
        done()
    return summarise(pd.DataFrame(rows), [m.name for m in methods])


def summarise(questions: pd.DataFrame, method_order: list[str]) -> list[dict]:
    """One row per method: speed-up = mean per-question throughput over the autoregressive one
    (the paper's definition); `speed-up (total)` = total tokens / total seconds, relative likewise."""
    by = questions.groupby("method")
    sums = by[["tokens", "seconds", "cycles", "draft_s", "verify_s", "policy_s"]].sum()
    accepted = (questions["tau"] * questions["cycles"]).groupby(questions["method"]).sum()
    mean_throughput = by["throughput"].mean()
    base_mean = mean_throughput[AUTOREGRESSIVE]
    base_total = sums.loc[AUTOREGRESSIVE, "tokens"] / sums.loc[AUTOREGRESSIVE, "seconds"]
    rows = []
    for name in method_order:
        s = sums.loc[name]
        lossless = questions.loc[questions["method"] == name, "lossless"]
        rows.append({
            "method": name, "questions": int(by.size()[name]), "tokens": int(s["tokens"]),
            "seconds": float(s["seconds"]), "tok/s": float(mean_throughput[name]),
            "speed-up": float(mean_throughput[name] / base_mean),
            "speed-up (total)": float(s["tokens"] / s["seconds"] / base_total),
            "tau": float(accepted[name] / max(1, s["cycles"])),
            "draft share": float(s["draft_s"] / s["seconds"]), "verify share": float(s["verify_s"] / s["seconds"]),
            "policy share": float(s["policy_s"] / s["seconds"]),
            "lossless": None if lossless.isna().any() else bool(lossless.all()),
        })
    return rows
