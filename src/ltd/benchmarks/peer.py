"""llama.cpp, the peer ltd measures itself against: built from the source vendored in
llama-cpp-python's sdist on PyPI (no other network), run on the very GGUF files and prompts ltd
decodes, as methods of ltd's own harness (so its order rotates with ltd's methods and its numbers
come from the same minutes of the same machine).

The build (cmake, Release, native without AMX on x86; llama-bench, llama-completion, llama-speculative-simple) is
cached under <cache>/llama.cpp/<version>-<key of the CPU and compiler>/ and moved there whole.
"""
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ltd.core.errors import LtdError
from ltd.core.fingerprints import cache_root, cpu, digest
from ltd.decoding.engine import Engine, Generation
from ltd.eval.headline import fmt
from ltd.eval.runner import Method
from ltd.eval.spread import Spread
from ltd.kernels.build import compiler
from ltd.models.targets import resolve_gguf

TOOLS = ("llama-bench", "llama-completion", "llama-speculative-simple")
PEER = "llama.cpp"  # the method every ratio of make bench-peer is over


def sdist(version: str) -> Path:
    """llama-cpp-python's sdist of `version`, downloaded once from PyPI's simple index (PEP 691) and
    checked against the sha256 the index lists for it. Nothing of it runs but the cmake build."""
    folder = cache_root() / "llama.cpp"
    name = f"llama_cpp_python-{version}.tar.gz"
    path = folder / name
    if path.is_file():
        return path
    try:
        request = urllib.request.Request("https://pypi.org/simple/llama-cpp-python/",
                                         headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            listed = next(f for f in json.load(r)["files"] if f["filename"] == name)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}.", delete=False) as tmp:
            with urllib.request.urlopen(listed["url"], timeout=600) as r:
                shutil.copyfileobj(r, tmp)
    except StopIteration:
        raise LtdError(f"PyPI lists no {name} (llama_cpp= names a llama-cpp-python release)") from None
    except (OSError, KeyError, ValueError) as error:
        raise LtdError(f"cannot fetch {name} from PyPI: {error}") from None
    sha = hashlib.sha256(Path(tmp.name).read_bytes()).hexdigest()
    if sha != listed["hashes"]["sha256"]:
        Path(tmp.name).unlink()
        raise LtdError(f"{name} does not match the sha256 PyPI lists for it (got {sha[:12]})")
    Path(tmp.name).rename(path)
    return path


def tools_in(folder: Path) -> Path:
    """A folder of llama.cpp tools built elsewhere: checked, not built."""
    missing = [tool for tool in TOOLS if not (folder / tool).is_file()]
    if missing:
        raise LtdError(f"llama_cpp_tools={folder} lacks {', '.join(missing)}")
    return folder


def native_flags() -> list[str]:
    """cmake's flags for this CPU. On x86: -march=native without AMX. llama.cpp's AMX matrix product
    segfaults on Q4_K_M files on some AMX machines (its issue 20824; a 2-core Xeon with AMX here, at
    the first batch of a prompt); without it llama.cpp runs its AVX-512 VNNI kernels, as ltd does."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ["-DGGML_NATIVE=ON"]
    flags = "-march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    return ["-DGGML_NATIVE=OFF", f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}"]


def build(version: str) -> Path:
    """The folder of llama.cpp's tools, built once for this CPU."""
    if shutil.which("cmake") is None or compiler() is None:
        raise LtdError("make bench-peer builds llama.cpp, and needs cmake and a C++ compiler (none here)")
    name, extensions = cpu()
    key = digest({"version": version, "cpu": name, "extensions": extensions, "compiler": compiler(),
                  "flags": native_flags()})
    folder = cache_root() / "llama.cpp" / f"{version}-{key}"
    if all((folder / tool).is_file() for tool in TOOLS):
        return folder
    archive = sdist(version)
    print(f"building llama.cpp (llama-cpp-python {version}) for this CPU once; cached in {folder}")
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        scratch = Path(scratch)
        prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            tar.extractall(scratch, members, filter="data")
        source, out = scratch / prefix, scratch / "build"
        steps = [["cmake", "-S", str(source), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release", *native_flags(),
                  "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
                  "-DBUILD_SHARED_LIBS=OFF"],  # static: the tools move into the cache without their libraries
                 ["cmake", "--build", str(out), "-j", str(os.cpu_count() or 1), "--target", *TOOLS]]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                raise LtdError(f"building llama.cpp failed: {(done.stderr or done.stdout).strip().splitlines()[-1]}")
        tools = scratch / "tools"
        tools.mkdir()
        for tool in TOOLS:
            shutil.copy2(out / "bin" / tool, tools / tool)
        shutil.rmtree(folder, ignore_errors=True)
        tools.rename(folder)
    return folder


