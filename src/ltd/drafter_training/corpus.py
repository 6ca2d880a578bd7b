"""Training corpora for drafters: instruction/response pairs from the files in data/train.

Three row shapes are read: {instruction, input, response} (GPTeacher, a JSON list),
{question, answer} (GSM8K, JSON lines) and {instruction, instances: [{input, output}]} (Alpaca
seed tasks, JSON lines).
"""
import json
import random
from dataclasses import dataclass
from pathlib import Path

from ltd.errors import LtdError


@dataclass(frozen=True)
class Example:
    prompt: str
    response: str


def rows_of(path: Path) -> list[dict]:
    text = path.read_text()
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise LtdError(f"corpus file {path} is not valid JSON: {error}") from None
    if not isinstance(rows, list):
        raise LtdError(f"corpus file {path} should hold a JSON list of rows")
    return rows


def examples_of(row: dict) -> list[Example]:
    if "response" in row:
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        return [Example(prompt, row["response"])]
    if "answer" in row:
        return [Example(row["question"], row["answer"])]
    if "instances" in row:
        return [Example(row["instruction"] + (f"\n\n{i['input']}" if i.get("input") else ""), i["output"])
                for i in row["instances"]]
    return []


def load_corpus(paths: list[str | Path]) -> list[Example]:
    examples = []
    for path in map(Path, paths):
        if not path.is_file():
            raise LtdError(f"corpus file not found: {path}")
        examples += [e for row in rows_of(path) for e in examples_of(row) if e.prompt.strip() and e.response.strip()]
    if not examples:
        raise LtdError(f"the corpus ({', '.join(map(str, paths))}) holds no instruction/response examples")
    return examples


def split(examples: list[Example], held_out: int, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded shuffle, then the last `held_out` examples kept aside for evaluation."""
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    if held_out >= len(shuffled):
        raise LtdError(f"the corpus has {len(shuffled)} examples, too few to hold out {held_out}")
    return shuffled[: len(shuffled) - held_out], shuffled[len(shuffled) - held_out :]
