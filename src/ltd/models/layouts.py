"""Which memory layout of a weight matrix oneDNN's CPU linear reads fastest: measured once per
machine (CPU, vector extensions, threads, torch) and matrix shape, and remembered in
<cache>/layouts.json.

The same [out, in] matrix can sit in memory row-major ([out, in]), transposed ([in, out]) or
packed once into oneDNN's own blocked layout; which kernel oneDNN picks, and how close it comes to
the memory bandwidth, depends on the CPU and the shape. On a 2-core AVX-512 EPYC the 1.5B's fused
q|k|v matrix streams at 41 GB/s row-major, 22 GB/s transposed and 45 GB/s packed for one row, and
at 31, 22 and 46 GB/s for four: a plain layout is repacked on every call with several rows, a packed
one is not, so verifying a few tokens costs little more than one. Timing uses enough copies of the
matrix to overflow the caches, as decoding does: each weight is read once a step.
"""
import statistics
import time

import torch

from ltd.core.fingerprints import digest, machine, remembered

LAYOUTS = ("out_in", "in_out", "packed")
TUNED_BYTES = 4 * 2**20  # smaller matrices stay in cache anyway: they keep the default layout
COLD_BYTES = 256 * 2**20  # copies cycled through per timing, past any L3
ROWS = (1, 8)  # a decoding step and a verification of a few tokens: both count
PACKED_ROWS = 8  # the row count oneDNN packs for (it serves every other count too)


def arrange(weight: torch.Tensor, layout: str) -> torch.Tensor:
    """[out, in] in shape every way; `in_out` stores it transposed, `packed` as an opaque oneDNN
    tensor that only oneDNN's linear reads."""
    if layout == "packed":
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), PACKED_ROWS)
    return weight.contiguous() if layout == "out_in" else weight.t().contiguous().t()


def measure(shape: tuple[int, int], linear, repeats: int = 5) -> dict[str, float]:
    """Seconds per matrix for each layout: the median over repeats of the mean over cold copies,
    summed over ROWS."""
    out, inner = shape
    copies = max(2, min(64, COLD_BYTES // (4 * out * inner)))
    base = [torch.randn(out, inner) for _ in range(copies)]
    seconds = {}
    for layout in LAYOUTS:
        weights = [arrange(w, layout) for w in base]
        total = 0.0
        for rows in ROWS:
            x = torch.randn(rows, inner)
            for w in weights:  # warm-up: page in, let oneDNN build its kernels
                linear(x, w)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                for w in weights:
                    linear(x, w)
                times.append((time.perf_counter() - start) / copies)
            total += statistics.median(times)
        seconds[layout] = total
    return seconds


def fastest_layout(shape: tuple[int, int], linear) -> str:
    """The layout to store a matrix of `shape` in for `linear` on this machine (measured once)."""
    out, inner = shape
    if 4 * out * inner < TUNED_BYTES:
        return "in_out"

    def fastest() -> str:
        seconds = measure(shape, linear)
        return min(seconds, key=seconds.get)

    # "3": three layouts measured (choices remembered among two are measured again).
    return remembered("layouts", f"3-{digest(machine(torch.get_num_threads()))}-{out}x{inner}", fastest)
