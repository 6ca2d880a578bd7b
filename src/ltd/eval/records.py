"""What an evaluation leaves in its run directory, rewritten whole after every question (so Ctrl-C
keeps every finished question and never half a file):

    cycles.parquet     one row per draft-and-verify cycle (autoregressive: per token), CYCLE_COLUMNS
    questions.parquet  one row per method and question, QUESTION_COLUMNS
    summary.json       the run (config, timing, harness overhead) and one row per method, SUMMARY_COLUMNS
"""
from pathlib import Path

import pandas as pd

from ltd.atomic import write_file, write_json
from ltd.eval.runner import CYCLE_COLUMNS, QUESTION_COLUMNS, summarise


class Records:
    def __init__(self, directory: Path, method_order: list[str]):
        self.directory = Path(directory)
        self.method_order = method_order
        self.cycles: list[dict] = []
        self.questions: list[dict] = []

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
