"""Building the drafter a config names, over a loaded target."""
from pathlib import Path

import torch

from ltd.core.errors import LtdError
from ltd.models.decoder import QUANTIZE_IDENTITY
from ltd.models.draft_lm import DraftLM
from ltd.models.eagle3 import Eagle3Drafter, Eagle3Head, head_config
from ltd.models.targets import Target, is_path, load_target, source_identity
from ltd.models.wheel_parts import WheelParts


def drafter_identity(kind: str, weights: str | None, seed: int = 0, draft_vocab_size: int | None = None,
                     parts: WheelParts | None = None, dtype: str | None = None, quantize: str | None = None,
                     intermediate_size: int | None = None) -> dict:
    """Who a drafter is, for the keys of what ltd derives from it. `weights`: the EAGLE-3 head's
    directory or hub id (None: an untrained head drawn from `seed`, `intermediate_size` wide), or the
    draft LM's source (with its `parts`, `dtype` and `quantize`)."""
    if kind == "eagle3" and weights is None:
        identity = {"kind": kind, "weights": "untrained", "seed": seed, "draft_vocab_size": draft_vocab_size}
        if intermediate_size is not None:  # heads as wide as their target keep the keys they had
            identity["intermediate_size"] = intermediate_size
        return identity
    if kind == "eagle3" and is_path(weights) and not Path(weights).expanduser().is_dir():
        raise LtdError(f"no EAGLE-3 head at {weights} (not a directory)")
    if kind == "eagle3":
        return {"kind": kind, "weights": source_identity(weights)}
    identity = {"kind": kind, "weights": source_identity(weights, parts), "dtype": dtype}
    if quantize is not None:  # the kernel's numerics, not only the config's word: "int8-rows" for int8
        identity["quantize"] = QUANTIZE_IDENTITY.get(quantize, quantize)
    return identity


def load_drafter(target: Target, kind: str, path: str | None = None, draft_vocab_size: int = 8192,
                 seed: int = 0, source: str | None = None, parts: WheelParts | None = None,
                 dtype: str | None = None, quantize: str | None = None, intermediate_size: int | None = None):
    """kind `eagle3`: the head at `path` (directory or hub id), or an untrained seeded head when
    `path` is None (its MLP `intermediate_size` wide, by default the target's, so that it costs what
    a trained one of its config would). kind `draft_lm`: the causal LM at `source` (with its `parts`;
    in `dtype`, by default the target's; its weights quantised with `quantize`), with the target's
    tokenizer."""
    decoder = target.decoder
    if kind == "eagle3":
        if path is None:
            torch.manual_seed(seed)
            head = Eagle3Head(head_config(target.config, min(draft_vocab_size, target.config.vocab_size),
                                          intermediate_size=intermediate_size or target.config.intermediate_size))
        else:
            head = Eagle3Head.load(path)
        return Eagle3Drafter(head, decoder.embed, decoder.spec.num_layers, decoder.max_positions)
    if kind == "draft_lm":
        draft = load_target(f"{target.name}-draft", source, decoder.max_positions,
                            dtype or str(decoder.dtype).split(".")[-1], str(decoder.device), parts=parts,
                            quantize=quantize)
        if len(draft.tokenizer) != len(target.tokenizer):
            raise LtdError(f"draft LM {source!r} does not share the target's tokenizer")
        return DraftLM(draft.decoder, decoder.spec.vocab_size)
    raise LtdError(f"unknown drafter kind {kind!r}; expected 'eagle3' or 'draft_lm'")
