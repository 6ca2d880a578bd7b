"""The target model re-implemented for decoding: llama, qwen2 and qwen3 families.

One `forward` serves prefill (causal), single-token steps and verification of a draft tree (an
explicit attention mask over the cache), and the same for a batch of left-padded rows (bulk work:
a drafter's training data). The KV cache is preallocated; after verification the accepted path is
compacted in place. Projections are fused (q|k|v, gate|up): fewer, larger matmuls mean less Python
per token. On CPU they run through oneDNN rather than the default BLAS: on a 2-core AVX-512 AMD
EPYC it verifies 16 tokens in 1.7x the time of one, the default path in 2.4x. (On a 2-core AVX2
EPYC the matmuls of a few rows are compute-bound and 16 tokens cost nearly 3x one.)
"""
import functools
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ltd.core.errors import LtdError
from ltd.kernels.blocks import Blocks, dequantize, quantize_q4_k
from ltd.kernels.build import AMX_ROWS, kernel, linear as gguf_linear, panelled, stacked_layers
from ltd.models.layouts import arrange, fastest_layout

# What distinguishes the families inside a decoder layer.
FAMILIES = {
    "llama": dict(qkv_bias=False, qk_norm=False),
    "qwen2": dict(qkv_bias=True, qk_norm=False),
    "qwen3": dict(qkv_bias=False, qk_norm=True),
}


@dataclass(frozen=True)
class DecoderSpec:
    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_eps: float
    qkv_bias: bool
    qk_norm: bool

    @classmethod
    def from_hf_config(cls, config) -> "DecoderSpec":
        family = config.model_type
        if family not in FAMILIES:
            raise LtdError(f"unsupported architecture {family!r}; ltd decodes {sorted(FAMILIES)}")
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(
            family=family,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_heads=config.num_attention_heads,
            num_kv_heads=config.num_key_value_heads,
            head_dim=head_dim,
            rms_eps=config.rms_norm_eps,
            **FAMILIES[family],
        )


def cpu_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, None, attr="none", scalars=[None], algorithm="")


def pick_linear(device: torch.device, dtype: torch.dtype):
    """oneDNN's linear on CPU where torch has it, else the default. Weights stay [out, in]."""
    if device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available():
        return cpu_linear
    return F.linear


QUANTIZE = ("int8", "gguf", "q4_k")
# What a quantisation is called in the identities of models and drafters (the keys of traces, cost
# models, tuned trees, policies): its numerics, not only its name. "int8-rows": activations
# quantised per row (below); the first int8 path quantised a whole call on one scale, and what was
# derived from a drafter on it is not reused. "gguf-blocks": the file's own k-quant blocks, run by
# ltd.kernels with activations quantised per row and block of 256. "q4k-blocks": the dense weights
# requantised by ltd.kernels.blocks.quantize_q4_k, run by the same kernel.
QUANTIZE_IDENTITY = {"int8": "int8-rows", "gguf": "gguf-blocks", "q4_k": "q4k-blocks"}

# Activations take 7 bits: as unsigned 1..127 (zero point 64), two products summed in 16 bits cannot
# saturate on a CPU without VNNI (fbgemm's reduce_range, which the first int8 path used too).
ACTIVATION_LEVELS, ACTIVATION_ZERO = 63, 64


