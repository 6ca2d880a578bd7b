"""ltd's kernels (gguf_linear.cpp, panels.cpp, attention.cpp, layers.cpp, dot_peak.cpp), compiled on first use for this CPU and cached.

The build is keyed by the source, the CPU and its vector extensions, torch's version, the compiler
and the instruction set asked for; it is made in a folder of its own and moved into place whole, so
an interrupted build leaves nothing that a later run would trust. Where it cannot be built (no
compiler), one note says so and `linear` and `attend` compute the same with torch alone, slower.
"""
import functools
import importlib.machinery
import importlib.util
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from ltd.core.artefacts import note
from ltd.core.fingerprints import cache_root, cpu, digest
from ltd.kernels.blocks import FORMATS, Blocks, reference_linear

SOURCES = [Path(__file__).with_name(name) for name in
           ("gguf_linear.cpp", "panels.cpp", "attention.cpp", "dot_peak.cpp", "layers.cpp", "bindings.cpp")]
# "native": every extension this CPU has; the source picks AVX-512 VNNI, else AVX2, else plain C++.
# The others exist so that each path can be tested on a CPU that has more.
ISAS = {"native": ["-march=native"], "avx2": ["-march=haswell"], "portable": ["-march=x86-64"]}
# OpenMP: at::parallel_for shares the output rows among torch's threads only when compiled with it.
FLAGS = ["-O3", "-fopenmp"]
NO_NORM = torch.empty(0)
# Q4_K panels run on AMX (where the CPU has it) from this many rows of x on, on AVX-512 VNNI below:
# the same bits either way (panels.cpp), so this only moves time. A pass of the 1.5B at context 200
# on the 2-core Xeon, VNNI / AMX: 3 rows 55 / 61 ms, 4 rows 60 / 67, 5 rows 82 / 68 (VNNI takes 4
# rows at a time: a fifth row is a second pass over the codes), 8 rows 106 / 89.
AMX_ROWS = 5


def compiler() -> str | None:
    """The C++ compiler's first line of `--version`, or None without one."""
    executable = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if executable is None:
        return None
    try:
        return subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=30).stdout.split("\n")[0]
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def sources_digest() -> str:
    """The kernels' sources, digested: what a time measured with them depends on."""
    return digest([source.read_bytes().hex() for source in SOURCES])


def build_key(isa: str) -> str:
    name, extensions = cpu()
    return digest({"source": sources_digest(), "cpu": name, "extensions": extensions, "flags": FLAGS + ISAS[isa],
                   "torch": torch.__version__, "compiler": compiler(), "machine": platform.machine()})