@dataclass
class PeerRun:
    """One decoding by llama.cpp: new tokens, and seconds from the prompt's first token to the
    last new one (ltd's throughput counts the prompt too); drafts and acceptances when speculative."""
    tokens: int
    seconds: float
    drafted: int | None = None
    accepted: int | None = None


def number(pattern: str, text: str, what: str) -> float:
    match = re.search(pattern, text)
    if match is None:
        raise LtdError(f"llama.cpp printed no {what}; its output ended: {text.strip()[-300:]}")
    return float(match.group(1))


def parse_completion(text: str) -> PeerRun:
    """llama-completion's timings (llama_perf_context_print): prompt eval and eval."""
    prompt_ms = number(r"prompt eval time =\s*([\d.]+) ms", text, "prompt eval time")
    eval_ms = number(r"\s eval time =\s*([\d.]+) ms", text, "eval time")
    runs = number(r"\s eval time =\s*[\d.]+ ms /\s*(\d+) runs", text, "eval runs")
    return PeerRun(int(runs) + 1, (prompt_ms + eval_ms) / 1000)  # the prompt's pass makes the first token


def parse_speculative(text: str) -> PeerRun:
    """llama-speculative-simple's summary: encoded, decoded, drafted, accepted."""
    encoded = number(r"encoded\s+\d+ tokens in\s+([\d.]+) seconds", text, "encoding time")
    decoded = number(r"decoded\s+\d+ tokens in\s+([\d.]+) seconds", text, "decoding time")
    tokens = number(r"decoded\s+(\d+) tokens", text, "decoded tokens")
    return PeerRun(int(tokens), encoded + decoded, int(number(r"n_drafted\s*=\s*(\d+)", text, "drafts")),
                   int(number(r"n_accept\s*=\s*(\d+)", text, "acceptances")))


def run(command: list[str], timeout: float = 1800) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise LtdError(f"{Path(command[0]).name} failed (exit {done.returncode}): "
                       f"{(done.stderr or done.stdout).strip()[-300:]}")
    return done.stdout + done.stderr


def completion(tools: Path, model: Path, prompt: str, max_new_tokens: int, threads: int) -> PeerRun:
    """Greedy autoregressive decoding of `prompt` (text with the chat template applied)."""
    return parse_completion(run([str(tools / "llama-completion"), "-m", str(model), "-p", prompt, "-n",
                                 str(max_new_tokens), "-t", str(threads), "--temp", "0", "-no-cnv", "--no-warmup",
                                 "-c", "4096"]))


def speculative(tools: Path, model: Path, draft: Path, prompt: str, max_new_tokens: int, threads: int,
                n_max: int) -> PeerRun:
    """Greedy speculative decoding with `draft` proposing up to `n_max` tokens a step."""
    return parse_speculative(run([str(tools / "llama-speculative-simple"), "-m", str(model), "-md", str(draft),
                                  "-p", prompt, "-n", str(max_new_tokens), "-t", str(threads), "--temp", "0",
                                  "--spec-type", "draft-simple", "--spec-draft-n-max", str(n_max), "-c", "4096"]))


def batch_curve(tools: Path, model: Path, sizes: list[int], depth: int, threads: int) -> dict[int, float]:
    """Milliseconds llama.cpp takes to process a batch of n tokens after `depth` tokens of context,
    per n (llama-bench's prompt processing, 3 repetitions)."""
    out = run([str(tools / "llama-bench"), "-m", str(model), "-p", ",".join(map(str, sizes)), "-n", "0", "-d",
               str(depth), "-t", str(threads), "-r", "3", "-o", "json"])
    try:
        tests = json.loads(out[out.index("["):out.rindex("]") + 1])
        return {int(t["n_prompt"]): t["avg_ns"] / 1e6 for t in tests}
    except (ValueError, KeyError) as error:
        raise LtdError(f"llama-bench printed no JSON table: {error}") from None