def int8_weight(weight: torch.Tensor):
    """[out, in] float weights as int8, one scale per output row, packed for fbgemm's int8 kernels."""
    scale = (weight.abs().amax(1).float() / 127).clamp(min=1e-12)
    with warnings.catch_warnings():  # torch marks its quantized tensors deprecated; 2.13 (pinned) has them
        warnings.simplefilter("ignore")
        q = torch.quantize_per_channel(weight.float(), scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(q, None)


def int8_linear(x: torch.Tensor, packed) -> torch.Tensor:
    """x (float32, any leading dims) times an int8 weight. Each row (token) of x is quantised on a
    scale of its own (its largest magnitude / 63), fbgemm sums the integer products exactly in int32
    and scales them to float by the weight row's scale, then by the row's: a row's output depends on
    that row alone, not on the rows sharing the call. (fbgemm's dynamic linear quantises a call on
    one scale; then the engine, feeding a drafter several tokens at once, and a replay, one at a
    time, would see different proposals.) The rows arrive as whole numbers, so that fbgemm's own
    quantisation (scale 1) is exact. The int8 Qwen2.5-Coder-0.5B on the 2-core AVX-512 EPYC (2
    threads) absorbs 1 to 13 tokens or drafts a level within 10 % of the dynamic linear's time;
    torch._int_mm (oneDNN's int8 GEMM, weights unpacked) took 1.3-1.6x it, oneDNN's
    qlinear_pointwise (packed, unsigned activations) 1.3-1.4x."""
    scale = x.abs().amax(-1, keepdim=True).div_(ACTIVATION_LEVELS).clamp_(min=torch.finfo(torch.float32).tiny)
    levels = (x / scale).round_()
    return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(levels, 1.0, ACTIVATION_ZERO,
                                                                             packed).mul_(scale)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """In float32 whatever x's dtype, back to it before the weight: transformers' own numerics, so
    that a half-precision decoder stays as close to its reference as transformers is."""
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, in the half-split convention transformers uses for these families."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def rope_tables(config, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin for positions 0..length-1, from transformers' own rotary class, so every rope
    variant it knows (llama3 scaling, yarn, ...) is computed exactly as it computes it."""
    import transformers

    family = config.model_type
    module = getattr(transformers.models, family)
    rotary_cls = getattr(getattr(module, f"modeling_{family}"), f"{family.capitalize()}RotaryEmbedding")
    rotary = rotary_cls(config)
    positions = torch.arange(length)[None]
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
    return cos[0], sin[0]


# The attention kernel's `seen` for one token that sees the whole cache (made once, not per layer).
SEES_ALL = torch.empty(0, dtype=torch.bool)


class KVCache:
    """Keys and values of every layer for `batch` sequences (rows) of one shared length,
    preallocated to `capacity` positions. Decoding uses one row; a batch of left-padded rows
    serves bulk work such as drafter training data.

    Kept in float32 whatever the model's dtype, and attention runs in float32: in bfloat16 the
    attention kernels round differently for one query than for a tree of them, and a verify pass
    then disagrees with autoregressive decoding wherever the target's top two logits are close."""

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, capacity: int, device: torch.device,
                 batch: int = 1):
        shape = (num_layers, batch, num_kv_heads, capacity, head_dim)
        self.batch = batch
        self.k = torch.zeros(shape, dtype=torch.float32, device=device)
        self.v = torch.zeros(shape, dtype=torch.float32, device=device)
        self.capacity = capacity
        self.length = 0

    @property
    def room(self) -> int:
        """Positions still free."""
        return self.capacity - self.length

    def keep(self, start: int, positions: torch.Tensor) -> None:
        """Keep the entries at `positions` (ascending, all >= start), moved to start, start+1, ...

        Verification appends the whole draft tree; only the accepted path survives, compacted."""
        n = positions.numel()
        if n and not (positions[0] == start and positions[-1] == start + n - 1):
            self.k[:, :, :, start : start + n] = self.k[:, :, :, positions]
            self.v[:, :, :, start : start + n] = self.v[:, :, :, positions]
        self.length = start + n

    def attention_mask(self, T: int, tree_mask: torch.Tensor | None, tree_start: int | None) -> torch.Tensor | None:
        """The [T, length + T] mask for T tokens about to be appended (None: attend to everything).

        Without `tree_mask` the new tokens are causal. With it, they see every cached position before
        `tree_start` (default: the current length) and, from there on, what `tree_mask` allows."""
        start, device = self.length, self.k.device
        end = start + T
        if end > self.capacity:
            raise LtdError(f"context of {end} tokens exceeds the limit of {self.capacity}")
        if tree_mask is not None:
            first = start if tree_start is None else tree_start
            mask = torch.ones(T, end, dtype=torch.bool, device=device)
            mask[:, first:] = tree_mask
            return mask
        if T > 1:
            return torch.arange(end, device=device)[None, :] <= torch.arange(start, end, device=device)[:, None]
        return None

    @staticmethod
    def seen_keys(mask: torch.Tensor) -> list:
        """Per row of a [T, length + T] mask, the cache positions it sees: a slice where they are the
        prefix and a chain (read as decoding alone reads them), else their indices in order."""
        rows = []
        for row in mask:
            seen = row.nonzero().squeeze(1)
            rows.append(slice(0, seen.numel()) if int(seen[-1]) == seen.numel() - 1 else seen)
        return rows

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None, rows_apart: list | None = None) -> torch.Tensor:
        """Store k, v ([B, kv_heads, T, d]) after the cached prefix and attend q ([B, heads, T, d]) to
        it all; `mask` is [T, length + T] or, per row, [B, 1, T, length + T].

        `rows_apart` (a tree: `seen_keys(mask)`): each row attends on its own to exactly the keys it
        sees, in cache order, as decoding that token alone would (one query, no mask). Attention
        kernels sum in another order for one query than for several, and a quantised decoder turns
        such last-bit differences into different activation levels: this keeps a verified row's
        logits bit-identical to autoregressive decoding's.

        Returns [B, T, heads * d]. Does not advance `length`: the caller does once all layers ran."""
        B, _, T, _ = q.shape
        start, end = self.length, self.length + T
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        keys, values, gqa = self.k[layer, :, :, :end], self.v[layer, :, :, :end], q.shape[1] != k.shape[1]
        if not rows_apart:
            out = F.scaled_dot_product_attention(q.float(), keys, values, attn_mask=mask, enable_gqa=gqa)
            return out.to(q.dtype).transpose(1, 2).reshape(B, T, -1)
        out = torch.empty_like(q, dtype=torch.float32)
        for t, seen in enumerate(rows_apart):
            row_keys, row_values = keys[:, :, seen], values[:, :, seen]
            out[:, :, t : t + 1] = F.scaled_dot_product_attention(q[:, :, t : t + 1].float(), row_keys, row_values,
                                                                  enable_gqa=gqa)
        return out.to(q.dtype).transpose(1, 2).reshape(B, T, -1)

    def attend_rows(self, rows_kernel, layer: int, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                    mask: torch.Tensor | None, heads: int) -> torch.Tensor:
        """What `attend` does for one sequence (the rotary embedding too: `qkv` [T, (heads + 2
        kv_heads) * d] as projected), each row by ltd's attention kernel on its own, to the keys
        `mask` ([T, length + T]; None: all) lets it see: [T, heads * d]. Every row runs the same
        loops whatever the others, so a tree's rows equal decoding them alone, bit for bit."""
        seen = mask if mask is not None else SEES_ALL
        return rows_kernel.attend(qkv.contiguous(), cos=cos, sin=sin, keys=self.k[layer, 0], values=self.v[layer, 0],
                                  start=self.length, seen=seen, heads=heads, kv_heads=self.k.shape[2])


