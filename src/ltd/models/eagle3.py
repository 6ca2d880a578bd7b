"""The EAGLE-3 draft head, in the official checkpoint layout.

The head reads three target hidden states (low, mid, high layer) fused by `fc`, pairs the feature
of position i with the embedding of token i+1, and runs one decoder layer whose attention input
is [embedding | feature] (2 x hidden wide). While drafting deeper than the target has verified, it
feeds back its own output hidden state instead of the target's feature. Its output head covers a
reduced draft vocabulary; `d2t[i]` is the offset from draft token i to its target id, `t2d` marks
the target tokens that have a draft id.
"""
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ltd.core.errors import LtdError, reason
from ltd.models.decoder import KVCache, pick_linear, rms_norm, rope_tables, rotate
from ltd.models.proposals import Proposals, TreeSlots, top_k_entropy
from ltd.models.targets import is_path

ARCHITECTURE = "LlamaForCausalLMEagle3"


def eagle3_feature_layers(num_layers: int) -> tuple[int, int, int]:
    """The target layers whose inputs EAGLE-3 fuses: low, middle and high."""
    return (2, num_layers // 2, num_layers - 3)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        hidden, d = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(2 * hidden, config.num_attention_heads * d, bias=False)
        self.k_proj = nn.Linear(2 * hidden, config.num_key_value_heads * d, bias=False)
        self.v_proj = nn.Linear(2 * hidden, config.num_key_value_heads * d, bias=False)
        self.o_proj = nn.Linear(config.num_attention_heads * d, hidden, bias=False)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, h: torch.Tensor, linear=F.linear) -> torch.Tensor:
        return linear(F.silu(linear(h, self.gate_proj.weight)) * linear(h, self.up_proj.weight), self.down_proj.weight)


class MidLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        eps = config.rms_norm_eps
        self.hidden_norm = RMSNorm(config.hidden_size, eps)
        self.input_layernorm = RMSNorm(config.hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps)
        self.self_attn = Attention(config)
        self.mlp = MLP(config)


def head_config(target_config, draft_vocab_size: int, **overrides):
    """An EAGLE-3 head config for a target: one layer of the target's shape, the draft vocabulary."""
    from transformers import LlamaConfig

    fields = dict(
        hidden_size=target_config.hidden_size,
        intermediate_size=target_config.intermediate_size,
        num_attention_heads=target_config.num_attention_heads,
        num_key_value_heads=target_config.num_key_value_heads,
        head_dim=getattr(target_config, "head_dim", None)
        or target_config.hidden_size // target_config.num_attention_heads,
        rms_norm_eps=target_config.rms_norm_eps,
        vocab_size=target_config.vocab_size,
        max_position_embeddings=target_config.max_position_embeddings,
        rope_parameters=dict(target_config.rope_parameters),
        num_hidden_layers=1,
        target_hidden_size=target_config.hidden_size,
    )
    fields.update(overrides)
    config = LlamaConfig(**fields)
    config.draft_vocab_size = draft_vocab_size
    config.architectures = [ARCHITECTURE]
    return config


class Eagle3Head(nn.Module):
    """Parameters named as in the official checkpoints: fc, midlayer.*, norm, lm_head, d2t, t2d."""

    def __init__(self, config):
        super().__init__()
        if config.draft_vocab_size > config.vocab_size:
            raise LtdError(
                f"draft vocabulary ({config.draft_vocab_size}) is larger than the target's ({config.vocab_size})"
            )
        self.config = config
        hidden = config.hidden_size
        target_hidden = getattr(config, "target_hidden_size", None) or hidden
        self.fc = nn.Linear(3 * target_hidden, hidden, bias=False)
        self.midlayer = MidLayer(config)
        self.norm = RMSNorm(hidden, config.rms_norm_eps)
        self.lm_head = nn.Linear(hidden, config.draft_vocab_size, bias=False)
        # Until a vocabulary is chosen from data, the draft vocabulary is the first target ids.
        self.register_buffer("d2t", torch.zeros(config.draft_vocab_size, dtype=torch.long))
        t2d = torch.zeros(config.vocab_size, dtype=torch.bool)
        t2d[: config.draft_vocab_size] = True
        self.register_buffer("t2d", t2d)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)

    def draft_to_target(self, draft_ids: torch.Tensor) -> torch.Tensor:
        return draft_ids + self.d2t[draft_ids]

    def set_vocabulary(self, target_ids: torch.Tensor) -> None:
        """Make the draft vocabulary the given target ids (sorted ascending, as EAGLE-3 does)."""
        target_ids = target_ids.sort().values
        self.d2t.copy_(target_ids - torch.arange(target_ids.numel()))
        self.t2d.zero_()
        self.t2d[target_ids] = True

    def layer(self, hidden: torch.Tensor, embeds: torch.Tensor, cache: KVCache, cos, sin, mask, linear=F.linear):
        """One step of the decoder layer over T positions; returns the output hidden states [T, H]."""
        layer, config = self.midlayer, self.config
        T, d = hidden.shape[0], config.head_dim
        x = torch.cat((layer.input_layernorm(embeds), layer.hidden_norm(hidden)), dim=-1)
        attn = layer.self_attn
        q = linear(x, attn.q_proj.weight).view(T, -1, d).transpose(0, 1)
        k = linear(x, attn.k_proj.weight).view(T, -1, d).transpose(0, 1)
        v = linear(x, attn.v_proj.weight).view(T, -1, d).transpose(0, 1)
        out = cache.attend(0, rotate(q, cos, sin)[None], rotate(k, cos, sin)[None], v[None], mask)[0]
        hidden = hidden + linear(out, attn.o_proj.weight)
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden), linear)

    # -- checkpoint layout ---------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(directory)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, directory / "model.safetensors")

    @classmethod
    def load(cls, source: str | Path) -> "Eagle3Head":
        """Load from a directory (or hub id) holding config.json and model.safetensors or
        pytorch_model.bin, as the official EAGLE-3 releases do. A missing, cut or garbled checkpoint
        is one LtdError line naming it."""
        directory = cls.fetch(source)
        try:
            head = cls._read(directory)
        except LtdError:
            raise
        except Exception as error:  # a cut or garbled file fails in as many ways as there are readers
            raise LtdError(f"cannot load EAGLE-3 head {directory}: {reason(error)}") from None
        return head

    @staticmethod
    def fetch(source: str | Path) -> Path:
        """The head's local directory: `source` itself, or its hub snapshot (downloaded once)."""
        directory = Path(source).expanduser()
        if directory.is_dir():
            return directory
        if is_path(str(source)):
            raise LtdError(f"no EAGLE-3 head at {source} (not a directory)")
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors", "*.bin"]))
        except Exception as error:  # offline, unknown id, no access: all one message to the user
            raise LtdError(f"cannot load EAGLE-3 head {str(source)!r}: {reason(error)}") from None

    @classmethod
    def _read(cls, directory: Path) -> "Eagle3Head":
        from transformers import LlamaConfig

        raw = json.loads((directory / "config.json").read_text())
        config = LlamaConfig.from_pretrained(directory)
        config.draft_vocab_size = raw.get("draft_vocab_size", config.vocab_size)
        if "target_hidden_size" in raw:
            config.target_hidden_size = raw["target_hidden_size"]
        if (directory / "model.safetensors").exists():
            from safetensors.torch import load_file

            state = load_file(directory / "model.safetensors")
        else:
            state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
        state.pop("embed_tokens.weight", None)  # some releases ship the target's embedding; we use the target's
        head = cls(config)
        head.load_state_dict(state)
        return head