def load_built(name: str, folder: Path):
    library = next(folder.glob(f"{name}*.so"), None)
    if library is None:
        return None
    spec = importlib.util.spec_from_file_location(name, library,
                                                  loader=importlib.machinery.ExtensionFileLoader(name, str(library)))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def kernel(isa: str = "native"):
    """The compiled kernel for `isa`, or None (with one note) where it cannot be built here."""
    if isa != "native" and platform.machine() not in ("x86_64", "AMD64"):
        return None
    key = build_key(isa)
    name = f"ltd_kernels_{key}"
    folder = cache_root() / "kernels" / name
    if folder.is_dir():
        module = load_built(name, folder)
        if module is not None:
            return module
        shutil.rmtree(folder, ignore_errors=True)
    if compiler() is None:
        note("no C++ compiler here: the GGUF kernel is not built and matmuls on GGUF blocks run in torch (slow)")
        return None
    import ninja  # a dependency: torch's builder looks for the ninja executable on PATH
    from torch.utils import cpp_extension

    os.environ["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    print(f"compiling the GGUF kernel for this CPU ({isa}) once; cached in {folder}")
    try:
        module = cpp_extension.load(name=name, sources=[str(source) for source in SOURCES], build_directory=str(scratch),
                                    extra_cflags=FLAGS + ISAS[isa], extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as error:  # a failed build is one note; the torch path still decodes
        shutil.rmtree(scratch, ignore_errors=True)
        note(f"the GGUF kernel did not build ({str(error).strip().splitlines()[-1][:200]}): matmuls on GGUF "
             f"blocks run in torch (slow)")
        return None
    try:
        scratch.rename(folder)
    except OSError:  # another process finished the same build first
        shutil.rmtree(scratch, ignore_errors=True)
    return module


def panelled(parts: list[Blocks], isa: str = "native", always: bool = False) -> list[Blocks]:
    """`parts` with their Q4_K matrices in panels of 16 rows (panels.cpp) where they pay: on a CPU
    with AMX (measured on the 2-core Xeon: one token as fast as the lane layout, 16 rows 21 % and a
    prompt 32 % faster), or, `always`, wherever this build runs them (AVX-512 VNNI; for tests).
    All or none: panels need every part to start at a multiple of 16 rows."""
    module = kernel(isa)
    if module is None or not module.panels_built() or not (always or module.panels_amx()) or \
            any(p.shape[0] % 16 for p in parts):
        return parts
    return [Blocks("Q4_K_PANELS", *module.panel_q4_k(p.codes, p.sub, p.d)) if p.format == "Q4_K" else p
            for p in parts]


def linear(x: torch.Tensor, parts: list[Blocks], portable: bool = False, isa: str = "native",
           norm: torch.Tensor | None = None, eps: float = 0.0, amx_rows: int | None = None) -> torch.Tensor:
    """x [..., K] (float32) @ W.T for W the parts' rows stacked: [..., total rows]. With `norm` ([K]),
    x is RMS-normalised first and scaled by it ((x / rms(x)) * norm, rms with `eps`), inside the
    kernel: the norm before each of a layer's matrices costs no torch call. `portable`: the
    kernel's plain C++ path even where SIMD is available (for tests); `amx_rows`: the rows of x from
    which panels run on AMX (0: never; None: AMX_ROWS)."""
    module = kernel(isa)
    flat = x.reshape(-1, x.shape[-1])
    if module is None:
        if norm is not None:
            flat = flat * torch.rsqrt(flat.pow(2).mean(-1, keepdim=True) + eps) * norm
        padding = parts[0].shape[1] - flat.shape[1]  # quantize_q4_k pads a weight's columns with zeros
        out = torch.cat([reference_linear(F.pad(flat, (0, padding)), part) for part in parts], dim=1)
    else:  # the kernel pads the columns itself
        out = module.linear(flat, codes=[p.codes for p in parts], sub=[p.sub for p in parts], d=[p.d for p in parts],
                            formats=[FORMATS[p.format] for p in parts], portable=portable,
                            norm=NO_NORM if norm is None else norm, eps=eps, amx_rows=AMX_ROWS if amx_rows is None else amx_rows)
    return out.view(*x.shape[:-1], out.shape[-1])


def stacked_layers(layers: list, heads: int, kv_heads: int, eps: float, isa: str = "native"):
    """`layers` (ltd.models.decoder.Layer, matrices on blocks) as the kernel's `Layers`, which runs
    them all in one call (layers.cpp), or None where the kernel is not built."""
    module = kernel(isa)
    if module is None:
        return None
    each = [parts for layer in layers for parts in (layer.qkv, layer.o, layer.gate_up, layer.down)]
    matrices = [[t for p in parts for t in (p.codes, p.sub, p.d)] for parts in each]
    formats = [[FORMATS[p.format] for p in parts] for parts in each]
    norms = [norm for layer in layers for norm in (layer.input_norm, layer.post_norm)]
    biases = [NO_NORM if layer.qkv_bias is None else layer.qkv_bias for layer in layers]
    return module.Layers(matrices=matrices, formats=formats, norms=norms, biases=biases, heads=heads,
                         kv_heads=kv_heads, eps=eps)


def dot_products_per_second(isa: str = "native", rounds: int = 20_000_000) -> float | None:
    """The kernel's dot-product instructions' multiply-adds a second, torch's threads together
    (dot_peak.cpp; ~1 s for the default rounds): None where the kernel is not built or runs plain C++."""
    module = kernel(isa)
    if module is None or module.path() == "portable":
        return None
    module.dot_peak(rounds // 10)  # warm up the threads and the clock
    return module.dot_peak(rounds)
