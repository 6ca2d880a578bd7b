"""The GGUF kernel: blocks repacked without changing a weight, every path (AVX-512 VNNI, AVX2, plain
C++, torch) computing the same sums, and a row's result independent of the rows beside it."""
import platform

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from ltd.core.fingerprints import cpu
from ltd.kernels.blocks import BLOCK, RAW_BYTES, dequantize, quantize_rows, reference_linear, repack
from ltd.kernels.build import kernel, linear

FORMATS = ("Q4_K", "Q6_K")
# The matrices of Qwen2.5-Coder-1.5B read 1536 or 8960 columns; 256 is the smallest block.
SHAPES = [(256, 1, 1), (1536, 70, 3), (1536, 33, 8), (1536, 2, 9), (8960, 20, 13)]  # (K, N, R)


def raw_blocks(format: str, rows: int, columns: int, seed: int = 0, centred: bool = True) -> np.ndarray:
    """Random GGUF blocks: [rows, columns / 256 * raw bytes] uint8. Every bit random but the fp16
    scales, or (`centred`) weights spread around 0 as a trained model's are: Q4_K mins about 7.5
    scales, Q6_K scales small."""
    rng = np.random.default_rng(seed)
    n = rows * columns // BLOCK
    raw = rng.integers(0, 256, (n, RAW_BYTES[format]), dtype=np.uint8)
    d = rng.uniform(1e-3, 4e-3 if centred else 2e-3, n).astype(np.float16)
    if format == "Q4_K":
        raw[:, :4] = np.stack([d, d], axis=1).view(np.uint8) if centred else \
            rng.uniform(1e-4, 2e-3, (n, 2)).astype(np.float16).view(np.uint8)
        if centred:
            scales = rng.integers(1, 9, (n, 8))
            raw[:, 4:16] = pack_q4_k_scales(scales, np.minimum(63, np.round(7.5 * scales)).astype(int))
    else:
        raw[:, 208:210] = d[:, None].view(np.uint8)
        if centred:
            raw[:, 192:208] = rng.integers(-4, 5, (n, 16)).astype(np.int8).view(np.uint8)
    return raw.reshape(rows, -1)


def pack_q4_k_scales(scales: np.ndarray, mins: np.ndarray) -> np.ndarray:
    """8 six-bit scales and mins per block as Q4_K's 12 bytes (llama.cpp's get_scale_min_k4, inverted)."""
    packed = np.zeros((scales.shape[0], 12), dtype=np.uint8)
    for j in range(4):
        packed[:, j] = scales[:, j] | ((scales[:, j + 4] >> 4) << 6)
        packed[:, j + 4] = mins[:, j] | ((mins[:, j + 4] >> 4) << 6)
        packed[:, j + 8] = (scales[:, j + 4] & 0x0F) | ((mins[:, j + 4] & 0x0F) << 4)
    return packed


def paths():
    """(isa, portable) of every path this CPU can run, as test parameters."""
    x86 = platform.machine() in ("x86_64", "AMD64")
    extensions = cpu()[1]
    return [
        pytest.param(("native", False), id="native"),
        pytest.param(("native", True), id="portable"),
        pytest.param(("avx2", False), id="avx2", marks=pytest.mark.skipif(
            not x86 or "avx2" not in extensions, reason="needs an x86 CPU with AVX2")),
    ]


@pytest.fixture(scope="module")
def built():
    if kernel() is None:
        pytest.skip("the GGUF kernel cannot be built here (no C++ compiler)")


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("centred", [False, True])
def test_repacking_changes_no_weight(format, centred):
    raw = raw_blocks(format, 8, 1536, centred=centred)
    expected = gguf_dequantize(raw, GGMLQuantizationType[format])
    got = dequantize(repack(format, raw, 8)).numpy()
    # gguf computes Q6_K's weights as (d * scale) * (code - 32), the blocks as a * code - 32 a: the
    # same number up to float32 rounding.
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def magnitude(x: torch.Tensor, blocks) -> torch.Tensor:
    """sum |a code| + |b| times |x| per output: what float32 rounding is relative to."""
    from ltd.kernels.blocks import group_scales, unpacked_codes

    a, b = group_scales(blocks)
    codes = unpacked_codes(blocks).float().unflatten(-1, (16, 16))
    absolute = (a.abs()[..., None] * codes + b.abs()[..., None]).flatten(1)
    return x.abs().double() @ absolute.double().T


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("K,N,R", SHAPES)
def test_reference_is_within_activation_rounding_of_float(format, K, N, R):
    """The only approximation: each activation is rounded to its block's 127 levels, by at most half
    a level. So |result - x @ W.T| <= sum over blocks of (scale / 2) * sum |w| (plus float64 noise)."""
    torch.manual_seed(0)
    blocks = repack(format, raw_blocks(format, N, K), N)
    x = torch.randn(R, K)
    exact = x.double() @ dequantize(blocks).double().T
    _, scale = quantize_rows(x)  # [R, nb, 1]
    w = dequantize(blocks).double().abs().unflatten(-1, (-1, BLOCK)).sum(-1)  # [N, nb]
    bound = (scale[..., 0].double() / 2) @ w.T
    assert ((reference_linear(x, blocks).double() - exact).abs() <= bound * (1 + 1e-4) + 1e-6).all()


