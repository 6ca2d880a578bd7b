"""What an evaluation leaves in its run directory, rewritten whole after every question (so Ctrl-C
or a kill keeps every finished question and never half a file):

    cycles.parquet     one row per draft-and-verify cycle (autoregressive: per token), CYCLE_COLUMNS
    questions.parquet  one row per method and question, QUESTION_COLUMNS
    summary.json       the run (config, timing, harness overhead) and one row per method, SUMMARY_COLUMNS
    key.json           what the evaluation is (model, drafter, machine, task, methods, settings)

An interrupted evaluation is read back (`Records.resume`) and goes on with its next question.
"""
import json
from pathlib import Path

import pandas as pd

from ltd.core.atomic import write_file, write_json
from ltd.core.errors import LtdError, reason
from ltd.eval.runner import CYCLE_COLUMNS, QUESTION_COLUMNS, summarise


class Records:
    def __init__(self, directory: Path, method_order: list[str], repeats: int = 1):
        self.directory = Path(directory)
        self.method_order = method_order
        self.repeats = repeats
        self.cycles: list[dict] = []
        self.questions: list[dict] = []
        self.loop_seconds = 0.0  # wall time of the evaluation loops so far (earlier sessions included)

    @classmethod
    def resume(cls, directory: Path, method_order: list[str], repeats: int = 1) -> "Records":
        """What an interrupted evaluation in `directory` finished: the questions every method
        decoded every time (cycles of any other question dropped: the files are written one after
        the other)."""
        records = cls(directory, method_order, repeats)
        if not (records.directory / "questions.parquet").exists():
            return records
        try:
            questions = pd.read_parquet(records.directory / "questions.parquet")
            cycles = pd.read_parquet(records.directory / "cycles.parquet")
        except Exception as error:  # pyarrow's errors for a damaged file are many
            raise LtdError(f"cannot resume from {records.directory}: {reason(error)}") from None
        complete = (questions.groupby("question_id", sort=False)["method"].transform("count")
                    == len(method_order) * repeats)
        questions = questions[complete]
        cycles = cycles[cycles["question_id"].isin(set(questions["question_id"]))]
        records.questions = questions.to_dict("records")
        records.cycles = cycles.to_dict("records")
        try:
            records.loop_seconds = json.loads((records.directory / "summary.json").read_text())["loop_seconds"]
        except (OSError, ValueError, KeyError):
            records.loop_seconds = float(questions["seconds"].sum())
        return records

    @property
    def question_ids(self) -> list[str]:
        """The finished questions, in the order they were decoded."""
        return list(dict.fromkeys(row["question_id"] for row in self.questions))

    @property
    def decode_seconds(self) -> float:
        return float(sum(row["seconds"] for row in self.questions))

    def add(self, cycle_rows: list[dict], question_rows: list[dict]) -> None:
        self.cycles += cycle_rows
        self.questions += question_rows

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return (pd.DataFrame(self.cycles, columns=CYCLE_COLUMNS),
                pd.DataFrame(self.questions, columns=QUESTION_COLUMNS))

    def summary_rows(self) -> list[dict]:
        return summarise(self.frames()[1], self.method_order) if self.questions else []

    def write(self, run: dict) -> dict:
        """Write all three files; returns the summary written."""
        cycles, questions = self.frames()
        write_file(self.directory / "cycles.parquet", lambda tmp: cycles.to_parquet(tmp, index=False))
        write_file(self.directory / "questions.parquet", lambda tmp: questions.to_parquet(tmp, index=False))
        summary = dict(run, methods=self.summary_rows())
        write_json(self.directory / "summary.json", summary)
        return summary
