"""Prompt sets: one JSON object per line, {"question_id", "category", "turns": [str, ...]}."""
import json
from dataclasses import dataclass
from pathlib import Path

from ltd.core.errors import LtdError
from ltd.core.fingerprints import file_digest
from ltd.core.project import project_file


@dataclass
class Question:
    id: str
    category: str
    turns: list[str]


def question_row(line: str, where: str) -> Question:
    """One line of a task file as a Question; one LtdError line, naming `where`, for anything else."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise LtdError(f"{where}: not a JSON object ({error})") from None
    if not isinstance(row, dict) or "question_id" not in row or "turns" not in row:
        raise LtdError(f"{where}: a question row needs \"question_id\" and \"turns\"")
    turns = row["turns"]
    if not isinstance(turns, list) or not turns or not all(isinstance(turn, str) for turn in turns):
        raise LtdError(f"{where}: \"turns\" must be a non-empty list of strings, got {json.dumps(turns)[:80]}")
    return Question(str(row["question_id"]), str(row.get("category", "")), turns)


def load_questions(path: str | Path, limit: int | None = None, per_category: int | None = None,
                   from_end: bool = False) -> list[Question]:
    """The questions of a task file in file order: with `per_category`, the first N of each
    category (MMLU: N per subject); then `limit` keeps the first N, or with `from_end` the last N.
    Tuning (tree search, recorded traces) reads from the end and evaluation from the start, so no
    question tunes what is then measured on it."""
    for name, value in (("limit", limit), ("per_category", per_category)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise LtdError(f"{name} must be a whole number of at least 1 or null, not {value!r}")
    path = project_file(path)
    if not path.is_file():
        raise LtdError(f"task file not found: {path}")
    data = path.read_bytes()
    try:
        lines = data.decode("utf-8").split("\n")  # not splitlines: U+2028 may sit in a prompt
    except UnicodeDecodeError as error:
        number = data[: error.start].count(b"\n") + 1
        raise LtdError(f"{path}:{number}: not UTF-8 (byte {error.object[error.start]:#04x})") from None
    questions = []
    taken: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        question = question_row(line, f"{path}:{number}")
        if per_category is not None:
            if taken.get(question.category, 0) >= per_category:
                continue
            taken[question.category] = taken.get(question.category, 0) + 1
        questions.append(question)
        if limit is not None and len(questions) >= limit and not from_end:
            break
    if not questions:
        raise LtdError(f"task file {path} holds no questions")
    return questions[-limit:] if from_end and limit is not None else questions


def task_identity(task) -> dict:
    """A task's name and the digest of its questions."""
    path = project_file(task.path)
    return {"name": task.name, "questions": file_digest(path) if path.is_file() else None,
            "per_category": task.per_category}


def questions_by_task(tasks, limit: int) -> dict[str, list[Question]]:
    """The first `limit` questions of each task (checked task configs: name, path, per_category), by
    task name, in the tasks' order: what make run and make bench-peer decode."""
    return {task.name: load_questions(task.path, limit, task.per_category) for task in tasks}