@dataclass
class Layer:
    input_norm: torch.Tensor
    qkv: torch.Tensor  # [(heads + 2 kv_heads) * head_dim, hidden]
    qkv_bias: torch.Tensor | None
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    o: torch.Tensor
    post_norm: torch.Tensor
    gate_up: torch.Tensor  # [2 * intermediate, hidden]
    down: torch.Tensor


class Placement:
    """Takes a model's weights out of `state` as they are placed, on `device` in `dtype`, the matrices
    as `quantize` has them: a joined copy (q, k, v) does not live beside its parts, and a GPU
    model's weights are never held twice."""

    def __init__(self, state: dict, device: torch.device, dtype: torch.dtype, quantize: str | None, linear):
        self.state, self.device, self.dtype, self.quantize, self.linear = state, device, dtype, quantize, linear
        self.layouts: dict[tuple[int, int], str] = {}

    def tensor(self, *names) -> torch.Tensor:
        tensors = [dequantize(t) if isinstance(t, Blocks) else t for t in (self.state.pop(n) for n in names)]
        tensors = [t.to(self.device, self.dtype) for t in tensors]
        return torch.cat(tensors) if len(tensors) > 1 else tensors[0].contiguous()

    def blocks(self, *names) -> list[Blocks]:
        parts = [self.state.pop(n) for n in names]
        if not all(isinstance(p, Blocks) for p in parts):
            raise LtdError(f"quantize=gguf needs GGUF blocks for {', '.join(names)}")
        return panelled(parts)

    def matrix(self, *names):
        if self.quantize == "gguf":
            return self.blocks(*names)
        weight = self.tensor(*names)
        if self.quantize == "int8":
            return int8_weight(weight)
        if self.quantize == "q4_k":
            return panelled([quantize_q4_k(weight)])
        if self.linear is not cpu_linear:
            return weight
        # [out, in] in shape; in memory as oneDNN reads it fastest on this machine.
        shape = tuple(weight.shape)
        if shape not in self.layouts:
            self.layouts[shape] = fastest_layout(shape, cpu_linear)
        return arrange(weight, self.layouts[shape])

    def embedding_and_output(self):
        """(embedding, output matrix for one row, output matrix for several rows)."""
        tied = "lm_head.weight" not in self.state
        if self.quantize == "gguf":
            # The embedding is read a row at a time, never streamed: dequantised once.
            embedding = self.state["model.embed_tokens.weight"]
            output = self.blocks("model.embed_tokens.weight" if tied else "lm_head.weight")
            self.state.pop("model.embed_tokens.weight", None)
            embed = dequantize(embedding) if isinstance(embedding, Blocks) else embedding.to(self.device, self.dtype)
            return embed, output, output
        embed = self.tensor("model.embed_tokens.weight")
        output = embed if tied else self.tensor("lm_head.weight")
        if self.quantize == "q4_k":
            head = panelled([quantize_q4_k(output)])
            return embed, head, head
        lm_head = int8_weight(output) if self.quantize == "int8" else output.t().contiguous().t()
        # oneDNN reads the wide output matrix fastest [in, out] for one row, [out, in] for several
        # (half the time at 16 to 64 rows here): verification and batches get their own copy.
        return embed, lm_head, output if self.linear is cpu_linear else lm_head


