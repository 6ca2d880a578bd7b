"""ltd's attention kernel (attention.cpp): rotary embedding, cache append and attention, each row on
its own. Equal to torch's attention within float32 rounding, and a row's result independent of the
rows beside it, bit for bit."""
import pytest
import torch
import torch.nn.functional as F

from ltd.kernels.build import kernel
from ltd.models.decoder import rotate

HEADS, KV_HEADS, D, CAPACITY = 6, 2, 32, 400
# Head sizes: 32 runs the kernel's general loop; 64 and 128 (the 0.5B's and the 1.5B's) its register paths.
HEAD_SIZES = [32, 64, 128]


@pytest.fixture(scope="module")
def built():
    module = kernel()
    if module is None:
        pytest.skip("ltd's kernels cannot be built here (no C++ compiler)")
    return module


def inputs(T: int, start: int, seed: int = 0, d: int = D):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(T, (HEADS + 2 * KV_HEADS) * d, generator=g)
    angles = torch.rand(T, d // 2, generator=g) * 6
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    keys, values = torch.randn(KV_HEADS, CAPACITY, d, generator=g), torch.randn(KV_HEADS, CAPACITY, d, generator=g)
    keys[:, start:], values[:, start:] = 0, 0
    return qkv, cos, sin, keys, values


def reference(qkv, cos, sin, keys, values, start, seen):
    """torch: rotate, append, then each row's attention over the positions it sees."""
    T, D = qkv.shape[0], keys.shape[-1]
    q, k, v = qkv.split((HEADS * D, KV_HEADS * D, KV_HEADS * D), dim=-1)
    q = rotate(q.view(T, HEADS, D).transpose(0, 1), cos, sin)
    keys, values = keys.clone(), values.clone()
    keys[:, start : start + T] = rotate(k.view(T, KV_HEADS, D).transpose(0, 1), cos, sin)
    values[:, start : start + T] = v.view(T, KV_HEADS, D).transpose(0, 1)
    end = start + T
    out = F.scaled_dot_product_attention(q[None], keys[None, :, :end], values[None, :, :end], attn_mask=seen,
                                         enable_gqa=True)
    return out[0].transpose(0, 1).reshape(T, HEADS * D), keys, values


@pytest.mark.parametrize("d", HEAD_SIZES)
@pytest.mark.parametrize("T,start", [(1, 0), (1, 17), (5, 20), (9, 40), (3, 333)])
def test_attention_equals_torch(built, T, start, d):
    qkv, cos, sin, keys, values = inputs(T, start, d=d)
    g = torch.Generator().manual_seed(1)
    seen = torch.ones(T, start + T, dtype=torch.bool)
    seen[:, start:] = torch.tril(torch.rand(T, T, generator=g) < 0.5) | torch.eye(T, dtype=torch.bool)
    expected, expected_keys, expected_values = reference(qkv, cos, sin, keys, values, start, seen)
    got = built.attend(qkv, cos, sin, keys, values, start, seen if T > 1 else torch.empty(0, dtype=torch.bool),
                       HEADS, KV_HEADS)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(keys, expected_keys, rtol=1e-6, atol=1e-6)
    assert torch.equal(values, expected_values)


@pytest.mark.parametrize("d", HEAD_SIZES)
def test_a_row_sees_only_what_its_mask_allows(built, d):
    """A row's result depends on the keys it sees and on nothing else: changing every other key and
    value, or the rows beside it, leaves it bit-identical to the row computed alone."""
    T, start = 4, 30
    qkv, cos, sin, keys, values = inputs(T, start, d=d)
    seen = torch.zeros(T, start + T, dtype=torch.bool)
    seen[:, :start:2] = True  # every other cached position
    seen[:, start:] = torch.eye(T, dtype=torch.bool)
    together = built.attend(qkv, cos, sin, keys.clone(), values.clone(), start, seen, HEADS, KV_HEADS)
    for row in range(T):
        alone_keys, alone_values = keys.clone(), values.clone()
        alone_keys[:, 1:start:2] += 5  # positions the row does not see
        alone_values[:, 1:start:2] -= 5
        mask = torch.cat([seen[row, :start], torch.ones(1, dtype=torch.bool)])[None]
        alone = built.attend(qkv[row : row + 1].contiguous(), cos[row : row + 1], sin[row : row + 1], alone_keys,
                             alone_values, start, mask, HEADS, KV_HEADS)
        assert torch.equal(alone[0], together[row])


def test_bad_shapes_are_refused(built):
    qkv, cos, sin, keys, values = inputs(3, 5)
    with pytest.raises(RuntimeError, match="several rows need"):
        built.attend(qkv, cos, sin, keys, values, 5, torch.empty(0, dtype=torch.bool), HEADS, KV_HEADS)
    with pytest.raises(RuntimeError, match="shapes disagree"):
        built.attend(qkv, cos, sin, keys, values, 5, torch.ones(3, 8, dtype=torch.bool), HEADS + 1, KV_HEADS)