@dataclass
class PeerMethod(Method):
    """llama.cpp decoding, in ltd's harness, the prompt ltd's target decodes (its text: the chat
    template applied, special tokens kept). `decode(text, max_new_tokens)` runs the tool; the runs
    are kept for their acceptances."""
    decode: Callable[[str, int], PeerRun] | None = None
    tokenizer: object = None
    runs: list[PeerRun] = field(default_factory=list)
    outside: bool = True

    def generate(self, engine: Engine, prompt: list[int], max_new_tokens: int, temperature: float,
                 seed: int) -> Generation:
        if temperature != 0:
            raise LtdError("make bench-peer compares greedy decoding (temperature=0)")
        done = self.decode(self.tokenizer.decode(prompt), max_new_tokens)
        self.runs.append(done)
        return Generation(tokens=[0] * done.tokens, seconds=done.seconds)

    def acceptance(self) -> float | None:
        """Accepted / drafted over every run (speculative methods), else None."""
        drafted = sum(r.drafted or 0 for r in self.runs)
        return sum(r.accepted or 0 for r in self.runs) / drafted if drafted else None


def peer_methods(tools: Path, model: Path, draft: Path | None, tokenizer, threads: int,
                 n_max: list[int]) -> list[PeerMethod]:
    """llama.cpp autoregressive, and speculative with `draft` for each n_max."""
    methods = [PeerMethod(PEER, decode=lambda text, n: completion(tools, model, text, n, threads),
                          tokenizer=tokenizer)]
    if draft is not None:
        for k in n_max:
            methods.append(PeerMethod(f"llama.cpp spec {k}", tokenizer=tokenizer,
                                      decode=lambda text, n, k=k: speculative(tools, model, draft=draft, prompt=text,
                                                                              max_new_tokens=n, threads=threads,
                                                                              n_max=k)))
    return methods


def gguf_files(source: str, parts, draft: dict | None) -> tuple[Path, Path | None]:
    """(the target's GGUF, the draft LM's GGUF or None): what llama.cpp runs. `draft`: the draft
    LM's source and parts (config.models.draft_lm_settings), None for other drafters."""
    target = resolve_gguf(source, parts)
    if target is None:
        raise LtdError(f"make bench-peer runs llama.cpp on the model's GGUF, and {source} is not one")
    return target, (resolve_gguf(draft["source"], draft["parts"]) if draft else None)


def table(spread: Spread, methods: list[Method], curve: dict[int, float]) -> tuple[str, list[dict]]:
    """The markdown table (every method: tok/s, x llama.cpp; then llama.cpp's batch curve) and its rows."""
    rows = []
    lines = ["| method | tok/s | x llama.cpp autoregressive | acceptance |", "|---|---|---|---|"]
    for m in methods:
        tok_s, ratio = spread.throughput(None, m.name), spread.ratio(None, m.name, PEER)
        acceptance = m.acceptance() if isinstance(m, PeerMethod) else None
        rows.append({"method": m.name, "tok/s": tok_s[0], "tok/s low": tok_s[1], "tok/s high": tok_s[2],
                     "x llama.cpp": ratio[0], "x llama.cpp low": ratio[1], "x llama.cpp high": ratio[2],
                     "acceptance": acceptance})
        shown = "" if acceptance is None else f"{100 * acceptance:.0f} %"
        lines.append(f"| {m.name} | {fmt(*tok_s)} | {fmt(*ratio)} | {shown} |")
    if curve:
        one = curve[min(curve)]
        lines += ["", "| llama.cpp batch (tokens) | " + " | ".join(map(str, curve)) + " |",
                  "|---|" + "---|" * len(curve),
                  "| ms | " + " | ".join(f"{ms:.0f}" for ms in curve.values()) + " |",
                  "| x one token | " + " | ".join(f"{ms / one:.2f}" for ms in curve.values()) + " |"]
    return "\n".join(lines), rows