class Decoder:
    """A causal LM with its own KV cache. `forward` appends tokens to the cache and returns logits."""

    def __init__(self, spec: DecoderSpec, state: dict[str, torch.Tensor], cos: torch.Tensor, sin: torch.Tensor,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", quantize: str | None = None):
        """`quantize="int8"`: the linear weights in int8 (a quarter of the bytes to stream per token;
        for a drafter, whose guesses need not be exact), on the CPU in float32; the activations
        quantised per token (int8_linear), so a token's logits do not depend on the tokens fed with
        it. `quantize="gguf"`: the matrices in `state` are a GGUF's own blocks (ltd.kernels.Blocks,
        from ltd.models.gguf_weights), run by the GGUF kernel; the embedding is dequantised (it is
        read a row at a time, never streamed). `quantize="q4_k"`: the float matrices requantised to
        Q4_K blocks (ltd.kernels.blocks.quantize_q4_k) and run by the same kernel. The weights are taken out of `state` (the caller's
        dict is emptied of them)."""
        self.spec = spec
        self.dtype = dtype
        self.device = torch.device(device)
        if quantize is not None and (quantize not in QUANTIZE or self.device.type != "cpu" or dtype != torch.float32):
            raise LtdError(f"quantize must be one of {', '.join(QUANTIZE)} (a CPU path, in float32), got {quantize!r}")
        self.linear = ({"int8": int8_linear, "gguf": gguf_linear, "q4_k": gguf_linear}.get(quantize)
                       or pick_linear(self.device, dtype))
        # A quantised target's tree rows attend one by one (KVCache.attend); a drafter turns it off.
        self.exact_trees = quantize is not None
        self.quantize = quantize
        self.max_positions = cos.shape[0]
        self.cos, self.sin = cos.to(self.device, dtype), sin.to(self.device, dtype)

        place = Placement(state, self.device, dtype, quantize, self.linear)
        w, matrix = place.tensor, place.matrix
        self.embed, self.lm_head, self.lm_head_rows = place.embedding_and_output()
        self.final_norm = w("model.norm.weight")
        self.layers = []
        for i in range(spec.num_layers):
            p = f"model.layers.{i}."
            attn = [p + f"self_attn.{n}_proj" for n in "qkv"]
            self.layers.append(Layer(
                input_norm=w(p + "input_layernorm.weight"),
                qkv=matrix(*[a + ".weight" for a in attn]),
                qkv_bias=w(*[a + ".bias" for a in attn]) if spec.qkv_bias else None,
                q_norm=w(p + "self_attn.q_norm.weight") if spec.qk_norm else None,
                k_norm=w(p + "self_attn.k_norm.weight") if spec.qk_norm else None,
                o=matrix(p + "self_attn.o_proj.weight"),
                post_norm=w(p + "post_attention_layernorm.weight"),
                gate_up=matrix(p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"),
                down=matrix(p + "mlp.down_proj.weight"),
            ))
        self.cache: KVCache | None = None

    @classmethod
    def from_hf(cls, config, state: dict[str, torch.Tensor], max_positions: int | None = None,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                quantize: str | None = None) -> "Decoder":
        spec = DecoderSpec.from_hf_config(config)
        length = min(max_positions or config.max_position_embeddings, config.max_position_embeddings)
        cos, sin = rope_tables(config, length)
        return cls(spec, state, cos, sin, dtype=dtype, device=device, quantize=quantize)

    def weights(self, norms: bool = True) -> list:
        """What one token reads: every layer's matrices (and norms), then the final norm and the output
        matrix (the embedding row it reads is negligible). A matrix is a tensor, int8 packed weights
        or a list of GGUF block parts."""
        names = ("input_norm", "qkv", "o", "post_norm", "gate_up", "down") if norms else ("qkv", "o", "gate_up", "down")
        return [getattr(layer, name) for layer in self.layers for name in names] + \
            ([self.final_norm] if norms else []) + [self.lm_head]

    def weight_bytes(self) -> int:
        """Bytes of weights one token streams through."""
        def size(weight) -> int:
            if isinstance(weight, list):  # GGUF blocks
                return sum(part.nbytes() for part in weight)
            if isinstance(weight, torch.Tensor):
                return weight.numel() * weight.element_size()
            unpacked = torch.ops.quantized.linear_unpack(weight)[0]  # int8: one byte each, plus a scale a row
            return unpacked.numel() + 4 * unpacked.shape[0]

        return sum(map(size, self.weights()))

    def multiply_adds(self) -> int:
        """Multiply-adds one token costs in the matrices: one a weight (on blocks, padded columns too:
        the kernel multiplies them); attention over the context is not counted."""
        def count(weight) -> int:
            if isinstance(weight, list):  # GGUF blocks
                return sum(part.shape[0] * part.shape[1] for part in weight)
            if isinstance(weight, torch.Tensor):
                return weight.numel()
            return torch.ops.quantized.linear_unpack(weight)[0].numel()

        return sum(map(count, self.weights(norms=False)))

    # -- cache ---------------------------------------------------------------------------------
    def reset(self, capacity: int | None = None, batch: int = 1) -> None:
        capacity = capacity or self.max_positions
        if self.cache is None or self.cache.capacity != capacity or self.cache.batch != batch:
            spec = self.spec
            self.cache = KVCache(spec.num_layers, spec.num_kv_heads, head_dim=spec.head_dim, capacity=capacity,
                                 device=self.device, batch=batch)
        self.cache.length = 0

    @property
    def length(self) -> int:
        return self.cache.length

    # -- forward -------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None,
                tree_mask: torch.Tensor | None = None, tree_start: int | None = None,
                feature_layers: tuple[int, ...] = (), last_only: bool = False,
                valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Append `tokens` ([T] int64) to the cache and return (logits, features).

        `logits` is [T, vocab], or [1, vocab] for the last token with `last_only` (prefill).
        Without `tree_mask` the new tokens attend causally. With it ([T, length + T - tree_start]
        bool, True = may attend), they see the cached prefix before `tree_start` and what the mask
        allows after it; `positions` then gives their rotary positions (prefix + depth in the tree).
        `features` concatenates, in the order asked, the hidden states entering `feature_layers`
        (layer `num_layers`: the last layer's output, before the final norm).

        A batch: `tokens` [B, T] for the B rows of a cache made by `reset(capacity, batch=B)`, left-
        padded to the shared length; `valid` ([B, length + T] bool) marks the real tokens, which
        attend causally to their own row's real tokens; `positions` ([B, T]) are their rotary
        positions. Logits and features then gain the leading batch dimension.
        """
        spec, cache = self.spec, self.cache
        batched = tokens.dim() == 2
        B, T = tokens.shape if batched else (1, tokens.numel())
        mask = cache.attention_mask(T, tree_mask, tree_start)
        # Quantised activations turn attention's last-bit differences into different levels: each row
        # attends on its own there, by ltd's attention kernel (every row alike, trees or not) or,
        # without one, a tree's rows one torch call each (KVCache.attend).
        # (A drafter on blocks takes the kernel too: it is faster than torch's for a few rows.)
        exact = self.exact_trees and not batched
        rows_kernel = kernel() if exact or (self.quantize in ("gguf", "q4_k") and not batched) else None
        rows_apart = (cache.seen_keys(mask) if exact and rows_kernel is None and tree_mask is not None and T > 1
                      else None)
        if positions is None:
            positions = torch.arange(cache.length, cache.length + T, device=self.device)
        cos, sin = self.cos[positions], self.sin[positions]
        if batched:
            end = cache.length + T
            causal = mask if mask is not None else torch.ones(T, end, dtype=torch.bool, device=self.device)
            keys = valid[:, None, :end].expand(B, T, end).clone()
            # Padding attends to itself: no row without a key, no NaN to leak into real rows.
            keys[:, :, cache.length :] |= torch.eye(T, dtype=torch.bool, device=self.device)
            mask = (causal & keys)[:, None]  # [B, 1, T, end]
            cos, sin = cos[:, None], sin[:, None]

        captured = {}
        x = self.run_layers(self.embed[tokens].view(B, T, -1), cos=cos, sin=sin, mask=mask,
                            feature_layers=feature_layers, captured=captured, rows_apart=rows_apart,
                            rows_kernel=rows_kernel)
        cache.length += T

        if last_only:
            x = x[:, -1:]
        head = self.lm_head if x.shape[0] * x.shape[1] == 1 else self.lm_head_rows
        logits = self.normed(x, self.final_norm, head)
        features = torch.cat([captured[i] for i in feature_layers], dim=-1) if feature_layers else None
        if not batched:
            logits, features = logits[0], (features[0] if features is not None else None)
        return logits, features

    __call__ = forward

    def run_layers(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                   feature_layers: tuple[int, ...], captured: dict, rows_apart: list | None,
                   rows_kernel) -> torch.Tensor:
        """x ([1 or B, T, hidden]) through every layer (`block`), the hidden states entering
        `feature_layers` put in `captured`. With ltd's kernels (`rows_kernel`: one sequence) and no
        features asked, in one call (`stacked`)."""
        stacked = self.stacked if rows_kernel is not None and not feature_layers else None
        if stacked is not None:  # the same kernels, in one call
            return stacked.forward(x[0], cos=cos, sin=sin, keys=self.cache.k, values=self.cache.v,
                                   start=self.cache.length, seen=mask if mask is not None else SEES_ALL,
                                   amx_rows=AMX_ROWS)[None]
        for i, layer in enumerate(self.layers):
            if i in feature_layers:
                captured[i] = x
            x = self.block(i, layer, x=x, cos=cos, sin=sin, mask=mask, rows_apart=rows_apart, rows_kernel=rows_kernel)
        if self.spec.num_layers in feature_layers:
            captured[self.spec.num_layers] = x
        return x

    @functools.cached_property
    def stacked(self):
        """The layers as the kernel's `Layers` (kernels/layers.cpp: one call for all of them, the
        same bits as `block`'s loop), where the matrices are blocks without q/k norms; else None."""
        if self.linear is not gguf_linear or self.layers[0].q_norm is not None:
            return None
        return stacked_layers(self.layers, self.spec.num_heads, self.spec.num_kv_heads, self.spec.rms_eps)

    def block(self, i: int, layer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
              mask: torch.Tensor | None, rows_apart: list | None = None, rows_kernel=None) -> torch.Tensor:
        """Layer `i`: attention over the cache (the new keys and values appended), then the MLP,
        each added to the residual stream `x` ([B, T, hidden]). `rows_kernel`: ltd's compiled
        kernels, whose `attend` computes each row on its own (one sequence)."""
        spec, linear = self.spec, self.linear
        B, T, _ = x.shape
        nh, nkv, d = spec.num_heads, spec.num_kv_heads, spec.head_dim
        qkv = self.normed(x, layer.input_norm, layer.qkv)
        if layer.qkv_bias is not None:
            qkv = qkv + layer.qkv_bias
        q, k, v = qkv.split((nh * d, nkv * d, nkv * d), dim=-1)
        if rows_kernel is not None:
            if layer.q_norm is not None:
                q, k = (rms_norm(t.unflatten(-1, (-1, d)), norm, spec.rms_eps).flatten(-2)
                        for t, norm in ((q, layer.q_norm), (k, layer.k_norm)))
                qkv = torch.cat((q, k, v), dim=-1)
            attn = self.cache.attend_rows(rows_kernel, i, qkv=qkv[0], cos=cos, sin=sin, mask=mask, heads=nh)
            return self.mlp(layer, x + linear(attn[None], layer.o))
        q = q.view(B, T, nh, d).transpose(1, 2)
        k = k.view(B, T, nkv, d).transpose(1, 2)
        v = v.view(B, T, nkv, d).transpose(1, 2)
        if layer.q_norm is not None:
            q = rms_norm(q, layer.q_norm, spec.rms_eps)
            k = rms_norm(k, layer.k_norm, spec.rms_eps)
        attn = self.cache.attend(i, rotate(q, cos, sin), k=rotate(k, cos, sin), v=v, mask=mask, rows_apart=rows_apart)
        return self.mlp(layer, x + linear(attn, layer.o))

    def mlp(self, layer, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.normed(x, layer.post_norm, layer.gate_up).chunk(2, dim=-1)
        return x + self.linear(F.silu(gate) * up, layer.down)

    def normed(self, x: torch.Tensor, norm: torch.Tensor, matrix) -> torch.Tensor:
        """linear(rms_norm(x, norm), matrix); on blocks the kernel normalises as it quantises."""
        if self.linear is gguf_linear:
            return gguf_linear(x, matrix, norm=norm, eps=self.spec.rms_eps)
        return self.linear(rms_norm(x, norm, self.spec.rms_eps), matrix)
