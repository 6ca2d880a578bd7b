"""A GGUF's k-quant weights (Q4_K, Q6_K) kept as blocks, in the order the kernel reads them.

A block is 256 weights of one output row, in 16 groups of 16; each weight is w = a * code - b with
an unsigned code (4 or 6 bits) and a float scale a and offset b per group, derived from the block's
fp16 scales and its 6- or 8-bit sub-block scales exactly as llama.cpp derives them. Repacking moves
codes, never changes a value: the model run is the file fetched, at the same bits per weight (Q4_K
4.625 here against the file's 4.5: its 6-bit sub-scales are stored as bytes).

`reference_linear` computes what the kernel computes (activations quantised per row and block,
exact integer sums) in float64 with torch alone: the kernel's test oracle, and the path where no
compiler is at hand.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

KERNEL_LAYOUT = 1  # the version of the layout below: caches of repacked blocks are keyed by it
BLOCK = 256
GROUPS = 16
FORMATS = {"Q4_K": 0, "Q6_K": 1, "Q4_K_PANELS": 2}  # the last: Q4_K in panels of 16 rows (kernels/panels.cpp)
RAW_BYTES = {"Q4_K": 144, "Q6_K": 210}  # one block in the GGUF file
CODE_BYTES = {"Q4_K": 128, "Q6_K": 192}  # one block's codes here

# Kernel position 64c + 4l + j holds weight 16l + 4c + j: SIMD lane l reads group l in every chunk c.
_c, _l, _j = np.meshgrid(np.arange(4), np.arange(GROUPS), np.arange(4), indexing="ij")
KERNEL_ORDER = (16 * _l + 4 * _c + _j).reshape(-1)


@dataclass
class Blocks:
    """W [rows, columns] as blocks: codes [rows, columns/256, code bytes], sub [rows, columns/256, 16]
    (Q4_K: 8 scales then 8 mins; Q6_K: 16 signed scales), d [rows, columns/256, 2] fp16 (Q4_K: d,
    dmin; Q6_K: d, 0). Q4_K_PANELS (made by kernels.build.panelled, read by the kernel alone):
    codes [rows/16, columns/256, 2048], sub [rows/16, columns/256, 256], d [rows/16, columns/256, 32]."""
    format: str
    codes: torch.Tensor
    sub: torch.Tensor
    d: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        rows = self.codes.shape[0] * (16 if self.format == "Q4_K_PANELS" else 1)
        return rows, self.codes.shape[1] * BLOCK

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.sub, self.d))

    def rows(self, index: torch.Tensor) -> "Blocks":
        return Blocks(self.format, self.codes[index], self.sub[index], self.d[index])


def natural_codes(format: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The GGUF blocks ([n, raw bytes] uint8) as (codes [n, 256] in weight order, sub [n, 16],
    d [n, 2] float16), following llama.cpp's block_q4_K and block_q6_K."""
    n = raw.shape[0]
    if format == "Q4_K":
        from gguf.quants import Q4_K

        d = raw[:, :4].copy().view(np.float16)
        scales, mins = Q4_K.get_scale_min(raw[:, 4:16].copy())
        qs = raw[:, 16:].reshape(n, 4, 32)  # 64 weights per 32 bytes: low nibbles, then high
        codes = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(n, BLOCK)
        return codes, np.concatenate([scales, mins], axis=1).astype(np.uint8), d
    if format == "Q6_K":
        ql, qh = raw[:, :128].reshape(n, 2, 1, 2, 32), raw[:, 128:192].reshape(n, 2, 1, 32)
        scales, d = raw[:, 192:208], raw[:, 208:210].copy().view(np.float16)
        # Per half of 128 weights: 4 runs of 32, from ql's low/high nibbles and qh's 2-bit pairs.
        low = (ql >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1, 1)) & 0x0F  # [n, half, nibble, part, 32]
        high = (qh >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & 0x03  # [n, half, run, 32]
        codes = low.reshape(n, 2, 4, 32) | (high << 4)
        return codes.reshape(n, BLOCK), scales.copy(), np.concatenate([d, np.zeros_like(d)], axis=1)
    raise ValueError(f"no kernel for {format} blocks (Q4_K and Q6_K have one)")


def repack(format: str, raw: np.ndarray, rows: int) -> Blocks:
    """A GGUF tensor's data ([rows, columns / 256 * raw bytes] uint8) as kernel blocks."""
    raw = np.ascontiguousarray(raw).reshape(-1, RAW_BYTES[format])
    return pack(format, *natural_codes(format, raw), rows)


def pack(format: str, codes: np.ndarray, sub: np.ndarray, d: np.ndarray, rows: int) -> Blocks:
    """Blocks from codes [n, 256] in weight order, sub [n, 16] and d [n, 2] float16 (n = rows x blocks)."""
    ordered = codes[:, KERNEL_ORDER].reshape(-1, 4, 64)
    low = ordered & 0x0F
    packed = np.concatenate([low[:, 0] | (low[:, 1] << 4), low[:, 2] | (low[:, 3] << 4)], axis=1)
    if format == "Q6_K":
        high = (ordered >> 4) & 0x03
        packed = np.concatenate([packed, high[:, 0] | (high[:, 1] << 2) | (high[:, 2] << 4) | (high[:, 3] << 6)],
                                axis=1)
    blocks = codes.shape[0] // rows
    return Blocks(format,
                  torch.from_numpy(np.ascontiguousarray(packed, dtype=np.uint8)).view(rows, blocks, -1),
                  torch.from_numpy(np.ascontiguousarray(sub)).view(rows, blocks, GROUPS),
                  torch.from_numpy(np.ascontiguousarray(d)).view(rows, blocks, 2))


def unpacked_codes(blocks: Blocks) -> torch.Tensor:
    """[rows, blocks, 256] codes in weight order."""
    codes = blocks.codes.to(torch.int32)
    chunks = [codes[..., :64] & 0x0F, codes[..., :64] >> 4, codes[..., 64:128] & 0x0F, codes[..., 64:128] >> 4]
    if blocks.format == "Q6_K":
        chunks = [chunk | (((codes[..., 128:] >> (2 * c)) & 0x03) << 4) for c, chunk in enumerate(chunks)]
    ordered = torch.stack(chunks, dim=-2).flatten(-2)  # kernel order
    natural = torch.empty_like(ordered)
    natural[..., torch.from_numpy(KERNEL_ORDER)] = ordered
    return natural


def group_scales(blocks: Blocks) -> tuple[torch.Tensor, torch.Tensor]:
    """a and b ([rows, blocks, 16] float32) of every group: w = a * code - b."""
    d = blocks.d.float()
    if blocks.format == "Q4_K":
        sub = blocks.sub.float()
        a = d[..., :1] * sub[..., :8].repeat_interleave(2, dim=-1)
        return a, d[..., 1:] * sub[..., 8:].repeat_interleave(2, dim=-1)
    a = d[..., :1] * blocks.sub.view(torch.int8).float()
    return a, 32 * a


def dequantize(blocks: Blocks, slice_rows: int = 8192) -> torch.Tensor:
    """W [rows, columns] float32 (made a slice of rows at a time: an embedding has 150k of them)."""
    out = torch.empty(blocks.shape)
    for start in range(0, blocks.shape[0], slice_rows):
        part = blocks.rows(slice(start, start + slice_rows))
        a, b = group_scales(part)
        codes = unpacked_codes(part).float().unflatten(-1, (GROUPS, 16))
        out[start : start + slice_rows] = (a[..., None] * codes - b[..., None]).flatten(1)
    return out


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations [R, K] as the kernel quantises them: per row and block of 256, levels
    round(x * 127 / largest) (half to even) and the scale largest / 127 (1 for an all-zero block)."""
    blocks = x.float().unflatten(-1, (-1, BLOCK))
    largest = blocks.abs().amax(-1, keepdim=True)
    inverse = torch.where(largest > 0, 127.0 / largest, torch.zeros_like(largest))
    scale = torch.where(largest > 0, largest / 127.0, torch.ones_like(largest))
    return torch.round(blocks * inverse), scale


def reference_linear(x: torch.Tensor, blocks: Blocks, slice_rows: int = 4096) -> torch.Tensor:
    """x [R, K] @ W.T as the kernel computes it, in float64 (exact integer sums): [R, rows] float32."""
    levels, scale = quantize_rows(x)  # [R, nb, 256], [R, nb, 1]
    groups = levels.double().unflatten(-1, (GROUPS, 16))  # [R, nb, 16, 16]
    sums = groups.sum(-1)  # [R, nb, 16]
    out = []
    for start in range(0, blocks.shape[0], slice_rows):
        part = blocks.rows(slice(start, start + slice_rows))
        a, b = (t.double() for t in group_scales(part))  # [N, nb, 16]
        codes = unpacked_codes(part).double().unflatten(-1, (GROUPS, 16))  # [N, nb, 16, 16]
        dots = torch.einsum("rbgk,nbgk->rnbg", groups, codes)
        total = (a[None] * dots - b[None] * sums[:, None]) * scale.double()[:, None]
        out.append(total.sum((-1, -2)).float())
    return torch.cat(out, dim=1)


def quantize_q4_k(weight: torch.Tensor, slice_rows: int = 8192) -> Blocks:
    """W [rows, columns] float as Q4_K blocks, its columns padded with zeros to a multiple of 256 (the
    kernel pads the activations alike): for models whose files hold no k-quants, such as a draft
    LM's Q5_0 and Q8_0 matrices. Per sub-block of 32 weights, codes 0..15 span [min(w, 0), max(w)];
    the sub-blocks' scales and offsets are stored in 6 bits against the block's largest, as llama.cpp
    stores them (its own quantiser searches for better ones; this one takes the range as it is)."""
    rows, columns = weight.shape
    padded = -(-columns // BLOCK) * BLOCK
    parts = []
    for start in range(0, rows, slice_rows):
        w = F.pad(weight[start : start + slice_rows].float(), (0, padded - columns)).unflatten(-1, (-1, 8, 32))
        low = w.amin(-1).clamp(max=0)
        scale, offset = (w.amax(-1) - low) / 15, -low  # [n, blocks, 8]
        d = (scale.amax(-1, keepdim=True) / 63).half()
        dmin = (offset.amax(-1, keepdim=True) / 63).half()
        levels = torch.where(d > 0, scale / d.float(), 0).round().clamp(0, 63)
        mins = torch.where(dmin > 0, offset / dmin.float(), 0).round().clamp(0, 63)
        a, b = (d.float() * levels)[..., None], (dmin.float() * mins)[..., None]
        codes = torch.where(a > 0, (w + b) / a, 0).round().clamp(0, 15)
        n = codes.shape[0] * codes.shape[1]
        parts.append(pack("Q4_K", codes.to(torch.uint8).reshape(n, BLOCK).numpy(),
                          torch.cat([levels, mins], -1).to(torch.uint8).reshape(n, GROUPS).numpy(),
                          torch.cat([d, dmin], -1).reshape(n, 2).numpy(), codes.shape[0]))
    return Blocks("Q4_K", *(torch.cat([getattr(p, name) for p in parts]) for name in ("codes", "sub", "d")))
