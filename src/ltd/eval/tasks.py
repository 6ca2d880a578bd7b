"""Prompt sets: one JSON object per line, {"question_id", "category", "turns": [str, ...]}."""
import json
from dataclasses import dataclass
from pathlib import Path

from ltd.errors import LtdError


@dataclass
class Question:
    id: str
    category: str
    turns: list[str]


def load_questions(path: str | Path, limit: int | None = None) -> list[Question]:
    path = Path(path)
    if not path.is_file():
        raise LtdError(f"task file not found: {path}")
    questions = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            questions.append(Question(str(row["question_id"]), row.get("category", ""), list(row["turns"])))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise LtdError(f"{path}:{number}: not a question row ({error})") from None
        if limit is not None and len(questions) >= limit:
            break
    if not questions:
        raise LtdError(f"task file {path} holds no questions")
    return questions
