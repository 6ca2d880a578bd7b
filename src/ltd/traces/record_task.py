"""Recording a task: greedy answers to its questions (every turn, each continuing the
conversation with the previous answer) and their traces, one file per turn. A turn already on
disk is reused, so an interrupted recording goes on where it stopped."""
from collections.abc import Callable
from pathlib import Path

from ltd.decoding.engine import Engine
from ltd.eval.tasks import Question
from ltd.traces.record import Trace, record_answer


def record_questions(target, drafter, questions: list[Question], directory: Path, max_new_tokens: int, top_k: int,
                     max_depth: int, progress: Callable[[], None] = lambda: None) -> tuple[list[Path], int]:
    """The trace files of `questions` in question and turn order, and how many were recorded now."""
    engine = Engine(target.decoder, target.stop_token_ids, drafter)
    paths, recorded = [], 0
    for question in questions:
        messages = []
        for turn, text in enumerate(question.turns):
            messages.append({"role": "user", "content": text})
            path = Path(directory) / f"{question.id}-{turn}.safetensors"
            if path.exists():  # its answer continues the conversation
                answer = Trace.load(path).answer.tolist()
            else:
                prompt = target.encode_chat(messages)
                answer = engine.generate_autoregressive(prompt, max_new_tokens).tokens
                record_answer(target, drafter, prompt, answer, top_k, max_depth).save(path)
                recorded += 1
            paths.append(path)
            messages.append({"role": "assistant", "content": target.tokenizer.decode(answer, skip_special_tokens=True)})
        progress()
    return paths, recorded