@pytest.mark.parametrize("path", paths())
@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("K,N,R", SHAPES)
def test_kernel_equals_reference(built, path, format, K, N, R):
    """The kernel sums exact integers, then float32 products per group (K/16 of them a lane, in
    order) and 16 lanes: its error is at most ~(2 K/256 + 5) float32 epsilons of the magnitudes
    summed, under 6e-6 at K = 8960; 1e-4 leaves a tenfold margin."""
    isa, portable = path
    torch.manual_seed(1)
    blocks = repack(format, raw_blocks(format, N, K, seed=2), N)
    x = torch.randn(R, K) * torch.rand(R, 1) * 3
    got = linear(x, [blocks], portable=portable, isa=isa)
    expected = reference_linear(x, blocks)
    assert got.shape == (R, N) and got.dtype == torch.float32
    assert ((got.double() - expected.double()).abs() <= 1e-4 * magnitude(x, blocks)).all()


@pytest.mark.parametrize("path", paths())
@pytest.mark.parametrize("format", FORMATS)
def test_a_row_alone_equals_the_row_in_a_batch(built, path, format):
    """Bit for bit, wherever the row sits and however many rows share the call: verification of a
    tree then computes what autoregressive decoding computes."""
    isa, portable = path
    torch.manual_seed(3)
    blocks = repack(format, raw_blocks(format, 300, 1536, seed=4), 300)
    x = torch.randn(13, 1536)
    x[5] = 0  # an all-zero row: scale 1, nothing divided by zero
    batch = linear(x, [blocks], portable=portable, isa=isa)
    for rows in (1, 2, 7, 8, 9, 13):
        part = linear(x[:rows], [blocks], portable=portable, isa=isa)
        assert torch.equal(part, batch[:rows])
    for r in range(13):
        assert torch.equal(linear(x[r : r + 1], [blocks], portable=portable, isa=isa)[0], batch[r])
    assert torch.equal(batch[5], torch.zeros(300))
    norm = torch.rand(1536) + 0.5  # the RMS norm inside the kernel keeps rows apart too
    normed = linear(x, [blocks], portable=portable, isa=isa, norm=norm, eps=1e-6)
    for r in (0, 5, 12):
        assert torch.equal(linear(x[r : r + 1], [blocks], portable=portable, isa=isa, norm=norm, eps=1e-6)[0], normed[r])


@pytest.mark.parametrize("columns", [1536, 896])
def test_the_norm_inside_the_kernel_is_the_decoders(built, columns):
    """linear(x, norm=w) computes linear(rms_norm(x) * w): the same as normalising in torch first,
    up to where float rounding moves an activation across a level (a few thousandths here), and over
    the real columns only where the weight's were padded."""
    from ltd.kernels.blocks import quantize_q4_k

    g = torch.Generator().manual_seed(6)
    blocks = quantize_q4_k(torch.randn(64, columns, generator=g))
    x, norm = torch.randn(5, columns, generator=g) * 3, torch.rand(columns, generator=g) + 0.5
    expected = linear(x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm, [blocks])
    got = linear(x, [blocks], norm=norm, eps=1e-6)
    assert (got - expected).abs().max() < 3e-3 * expected.abs().max()


@pytest.mark.parametrize("columns", [896, 1000])
def test_the_kernel_pads_columns_as_zeros_would(built, columns):
    """A weight padded to whole blocks reads activations that stop short: the kernel pads them with
    zeros itself, bit for bit what zeros padded by the caller give (the norm's padding:
    test_the_norm_inside_the_kernel_is_the_decoders)."""
    from ltd.kernels.blocks import FORMATS, quantize_q4_k
    from ltd.kernels.build import NO_NORM

    g = torch.Generator().manual_seed(9)
    blocks = quantize_q4_k(torch.randn(24, columns, generator=g))
    x = torch.randn(7, columns, generator=g) * 2

    def call(x):
        return kernel().linear(x, [blocks.codes], [blocks.sub], [blocks.d], [FORMATS["Q4_K"]], False, NO_NORM, 0.0, 0)

    assert torch.equal(call(x), call(torch.nn.functional.pad(x, (0, blocks.shape[1] - columns))))
    with pytest.raises(RuntimeError, match="columns"):
        call(torch.randn(2, columns - 256))


