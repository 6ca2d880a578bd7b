"""Every job answers a bad value with one line on stderr and exit code 2, and leaves nothing on
disk: no run directory, no results, no empty study journal. Each case runs the job as a user would,
in an empty working directory, on a tiny model."""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import save_tiny_checkpoint
from ltd.config.files import CONFIG_PATH

TASK = str(Path(CONFIG_PATH).parent / "data" / "bench" / "mt_bench" / "question.jsonl")

CASES = [
    ("decode", "threads=-1", "threads must be a whole number >= 1, or null (every core), got -1"),
    ("decode", "temperature=nan", "temperature must be a number >= 0 (0: greedy), got nan"),
    ("decode", "temperature=-1", "temperature must be a number >= 0 (0: greedy), got -1.0"),
    ("decode", "max_new_tokens=0", "max_new_tokens must be a whole number >= 1, got 0"),
    ("decode", "questions=0", "questions must be a whole number >= 1 (null: all), got 0"),
    ("decode", "model.dtype=float33", "model.dtype must be one of float32, bfloat16, float16, got 'float33'"),
    ("decode", "drafter=draft_lm", "drafter draft_lm needs its model: drafter.model=<a model config> or drafter.so"),
    ("decode", "controller=eagle3_default controller.dpeth=4", "Could not override 'controller.dpeth'. To append"),
    ("decode", "controller=eagle3_default controller.depth=[1", "no viable alternative at input '[1'"),
    ("decode", "drafter=qwen2.5-coder-0.5b drafter.quantize=int4", "drafter.quantize must be int8, q4_k or null, got 'int4'"),
    ("decode", "drafter=qwen2.5-coder-0.5b model.dtype=bfloat16", "drafter.quantize=int8 is a CPU path in float32, and th"),
    ("decode", "model.quantize=int4", "model.quantize must be int8, gguf, q4_k or null, got 'int4'"),
    ("decode", "model.quantize=gguf", "model.quantize=gguf runs a GGUF's own blocks, and model.source "),
    ("decode", "model.quantize=int8 model.dtype=bfloat16", "model.quantize=int8 is a CPU path in float32, and the "),
    ("decode", "drafter.path=/nonexistent", "no EAGLE-3 head at /nonexistent (not a directory)"),
    ("decode", "controller=eagle3_default controller.verify=100000", "static tree verify must be at most 710, what a"),
    ("decode", "controller=eagle3_default controller.top_k=100000", "top-k 100000 is more than the 64 tokens the draf"),
    ("decode", "controller=ltd", "no policy at results/policies/tiny-eagle3-throughput-full/depth.pt"),
    ("decode", "methods=[ltd]", "nothing to compare with autoregressive decoding: name methods=[...] or controller="),
    ("eval", "max_new_tokens=0", "max_new_tokens must be a whole number >= 1, got 0"),
    ("eval", "warmup_tokens=0", "warmup_tokens must be a whole number >= 1, got 0"),
    ("eval", "temperature=-1", "temperature must be a number >= 0 (0: greedy), got -1.0"),
    ("eval", "resume=no/such/run", "nothing to resume at no/such/run (not a directory)"),
    ("eval", "methods=[autoregressive,nope]", "unknown method 'nope'; choose from: tuned, "),
    ("sweep_tree", "trials=0", "trials must be a whole number >= 1, got 0"),
    ("sweep_tree", "pruner=median", "sweep pruner must be one of wilcoxon, none, got 'median'"),
    ("sweep_tree", "prune_p=2", "prune_p must lie between 0 and 1, got 2"),
    ("sweep_tree", "tasks=[qa,nope]", "unknown task 'nope'; choose from: alpaca, gsm8k, humaneval, mmlu"),
    ("sweep_tree", "space.depth=[0,3]", "sweep space depth must be [low, high] with 1 <= low <= high, got [0, 3]"),
    ("profile", "repeats=0", "repeats must be a whole number >= 1, got 0"),
    ("profile", "contexts=[1,64]", "contexts must be whole numbers >= 2, got [1, 64]"),
    ("profile", "verify_sizes=[-1]", "verify_sizes must be whole numbers >= 0, got [-1]"),
    ("profile", "contexts=[4096]", "profiling needs 4426 positions; tiny has 256"),
    ("record", "max_new_tokens=0", "max_new_tokens must be a whole number >= 1, got 0"),
    ("record", "top_k=0", "top_k must be a whole number >= 1, got 0"),
    ("record", "max_depth=0", "max_depth must be a whole number >= 1, got 0"),
    ("train_baselines", "epochs=0", "epochs must be a whole number >= 1, got 0"),
    ("train_baselines", "lr=-1", "lr must be a number > 0, got -1.0"),
    ("train_baselines", "held_out=1.5", "held_out must be a fraction between 0 and 1, got 1.5"),
    ("train", "threads=-1", "threads must be a whole number >= 1, or null (every core), got -1"),
    ("train", "record.validation=0", "record.validation (>= 1) and record.test (>= 0) must leave questions to train "
              "on: 0 + 1 of record.questions 5"),
    ("train", "evaluate.max_new_tokens=0", "evaluate.max_new_tokens must be a whole number >= 1, got 0"),
    ("train", "ltd.size_ppo.frames=0", "ppo needs frames >= rollout and rollout a multiple of minibatch"),
    ("train_drafter", "drafter=draft_lm", "make drafter trains EAGLE-3 heads; drafter 'draft_lm' is not one"),
    ("train_drafter", "drafter.train.epochs=0", "drafter.train.epochs must be a whole number >= 1, got 0"),
    ("train_drafter", "drafter.train.eval_tree=[1,2,50]", "static tree verify must be at most 2"),
    ("train_ppow", "drafter=draft_lm", "PPOW tunes EAGLE-3 heads; drafter 'draft_lm' is not one"),
    ("train_ppow", "variants=[full,nope]", "unknown ppow 'nope'; choose from: cst, full, no_both, no_proximity"),
    ("train_ppow", "ppow.method=dpo", "ppow.method must be ppow or supervised, got 'dpo'"),
    ("train_ppow", "ppow.steps=0", "ppow.steps must be a whole number >= 1, got 0"),
    ("train_ppow", "eval_tree=[1,2,50]", "static tree verify must be at most 2"),
    ("train_ppow", "questions=0", "questions must be a whole number >= 1 (null: all), got 0"),
    ("bench_decode", "repeats=0", "repeats must be a whole number >= 1, got 0"),
    ("bench_decode", "verify_sizes=[0,1]", "verify_sizes must be whole numbers >= 1 (draft tokens verified)"),
    ("bench_env", "batches=[0]", "batches must be whole numbers >= 1, got [0]"),
    ("bench_env", "steps=0", "steps must be a whole number >= 1, got 0"),
]

