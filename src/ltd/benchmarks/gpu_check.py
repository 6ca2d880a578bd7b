"""The GPU check (make gpu-check): the `cuda` tests, then make bench-decode and a short make eval for
each model in bfloat16 on the GPU, each run as a user runs it (its own process, its own output),
and one table of what they measured: the target's step and verify curve, transformers' generate(),
ltd's autoregressive decoding and static trees, speed-ups over both, and whether every output was
lossless.
"""
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ltd.core.tables import format_table


@dataclass
class Check:
    model: str  # a conf/model config
    overrides: tuple[str, ...]  # what it needs on a GPU besides device and dtype
    methods: tuple[str, ...]  # what the short eval compares with autoregressive decoding


CHECKS = (
    # SmolLM2's EAGLE-3 head is untrained on a fresh clone: its eval checks the path, not the speed.
    Check("smollm2-135m", (), ("eagle3_default",)),
    # The pair: the 0.5B drafts in the target's dtype (int8 is the CPU's path).
    Check("qwen2.5-coder-1.5b", ("drafter.quantize=null",), ("eagle3_default", "tuned")),
)


def run(arguments: list[str], log=print) -> bool:
    """`python <arguments>` in its own process, its output passed through; whether it succeeded."""
    log(f"\n$ python {' '.join(arguments)}", flush=True)
    return subprocess.run([sys.executable, *arguments]).returncode == 0


def check_model(check: Check, place: list[str], task: str, questions: int, output: Path) -> dict:
    """make bench-decode and a short make eval of one model; the table's row."""
    bench, evaluation = output / f"bench-{check.model}.json", output / f"eval-{check.model}"
    common = [f"model={check.model}", *place, *check.overrides]
    benched = run(["-m", "ltd.cli.bench_decode", *common, f"output={bench}"])
    evaluated = run(["-m", "ltd.cli.eval", *common, f"task={task}", f"questions={questions}", "max_new_tokens=128",
                     "logger=none", f"methods=[autoregressive,{','.join(check.methods)}]",
                     f"hydra.run.dir={evaluation}"])
    row = {"model": check.model}
    if benched:
        b = json.loads(bench.read_text())
        verify = {int(v): ms for v, ms in b["verify_ms"].items()}
        row.update({"step ms": b["target_step_ms"], "V16/V1": verify[16] / verify[1],
                    "V64/V1": verify[64] / verify[1], "generate() tok/s": b["hf_generate_tok_s"],
                    "ltd AR tok/s": b["ar_tok_s"], "tree tok/s": b["spec_tok_s"],
                    "tree / AR": b["spec_tok_s"] / b["ar_tok_s"],
                    "tree / generate()": b["spec_tok_s"] / b["hf_generate_tok_s"]})
    if (evaluation / "summary.json").exists():
        methods = json.loads((evaluation / "summary.json").read_text())["methods"]
        row.update({f"eval {m['method']}": m["speed-up"] for m in methods[1:]})
        row["lossless"] = all(m["lossless"] for m in methods)
    row["ok"] = benched and evaluated
    return row


def gpu_check(device: str, dtype: str, models: list[str], task: str, questions: int, output: Path) -> bool:
    """Every check; prints the table; whether all of it passed."""
    output.mkdir(parents=True, exist_ok=True)
    tests = run(["-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"]) if device.startswith("cuda") else None
    place = [f"model.device={device}", f"model.dtype={dtype}"]
    rows = [check_model(c, place, task, questions, output) for c in CHECKS if c.model in models]
    # One column per model, one row per measure: a few models, many measures.
    measures = list(dict.fromkeys(key for row in rows for key in row if key != "model"))
    table = [{"measure": m, **{row["model"]: row.get(m, "") for row in rows}} for m in measures]
    print(f"\nGPU check on {device} in {dtype}: {questions} question(s) of {task} for the evals; outputs in {output}")
    if tests is not None:
        print(f"cuda tests: {'passed' if tests else 'FAILED'}")
    print(format_table(table, ["measure", *(row["model"] for row in rows)]))
    return tests is not False and all(row["ok"] and row.get("lossless", False) for row in rows)