def test_without_a_compiler_torch_computes_the_same(built, monkeypatch):
    """The fallback (no kernel built): the reference's sums, the norm and the padding in torch."""
    from ltd.kernels.blocks import quantize_q4_k

    g = torch.Generator().manual_seed(8)
    blocks = quantize_q4_k(torch.randn(32, 896, generator=g))
    x, norm = torch.randn(3, 896, generator=g), torch.rand(896, generator=g) + 0.5
    compiled = linear(x, [blocks], norm=norm, eps=1e-6)
    monkeypatch.setattr("ltd.kernels.build.kernel", lambda isa="native": None)
    assert (linear(x, [blocks], norm=norm, eps=1e-6) - compiled).abs().max() < 3e-3 * compiled.abs().max()


def test_parts_stack_by_rows(built):
    """q, k and v in formats of their own, run as one call: the same as three calls."""
    torch.manual_seed(5)
    parts = [repack(f, raw_blocks(f, n, 1536, seed=n), n) for f, n in (("Q4_K", 64), ("Q4_K", 16), ("Q6_K", 16))]
    x = torch.randn(4, 1536)
    together = linear(x, parts)
    assert torch.equal(together, torch.cat([linear(x, [p]) for p in parts], dim=1))


def test_leading_dimensions_are_kept(built):
    blocks = repack("Q4_K", raw_blocks("Q4_K", 8, 256), 8)
    x = torch.randn(2, 3, 256)
    assert torch.equal(linear(x, [blocks]), linear(x.reshape(6, 256), [blocks]).view(2, 3, 8))


@pytest.mark.parametrize("columns", [256, 896, 1000])
def test_q4_k_requantisation_is_close_and_pads_columns(built, columns):
    """ltd's own Q4_K blocks: each weight within half a step of its sub-block's 16 levels (plus the
    6-bit rounding of the sub-block's scale and offset), columns padded with zeros to a multiple of
    256, and the kernel pads the activations alike."""
    from ltd.kernels.blocks import quantize_q4_k

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(40, columns, generator=g) * torch.rand(40, 1, generator=g)
    blocks = quantize_q4_k(weight, slice_rows=16)
    padded = -(-columns // BLOCK) * BLOCK
    assert blocks.shape == (40, padded)
    back = dequantize(blocks)
    whole = -(-columns // 32) * 32  # sub-blocks of padding alone are zeros
    assert torch.equal(back[:, whole:], torch.zeros(40, padded - whole))
    sub = torch.nn.functional.pad(weight, (0, padded - columns)).unflatten(-1, (-1, 32))
    step = (sub.amax(-1) - sub.amin(-1).clamp(max=0))[..., None] / 15  # a sub-block's spacing of levels
    error = (back - torch.nn.functional.pad(weight, (0, padded - columns))).unflatten(-1, (-1, 32)).abs()
    assert (error <= 0.55 * step + 1e-6).all()  # measured: 0.50
    assert error.mean() < 0.3 * step.mean()  # uniform rounding: 0.25; measured 0.24
    x = torch.randn(3, columns, generator=g)
    x_padded = torch.nn.functional.pad(x, (0, padded - columns))
    assert torch.equal(linear(x, [blocks]), linear(x_padded, [blocks]))
    torch.testing.assert_close(linear(x, [blocks]), reference_linear(x_padded, blocks), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("isa", ["native", "avx2", "portable"])
def test_the_dot_product_peak_counts_the_work_it_times(built, isa):
    """A rate where there is an instruction to time (64 products an AVX-512 VNNI instruction, 32 an
    AVX2 sequence), none on plain C++; rounds scale the work, not the rate."""
    from ltd.kernels.build import dot_products_per_second

    if isa == "avx2" and (platform.machine() not in ("x86_64", "AMD64") or "avx2" not in cpu()[1]):
        pytest.skip("needs an x86 CPU with AVX2")
    module = kernel(isa)
    rate = dot_products_per_second(isa, rounds=2_000_000)
    if module.path() == "portable":
        assert rate is None and module.dot_peak(10) == 0
        return
    # a billion multiply-adds a second is far below any SIMD unit's, and 10^13 far above two cores'
    assert 1e9 < rate < 1e13 * torch.get_num_threads()