LOGGED = {"eval", "sweep_tree", "train", "train_ppow"}  # jobs with a logger group: W&B off in these runs
WITH_TASK = {"decode", "eval", "sweep_tree", "record", "bench_decode"}
WITH_TASKS = {"decode", "sweep_tree"}  # their `tasks` list would read the repository's task files: `task` instead


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    save_tiny_checkpoint(directory)
    return directory


@pytest.mark.parametrize("job, override, message", CASES, ids=[f"{job}-{o}" for job, o, _ in CASES])
def test_a_bad_value_is_one_line_and_writes_nothing(job, override, message, tiny_model_dir, tmp_path):
    assert_one_line(job, override.split(" "), message, tmp_path, source=tiny_model_dir)


def bad_files(folder: Path) -> dict[str, Path]:
    files = {"not.gguf": b"PK\x03\x04 a zip, named .gguf", "latin1.jsonl": b'{"question_id": 0, "turns": ["caf\xe9"]}\n',
             "string-turns.jsonl": b'{"question_id": 0, "turns": "Hi"}\n',
             "long.jsonl": b'{"question_id": 0, "turns": ["' + b"word " * 400 + b'"]}\n'}
    for name, content in files.items():
        (folder / name).write_bytes(content)
    (folder / "no-weights").mkdir()
    (folder / "no-weights" / "config.json").write_text("{}")
    return {name: folder / name for name in [*files, "no-weights"]}


INPUTS = [("decode", "not.gguf", None, "{path} is not a GGUF file (it starts with b'PK\\x03\\x04', a GGUF with b'GGUF')"),
          ("decode", None, "latin1.jsonl", "{path}:1: not UTF-8 (byte 0xe9)"),
          ("eval", None, "string-turns.jsonl", '{path}:1: "turns" must be a non-empty list of strings, got "Hi"'),
          ("decode", None, "long.jsonl", "prompt of "),
          ("eval", "no-weights", None, "cannot load model ")]
BEYOND_CHECKS = ["controller=eagle3_default", "methods=[autoregressive,eagle3_default]"]  # past the methods' checks


@pytest.mark.parametrize("job, source, task, message", INPUTS, ids=[f"{j}-{s or t}" for j, s, t, _ in INPUTS])
def test_a_bad_file_is_one_line_and_writes_nothing(job, source, task, message, tiny_model_dir, tmp_path):
    files = bad_files(tmp_path)
    overrides = [BEYOND_CHECKS[0] if job == "decode" else BEYOND_CHECKS[1]]
    assert_one_line(job, overrides, message.format(path=files[source or task]), tmp_path,
                    source=files[source] if source else tiny_model_dir, task=files[task] if task else TASK)


def assert_one_line(job: str, overrides: list[str], message: str, tmp_path: Path, source, task: str = TASK) -> None:
    """`make <job>` run as a user would, in an empty folder: one line (the last) starting with
    `error: <message>`, exit code 2, nothing left in the folder."""
    work = tmp_path / "work"
    work.mkdir()
    vocab = [] if any(o.startswith("drafter=") for o in overrides) else ["drafter.draft_vocab_size=64"]
    args = [sys.executable, "-m", f"ltd.cli.{job}", "model=smollm2-135m", "model.name=tiny",
            f"model.source={source}", "model.max_context=256", *vocab, *(["logger=none"] if job in LOGGED else []),
            *([f"task.path={task}"] if job in WITH_TASK else []), *(["tasks=null"] if job in WITH_TASKS else []),
            *overrides]
    result = subprocess.run(args, capture_output=True, text=True, cwd=work)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert lines[-1].startswith(f"error: {message}"), result.stderr[-2000:]
    assert not [line for line in lines if line.startswith("error") or "Traceback" in line][:-1]
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == []
