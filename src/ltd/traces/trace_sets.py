"""Recording a task: greedy answers to its questions (every turn, each continuing the
conversation with the previous answer) and their traces, one file per turn, in a directory keyed by
what they depend on (model, drafter, task, answer length, tree). A turn already on disk is reused,
so an interrupted recording goes on where it stopped; a damaged one is recorded again."""
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from ltd.core.artefacts import Artefact, find, read_key, read_or_drop
from ltd.core.errors import LtdError, reason
from ltd.core.fingerprints import digest
from ltd.core.results import ResultPaths
from ltd.core.tasks import Question, load_questions, task_identity
from ltd.decoding.engine import Engine
from ltd.models.proposals import check_top_k
from ltd.traces.trace import Trace, record_answer

TRACES = 1  # format: a change to what a trace holds makes earlier ones stale


def traces_key(model: dict, drafter: dict, task: dict, max_new_tokens: int, top_k: int, max_depth: int,
               states: bool = False) -> dict:
    key = {"artefact": "traces", "format": TRACES, "model": model, "drafter": drafter, "task": task,
           "max_new_tokens": max_new_tokens, "top_k": top_k, "max_depth": max_depth}
    # Only traces with states say so: the keys (and directories) of those without stay as they were.
    return {**key, "states": True} if states else key


def traces_directory(results: Path, key: dict) -> Artefact:
    """results/traces/<model>-<drafter>-<task>-<digest of the key>."""
    name = f"{key['model']['name']}-{key['drafter']['kind']}-{key['task']['name']}-{digest(key, 10)}"
    return Artefact(ResultPaths(results).traces(name), key, "traces", directory=True)


def recorded_traces(results: Path, model: dict, drafter: dict, task: str) -> list[Path]:
    """The trace directories recorded for this model and drafter (their weights included) on
    `task`, newest first."""
    return find(ResultPaths(results).all_traces.glob("*"), {"model": model, "drafter": drafter, "task": {"name": task}})


def trace_set(paths: list[Path]) -> dict:
    """Which traces something was made from, for its key: their directory's key and the files."""
    directory = Path(paths[0]).parent if paths else None
    key = read_key(directory, directory=True) if directory else None
    return {"traces": None if key is None else digest(key), "files": [Path(p).name for p in paths]}


def read_traces(paths: list[Path]) -> list[Trace]:
    """Traces a job only reads: a damaged one is one LtdError line naming it."""
    traces = []
    for path in paths:
        try:
            traces.append(Trace.load(path))
        except Exception as error:  # safetensors' and our own readers fail in many ways on a cut file
            raise LtdError(f"{path} is damaged ({reason(error)}): make record records it again "
                           f"(delete it first)") from None
    return traces


def record_questions(target, drafter, questions: list[Question], directory: Path, max_new_tokens: int, top_k: int,
                     max_depth: int, progress: Callable[[], None] = lambda: None,
                     states: bool = False) -> tuple[list[Path], int]:
    """The trace files of `questions` in question and turn order, and how many were recorded now."""
    check_top_k(drafter, top_k)
    engine = Engine(target.decoder, target.stop_token_ids, drafter)
    paths, recorded = [], 0
    for question in questions:
        messages = []
        for turn, text in enumerate(question.turns):
            messages.append({"role": "user", "content": text})
            path = Path(directory) / f"{question.id}-{turn}.safetensors"
            trace = read_or_drop(path, Trace.load, "recording it again")
            if trace is not None:  # its answer continues the conversation
                answer = trace.answer.tolist()
            else:
                prompt = target.encode_chat(messages)
                answer = engine.generate_autoregressive(prompt, max_new_tokens).tokens
                record_answer(target, drafter, prompt=prompt, answer=answer, top_k=top_k, max_depth=max_depth,
                              states=states).save(path)
                recorded += 1
            paths.append(path)
            messages.append({"role": "assistant", "content": target.tokenizer.decode(answer, skip_special_tokens=True)})
        progress()
    return paths, recorded


class Recorded(NamedTuple):
    train: list  # traces to train on
    held_out: list  # validation: each task's questions after the training ones, which pick checkpoints
    train_paths: list[Path]
    held_paths: list[Path]
    directories: list[Path]
    test: list = []  # each task's last `test` questions' traces: scored once, after training
    test_paths: list[Path] = []


def record_tasks(target, drafter, results: str, model: dict, drafter_id: dict, tasks: list, questions: int,
                 validation: int, max_new_tokens: int, top_k: int, max_depth: int, states: bool = False,
                 test: int = 0) -> Recorded:
    """The traces of each task's last `questions` (evaluation reads the first), recorded where
    missing, in three parts: training, then `validation` held out to pick checkpoints, then the last
    `test` held out from both, to score what training kept. `tasks`: task configs."""
    train_paths, held_paths, test_paths, directories = [], [], [], []
    for task in tasks:
        chosen = load_questions(task.path, questions, task.per_category, from_end=True)
        directory = traces_directory(Path(results), traces_key(model, drafter_id, task=task_identity(task),
                                                               max_new_tokens=max_new_tokens, top_k=top_k,
                                                               max_depth=max_depth, states=states))
        directory.open(owned=("*.safetensors",))
        train_end, validation_end = len(chosen) - validation - test, len(chosen) - test
        parts = ((chosen[:train_end], train_paths), (chosen[train_end:validation_end], held_paths),
                 (chosen[validation_end:], test_paths))
        with tqdm(total=len(chosen), desc=f"record {task.name} (top-k {top_k})", unit="question") as bar:
            for part, paths in parts:
                paths += record_questions(target, drafter, questions=part, directory=directory.path,
                                          max_new_tokens=max_new_tokens, top_k=top_k, max_depth=max_depth,
                                          progress=bar.update, states=states)[0]
        directories.append(directory.path)
    load = lambda paths: [t for t in map(Trace.load, paths) if t.positions > 0]
    return Recorded(load(train_paths), load(held_paths), train_paths=train_paths, held_paths=held_paths,
                    directories=directories, test=load(test_paths), test_paths=test_paths)
