"""Training corpora for drafters: instruction/response pairs from the files in data/train.

Three row shapes are read: {instruction, input, response} (GPTeacher, a JSON list),
{question, answer} (GSM8K, JSON lines) and {instruction, instances: [{input, output}]} (Alpaca
seed tasks, JSON lines).
"""
import json
import random
from dataclasses import dataclass
from pathlib import Path

from ltd.core.errors import LtdError
from ltd.core.project import project_file


@dataclass(frozen=True)
class Example:
    prompt: str
    response: str
    source: str = ""  # the file it came from


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
    for path in map(project_file, paths):
        if not path.is_file():
            raise LtdError(f"corpus file not found: {path}")
        examples += [Example(e.prompt, e.response, str(path)) for row in rows_of(path) for e in examples_of(row)
                     if e.prompt.strip() and e.response.strip()]
    if not examples:
        raise LtdError(f"the corpus ({', '.join(map(str, paths))}) holds no instruction/response examples")
    return examples


def split(examples: list[Example], held_out: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Each source file shuffled (seeded), then one example of each file in turn, so that a small
    file of general instructions weighs as much as a large one of a single kind until it runs
    out. The first `held_out` examples of that order are kept aside for evaluation."""
    by_source: dict[str, list[Example]] = {}
    for example in examples:
        by_source.setdefault(example.source, []).append(example)
    rng = random.Random(seed)
    for group in by_source.values():
        rng.shuffle(group)
    longest = max(map(len, by_source.values()))
    ordered = [group[i] for i in range(longest) for group in by_source.values() if i < len(group)]
    if held_out >= len(ordered):
        raise LtdError(f"the corpus has {len(ordered)} examples, too few to hold out {held_out}")
    return ordered[held_out:], ordered[:held_out]
