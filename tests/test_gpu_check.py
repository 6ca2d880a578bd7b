"""make gpu-check: its one table from what bench-decode and eval wrote, and its one-line errors."""
import json
import re
import subprocess
import sys

import pytest
import torch

from ltd.benchmarks import gpu_check


def fake_run(arguments: list[str], log=print) -> bool:
    """What the real jobs write, made up: bench-decode's JSON, eval's summary (one method not lossless
    for the second model)."""
    setting = dict(a.split("=", 1) for a in arguments if "=" in a)
    if "ltd.cli.bench_decode" in arguments:
        verify = {str(v): 10.0 + v / 8 for v in (1, 2, 4, 8, 16, 32, 64, 128)}
        bench = dict(target_step_ms=10.0, verify_ms=verify, hf_generate_tok_s=50.0, ar_tok_s=80.0, spec_tok_s=160.0)
        with open(setting["output"], "w") as f:
            json.dump(bench, f)
    if "ltd.cli.eval" in arguments:
        lossless = setting["model"] == "smollm2-135m"
        methods = [dict(method="autoregressive", **{"speed-up": 1.0}, lossless=True),
                   dict(method="eagle3_default", **{"speed-up": 1.5}, lossless=lossless)]
        directory = setting["hydra.run.dir"]
        subprocess.run(["mkdir", "-p", directory], check=True)
        with open(f"{directory}/summary.json", "w") as f:
            json.dump(dict(methods=methods), f)
    return True


def test_the_table_has_a_column_per_model_and_fails_on_a_lossy_output(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "run", fake_run)
    assert gpu_check.gpu_check("cpu", "bfloat16", models=["smollm2-135m"], task="mt_bench", questions=1,
                               output=tmp_path)
    assert not gpu_check.gpu_check("cpu", "bfloat16", models=["smollm2-135m", "qwen2.5-coder-1.5b"], task="mt_bench",
                                   questions=1, output=tmp_path)
    table = capsys.readouterr().out.split("measure")[-1].splitlines()
    assert table[0].split() == ["smollm2-135m", "qwen2.5-coder-1.5b"]
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in table[2:])}
    assert rows["V16/V1"] == ["1.185", "1.185"] and rows["tree / AR"] == ["2.000", "2.000"]
    assert rows["lossless"] == ["True", "False"]


@pytest.mark.parametrize("arguments, message", [
    (["--models", "gpt2"], "error: --models takes qwen2.5-coder-1.5b, smollm2-135m; got gpt2"),
    (["--questions", "0"], "error: --questions must be at least 1, got 0"),
])
def test_bad_arguments_are_one_line(arguments, message):
    result = subprocess.run([sys.executable, "-m", "ltd.cli.gpu_check", "--device", "cpu", *arguments],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip() == message


@pytest.mark.skipif(torch.cuda.is_available(), reason="there is a GPU here")
def test_without_a_gpu_it_says_so():
    result = subprocess.run([sys.executable, "-m", "ltd.cli.gpu_check"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: make gpu-check asks for a CUDA GPU (cuda) and there is no CUDA GPU here "
                                     "(--device cpu runs on the CPU)")
