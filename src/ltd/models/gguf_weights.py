"""A GGUF's tensors under transformers' names, its k-quant matrices kept as the kernel's blocks.

What `Decoder(quantize="gguf")` runs: the file's own 4- and 6-bit weights (ltd.kernels), not a
dequantised copy. Norms and biases (float32 in the file) become tensors. Llama GGUFs store the rows
of q and k interleaved for llama.cpp's rotary embedding; they are put back in transformers' order
(moving rows moves whole blocks: no value changes).
"""
import re

import numpy as np
import torch

from ltd.core.errors import LtdError
from ltd.kernels.blocks import RAW_BYTES, Blocks, repack

# GGUF name (after blk.<i>.) -> transformers' name (after model.layers.<i>.)
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight"}


def hf_name(name: str) -> str | None:
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    match = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
    if match and match.group(2) in LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{LAYER_NAMES[match.group(2)]}"
    return None


def unpermute_rows(rows: int, heads: int) -> torch.Tensor:
    """The row order that undoes llama.cpp's interleaving of q or k rows (transformers'
    reverse_permute_weights, as an index)."""
    return torch.arange(rows).view(heads, rows // heads // 2, 2).transpose(1, 2).reshape(-1)


def read_blocks(path, architecture: str, heads: int, kv_heads: int) -> dict[str, torch.Tensor | Blocks]:
    """Every tensor of the GGUF at `path` the decoder needs: Blocks for Q4_K and Q6_K matrices,
    float32 tensors for the rest. A matrix in another quantisation is one line."""
    from gguf import GGUFReader

    state: dict[str, torch.Tensor | Blocks] = {}
    for tensor in GGUFReader(path).tensors:
        name = hf_name(tensor.name)
        if name is None:
            continue
        kind = tensor.tensor_type.name
        rows = int(tensor.shape[-1]) if len(tensor.shape) > 1 else 1
        if kind in RAW_BYTES:
            value = repack(kind, np.asarray(tensor.data), rows)
        elif kind in ("F32", "F16", "BF16") and len(tensor.shape) == 1:
            value = torch.from_numpy(np.asarray(tensor.data, dtype=np.float32).copy())
        else:
            raise LtdError(f"{tensor.name} in {path.name} is {kind}: the GGUF kernel runs Q4_K and Q6_K matrices "
                           f"(model.quantize=null decodes a dequantised copy instead)")
        if architecture == "llama" and tensor.tensor_type.name in RAW_BYTES and name.endswith(("q_proj.weight",
                                                                                                "k_proj.weight")):
            value = value.rows(unpermute_rows(rows, heads if "q_proj" in name else kv_heads))
        state[name] = value
    return state