class Eagle3Drafter:
    """Drafts with an EAGLE-3 head over a target: its embedding, its fused features."""

    def __init__(self, head: Eagle3Head, target_embed: torch.Tensor, target_num_layers: int, max_positions: int):
        """The head runs where the target's embedding lives, in its dtype: `head` is moved there."""
        config = head.config
        self.device, dtype = target_embed.device, target_embed.dtype
        self.head = head.to(self.device, dtype).eval().requires_grad_(False)
        self.vocab_size = config.draft_vocab_size  # what it proposes from
        self.embed = target_embed
        self.feature_layers = eagle3_feature_layers(target_num_layers)
        # Made in float32 and rounded to the model's dtype, as the target's own tables are.
        self.cos, self.sin = (table.to(self.device, dtype) for table in rope_tables(config, max_positions))
        self.linear = pick_linear(self.device, dtype)
        self.slots = TreeSlots(self.device)
        self.cache: KVCache | None = None
        self.context = 0
        self.root_hidden: torch.Tensor | None = None
        self.slot_hidden = torch.zeros(0, config.hidden_size, dtype=dtype, device=self.device)

    def reset(self, capacity: int) -> None:
        config = self.head.config
        if self.cache is None or self.cache.capacity != capacity:
            self.cache = KVCache(1, config.num_key_value_heads, config.head_dim, capacity, self.device)
        self.cache.length = 0
        self.slots.reset()
        self.context = 0

    def propose(self, hidden: torch.Tensor, k: int) -> Proposals:
        """Top-k children and entropy, both over the draft vocabulary (the head's whole output)."""
        logits = self.linear(self.head.norm(hidden), self.head.lm_head.weight)
        logp, draft_ids, entropy = top_k_entropy(logits, k)
        return Proposals(logp, self.head.draft_to_target(draft_ids), entropy)

    @torch.inference_mode()
    def update(self, tokens: torch.Tensor, features: torch.Tensor, k: int) -> Proposals:
        """Absorb accepted context: `features[i]` is the target's fused feature at the position
        before `tokens[-len(features) + i]`. Returns the root's proposals (one row)."""
        tokens = tokens[-features.shape[0]:]
        T = tokens.numel()
        mask = self.cache.attention_mask(T, None, None)
        positions = torch.arange(self.context, self.context + T, device=self.device)
        hidden = self.linear(features, self.head.fc.weight)
        out = self.head.layer(hidden, self.embed[tokens], cache=self.cache, cos=self.cos[positions],
                              sin=self.sin[positions], mask=mask, linear=self.linear)
        self.cache.length += T
        self.context = self.cache.length
        self.root_hidden = out[-1:]
        return self.propose(self.root_hidden, k)

    @torch.inference_mode()
    def expand(self, tokens: torch.Tensor, parents: torch.Tensor, depth: int, k: int) -> Proposals:
        """Feed frontier nodes at `depth` (>= 1) whose parents are `parents` (slots, -1 = root);
        returns their proposals, one row per fed node."""
        first_slot = self.slots.count
        tree_mask = self.slots.add(parents)
        mask = self.cache.attention_mask(tokens.numel(), tree_mask, self.context)
        parent_hidden = torch.cat((self.root_hidden, self.slot_hidden[:first_slot]))[parents + 1]
        position = self.context + depth - 1
        out = self.head.layer(parent_hidden, self.embed[tokens], cache=self.cache, cos=self.cos[position],
                              sin=self.sin[position], mask=mask, linear=self.linear)
        self.cache.length += tokens.numel()
        self.slot_hidden = torch.cat((self.slot_hidden[:first_slot], out))
        return self.propose(out, k)

    def room(self) -> int:
        """Free positions left in the cache for draft nodes."""
        return self.cache.room

    def rollback(self) -> None:
        self.cache.length = self.context
        self.slots.reset()
