"""make bench-peer's pieces: llama.cpp's printed timings parsed, and the job end to end on fake
llama.cpp tools (a real build takes minutes; `make test` never needs one)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltd.benchmarks.peer import TOOLS, parse_completion, parse_speculative
from ltd.core.errors import LtdError

# What llama.cpp (llama-cpp-python 0.3.36's) printed on the 2-core EPYC, cut to the lines read.
COMPLETION = """\
0.05.261.542 I common_perf_print: prompt eval time =     575.77 ms /    40 tokens (   14.39 ms per token,    69.47 tokens per second)
0.05.261.544 I common_perf_print:        eval time =    2105.11 ms /    63 runs   (   33.41 ms per token,    29.93 tokens per second)
"""
SPECULATIVE = """\
0.08.930.041 I encoded   40 tokens in    0.848 seconds, speed:   47.163 t/s
0.08.930.060 I decoded   73 tokens in    5.090 seconds, speed:   14.343 t/s
0.08.930.111 I n_drafted = 72
0.08.930.124 I n_accept  = 64
"""
BENCH = [{"n_prompt": n, "n_gen": 0, "n_depth": 200, "avg_ns": ms * 1e6} for n, ms in ((1, 36.4), (2, 50.3))]


def test_completion_timings_count_the_prompt_pass():
    run = parse_completion(COMPLETION)
    assert run.tokens == 64 and run.seconds == pytest.approx(2.68088)


def test_speculative_timings_and_acceptance():
    run = parse_speculative(SPECULATIVE)
    assert (run.tokens, run.drafted, run.accepted) == (73, 72, 64)
    assert run.seconds == pytest.approx(5.938)


def test_missing_timings_are_one_line():
    with pytest.raises(LtdError, match="llama.cpp printed no prompt eval time"):
        parse_completion("error: something else\n")


def fake_tools(folder: Path) -> Path:
    """Scripts that answer as llama.cpp's tools do (timings on stderr, llama-bench's JSON on stdout)."""
    folder.mkdir()
    outputs = {"llama-completion": f"cat >&2 <<'X'\n{COMPLETION}X\n",
               "llama-speculative-simple": f"cat >&2 <<'X'\n{SPECULATIVE}X\n",
               "llama-bench": f"echo '{json.dumps(BENCH)}'\n"}
    for tool in TOOLS:
        path = folder / tool
        path.write_text("#!/bin/sh\n" + outputs[tool])
        path.chmod(0o755)
    return folder


@pytest.mark.real
def test_bench_peer_writes_one_table(tmp_path):
    """SmolLM2 (ltd, from its GGUF dequantised) against fake llama.cpp tools: every method's tok/s
    and its ratio to llama.cpp's autoregressive decoding, and the batch curve, in results/peer.md."""
    tools = fake_tools(tmp_path / "tools")
    done = subprocess.run(
        [sys.executable, "-m", "ltd.cli.bench_peer", "model=smollm2-135m", "model.quantize=null", "tasks=[gsm8k]",
         "questions=2", "max_new_tokens=8", "methods=[]", f"llama_cpp_tools={tools}", f"results={tmp_path / 'r'}",
         f"hydra.run.dir={tmp_path / 'run'}", "threads=1"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], env={**os.environ, "WANDB_MODE": "offline"})
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "r" / "peer.md").read_text()
    assert "| autoregressive |" in table and "| llama.cpp | 23.87" in table
    assert "| ms | 36 | 50 |" in table
    rows = json.loads((tmp_path / "r" / "peer.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["autoregressive", "llama.cpp"]
    assert rows[1]["x llama.cpp"] == pytest.approx(1.0)


def test_llama_cpp_is_built_for_this_cpu_without_its_amx_kernels_on_x86(monkeypatch):
    """llama.cpp's AMX matrix product segfaults on Q4_K_M files on some AMX machines: on x86 the
    build is -march=native with AMX off (ggml's own native switch would turn it back on)."""
    import platform

    from ltd.benchmarks.peer import native_flags

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    flags = native_flags()
    assert "-DGGML_NATIVE=OFF" in flags
    assert "-DCMAKE_CXX_FLAGS=-march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16" in flags
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert native_flags() == ["-DGGML_NATIVE=ON"]
