"""What the keys of ltd's artefacts are made of: digests of values and of files' bytes, and the
machine a timing was taken on (see ltd.core.artefacts for how keys are stored and compared)."""
import hashlib
import json
import os
import platform
from pathlib import Path

from ltd.core.atomic import write_json
from ltd.core.errors import LtdError

# The CPU features that decide which kernels a matmul can use, as /proc/cpuinfo names them.
VECTOR_EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
                     "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
                     "asimd", "asimdhp", "sve", "sve2", "bf16", "i8mm")


def cache_root() -> Path:
    """Where ltd keeps what it derives from installed models (dense copies, file digests)."""
    return Path(os.environ.get("LTD_CACHE", Path.home() / ".cache" / "ltd"))


def digest(value, length: int = 12) -> str:
    """A short hex digest of a JSON-able value (dict keys in any order)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def remembered(name: str, key: str, compute, stale=lambda key: False):
    """`compute()`, done once and kept in <cache>/<name>.json under `key` (entries `stale` says so
    of are dropped when a new one is added). A read-only cache only costs recomputing."""
    path = cache_root() / f"{name}.json"
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):
        memo = {}
    if key not in memo:
        value = compute()
        memo = {k: v for k, v in memo.items() if not stale(k)}
        memo[key] = value
        try:
            write_json(path, memo)
        except OSError:
            pass
    return memo[key]


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes. Remembered by path, size, modification time and inode, so a
    checkpoint of gigabytes is read once per version, not once per run."""
    path = Path(path).resolve()
    stat = path.stat()

    def sha256() -> str:
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                sha.update(block)
        return sha.hexdigest()

    # Older versions of this file, and files gone since, are forgotten.
    stale = lambda key: key.startswith(f"{path}|") or not Path(key.split("|")[0]).exists()
    return remembered("digests", f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}", sha256, stale)


def directory_digest(directory: str | Path) -> str:
    """A digest of the files directly inside a directory (a checkpoint: weights, config, tokenizer)."""
    files = sorted(p for p in Path(directory).iterdir() if p.is_file() and not p.name.startswith("."))
    return digest({p.name: file_digest(p) for p in files}, 64)


def cpu() -> tuple[str, list[str]]:
    """The CPU's model name and the vector extensions it has."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key == "model name" and not name:
                name = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return name or platform.processor() or platform.machine(), [f for f in VECTOR_EXTENSIONS if f in flags]


def check_device(device: str, what: str, instead: str = "model.device=cpu") -> None:
    """One line, not torch's traceback, when `what` asks for a CUDA GPU this machine lacks."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LtdError(f"{what} asks for a CUDA GPU ({device}) and there is no CUDA GPU here ({instead} runs on the CPU)")


def machine(threads: int, device: str = "cpu") -> dict:
    """What a measured time depends on besides the model: CPU, its vector extensions, threads, the
    accelerator if any, and torch's version (its kernels)."""
    import torch

    name, extensions = cpu()
    described = {"cpu": name, "vector extensions": extensions, "threads": threads, "torch": torch.__version__}
    if device.startswith("cuda"):
        check_device(device, "this job")
        described["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return described


def describe_machine(described: dict) -> str:
    """One line: `AMD EPYC 7B13 (avx2 fma), 2 threads`."""
    extensions = [e for e in described.get("vector extensions", []) if e.startswith(("avx", "amx", "sve"))]
    gpu = f", {described['gpu']}" if described.get("gpu") else ""
    return f"{described.get('cpu', '?')} ({' '.join(extensions) or 'no AVX'}), {described.get('threads')} threads{gpu}"
