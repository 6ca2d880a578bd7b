"""Q4_K in panels of 16 rows (kernels/panels.cpp): the same sums as the reference, AMX and AVX-512
VNNI bit for bit alike, and a row's result independent of the rows beside it."""
import pytest
import torch

from ltd.kernels.blocks import quantize_q4_k, reference_linear, repack
from ltd.kernels.build import kernel, linear, panelled
from test_gguf_kernel import magnitude, raw_blocks

# (K, N, R): the 1.5B's columns, rows in whole panels, and rows of x across AMX's tiles of 16.
SHAPES = [(256, 16, 1), (1536, 64, 3), (1536, 32, 8), (1536, 16, 17), (8960, 32, 13), (1536, 48, 37)]


@pytest.fixture(scope="module")
def module():
    built = kernel()
    if built is None or not built.panels_built():
        pytest.skip("panels need the kernel built with AVX-512 VNNI")
    return built


def amx(module):
    if not module.panels_amx():
        pytest.skip("needs AMX (a CPU with it, and Linux granting it)")


@pytest.mark.parametrize("K,N,R", SHAPES)
def test_panels_equal_the_reference(module, K, N, R):
    """Exact integer sums per sub-block of 32, then float32: within test_gguf_kernel's bound."""
    torch.manual_seed(1)
    blocks = repack("Q4_K", raw_blocks("Q4_K", N, K, seed=2), N)
    [panels] = panelled([blocks], always=True)
    assert panels.format == "Q4_K_PANELS" and panels.shape == blocks.shape
    x = torch.randn(R, K) * torch.rand(R, 1) * 3
    expected = reference_linear(x, blocks).double()
    for amx_rows in (0, 1):  # VNNI alone; AMX for every call (where there is AMX)
        got = linear(x, [panels], amx_rows=amx_rows)
        assert got.shape == (R, N)
        assert ((got.double() - expected).abs() <= 1e-4 * magnitude(x, blocks)).all()


def test_amx_and_vnni_give_the_same_bits(module):
    """Which engine runs depends on how many rows a call has; what it computes must not."""
    amx(module)
    torch.manual_seed(2)
    blocks = quantize_q4_k(torch.randn(96, 1000))
    [panels] = panelled([blocks], always=True)
    x, norm = torch.randn(37, 1000) * 2, torch.rand(1000) + 0.5
    for rows in (1, 2, 5, 8, 16, 17, 37):
        vnni = linear(x[:rows], [panels], amx_rows=0, norm=norm, eps=1e-6)
        assert torch.equal(linear(x[:rows], [panels], amx_rows=1, norm=norm, eps=1e-6), vnni)


def test_a_row_alone_equals_the_row_in_a_batch(module):
    """With the engines chosen as decoding chooses them (one row on VNNI, a tree on AMX)."""
    torch.manual_seed(3)
    blocks = repack("Q4_K", raw_blocks("Q4_K", 304, 1536, seed=4), 304)
    [panels] = panelled([blocks], always=True)
    x = torch.randn(21, 1536)
    x[5] = 0  # an all-zero row: scale 1, nothing divided by zero
    batch = linear(x, [panels])
    for rows in (2, 7, 8, 16, 17):
        assert torch.equal(linear(x[:rows], [panels]), batch[:rows])
    for r in range(21):
        assert torch.equal(linear(x[r : r + 1], [panels])[0], batch[r])
    assert torch.equal(batch[5], torch.zeros(304))


def test_panels_stack_with_other_parts(module):
    """q and k in panels, v in Q6_K lanes, as one call: the same as three calls; a part that does not
    fill whole panels leaves every part as it was."""
    torch.manual_seed(5)
    parts = [repack(f, raw_blocks(f, n, 1536, seed=n), n) for f, n in (("Q4_K", 64), ("Q4_K", 32), ("Q6_K", 16))]
    mixed = panelled(parts, always=True)
    assert [p.format for p in mixed] == ["Q4_K_PANELS", "Q4_K_PANELS", "Q6_K"]
    x = torch.randn(9, 1536)
    together = linear(x, mixed)
    assert torch.equal(together, torch.cat([linear(x, [p]) for p in mixed], dim=1))
    assert ((together.double() - torch.cat([reference_linear(x, p) for p in parts], 1)).abs() <=
            1e-4 * torch.cat([magnitude(x, p) for p in parts], 1)).all()
    ragged = parts[:1] + [repack("Q4_K", raw_blocks("Q4_K", 24, 1536), 24)]
    assert panelled(ragged, always=True) == ragged
