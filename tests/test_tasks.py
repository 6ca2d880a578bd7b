"""Task files: reading, per-category selection, and the shipped MMLU prompts."""
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from ltd.core.errors import LtdError
from ltd.core.tasks import load_questions

ROOT = Path(__file__).resolve().parents[1]
MMLU = ROOT / "data/bench/mmlu/question.jsonl"


def write_task(tmp_path, rows) -> Path:
    path = tmp_path / "question.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def mixed(tmp_path) -> Path:
    """Three categories, interleaved: a0 b0 a1 c0 b1 a2 b2 a3."""
    ids = ["a0", "b0", "a1", "c0", "b1", "a2", "b2", "a3"]
    return write_task(tmp_path, [{"question_id": i, "category": i[0], "turns": [f"q {i}"]} for i in ids])


def ids(questions) -> list[str]:
    return [q.id for q in questions]


def test_per_category_keeps_the_first_n_of_each_in_file_order(mixed):
    assert ids(load_questions(mixed, per_category=2)) == ["a0", "b0", "a1", "c0", "b1"]
    assert ids(load_questions(mixed, per_category=1)) == ["a0", "b0", "c0"]
    assert ids(load_questions(mixed, per_category=10)) == ids(load_questions(mixed))


def test_limit_applies_after_per_category(mixed):
    assert ids(load_questions(mixed, 4, per_category=2)) == ["a0", "b0", "a1", "c0"]
    assert ids(load_questions(mixed, 4)) == ["a0", "b0", "a1", "c0"]
    assert ids(load_questions(mixed, 2, 1)) == ["a0", "b0"]
    assert ids(load_questions(mixed, 100, per_category=1)) == ["a0", "b0", "c0"]


def test_from_end_keeps_the_last_n_in_file_order_and_never_meets_the_first(mixed):
    assert ids(load_questions(mixed, 3, from_end=True)) == ["a2", "b2", "a3"]
    assert ids(load_questions(mixed, 2, per_category=2, from_end=True)) == ["c0", "b1"]
    assert ids(load_questions(mixed, None, from_end=True)) == ids(load_questions(mixed))
    assert not set(ids(load_questions(mixed, 4))) & set(ids(load_questions(mixed, 4, from_end=True)))


def test_positional_limit_still_works(mixed):
    assert ids(load_questions(mixed, 3)) == ["a0", "b0", "a1"]
    assert ids(load_questions(str(mixed), None)) == ids(load_questions(mixed))


@pytest.mark.parametrize("field", ["limit", "per_category"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True, "3"])
def test_bad_limit_or_per_category_is_one_line(mixed, field, value):
    with pytest.raises(LtdError) as error:
        load_questions(mixed, **{field: value})
    message = str(error.value)
    assert "\n" not in message
    assert field in message and repr(value) in message


@pytest.mark.parametrize("line,reason", [
    ('{"question_id": 1, "turns": ["x"', "not a JSON object"),
    ('{"category": "x", "turns": ["x"]}', 'a question row needs "question_id" and "turns"'),
    ("[1, 2]", 'a question row needs "question_id" and "turns"'),
    ("7", 'a question row needs "question_id" and "turns"'),
    ('{"question_id": 1, "turns": 5}', '"turns" must be a non-empty list of strings, got 5'),
    ('{"question_id": 1, "turns": "Hi"}', '"turns" must be a non-empty list of strings, got "Hi"'),  # not 2 turns
    ('{"question_id": 1, "turns": []}', '"turns" must be a non-empty list of strings, got []'),
    ('{"question_id": 1, "turns": [123]}', '"turns" must be a non-empty list of strings, got [123]'),
])
def test_malformed_row_is_one_line_naming_the_line(tmp_path, line, reason):
    path = tmp_path / "question.jsonl"
    path.write_text('{"question_id": 0, "turns": ["ok"]}\n' + line + "\n")
    with pytest.raises(LtdError) as error:
        load_questions(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:2: {reason}")


def test_bytes_that_are_not_utf8_are_one_line_naming_the_line(tmp_path):
    path = tmp_path / "question.jsonl"
    path.write_bytes(b'{"question_id": 0, "turns": ["ok"]}\n{"question_id": 1, "turns": ["caf\xe9"]}\n')
    with pytest.raises(LtdError, match=r"question.jsonl:2: not UTF-8 \(byte 0xe9\)"):
        load_questions(path)


def test_a_line_separator_inside_a_prompt_stays_in_its_row(tmp_path):
    path = tmp_path / "question.jsonl"
    path.write_text('{"question_id": 0, "turns": ["one\u2028two"]}\n', encoding="utf-8")
    assert load_questions(path)[0].turns == ["one\u2028two"]


def test_missing_or_empty_task_file_is_one_line(tmp_path):
    with pytest.raises(LtdError, match="task file not found") as error:
        load_questions(tmp_path / "nope.jsonl")
    assert "\n" not in str(error.value)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(LtdError, match="holds no questions"):
        load_questions(tmp_path / "empty.jsonl")


OPTIONS = re.compile(r"\nA\. .*\nB\. .*\nC\. .*\nD\. .*\nAnswer:\Z", re.DOTALL)


def test_shipped_mmlu_has_57_subjects_of_at_most_80_zero_shot_prompts():
    questions = load_questions(MMLU)
    per_subject = Counter(q.category for q in questions)
    assert len(per_subject) == 57
    assert all(1 <= n <= 80 for n in per_subject.values())
    subjects = list(dict.fromkeys(q.category for q in questions))
    assert subjects == sorted(subjects)  # subject order, each subject's questions together
    assert len({q.id for q in questions}) == len(questions)
    for q in questions:
        assert q.id.startswith(f"{q.category}-")
        assert len(q.turns) == 1
        prompt = q.turns[0]
        about = q.category.replace("_", " ")
        assert prompt.startswith(f"The following is a multiple choice question about {about}.\n\n")
        assert prompt.endswith("Answer:") and OPTIONS.search(prompt), q.id
    # the task config keeps all of them
    assert len(load_questions(MMLU, per_category=80)) == len(questions)


def test_shipped_mmlu_rows_carry_no_answer():
    for line in MMLU.read_text().splitlines():
        assert set(json.loads(line)) == {"question_id", "category", "turns"}
