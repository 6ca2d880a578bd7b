"""Teacher forcing: the target reads the corpus in batches and leaves, for every position, what an
EAGLE-3 head learns from: the fused features (inputs of the low, mid and high layers), the token,
and the target's own next-token distribution (its top-k, enough to hold nearly all the mass).

Written as shards of a few dozen sequences, each atomic, so a killed run resumes at the first
missing shard.
"""
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ltd.atomic import write_file
from ltd.drafter_training.corpus import Example


@dataclass
class Sequence:
    tokens: list[int]
    response_start: int  # index of the first response token


def encode(target, example: Example, max_length: int) -> Sequence:
    """The chat-templated conversation; the response starts after the prompt's generation header."""
    user = [{"role": "user", "content": example.prompt}]
    prompt = target.encode_chat(user)
    tokens = target.encode_chat(user + [{"role": "assistant", "content": example.response}], add_generation_prompt=False)
    return Sequence(tokens[:max_length], min(len(prompt), max_length))


def shard_path(directory: Path, index: int) -> Path:
    return directory / f"shard-{index:05d}.safetensors"


@torch.inference_mode()
def teacher_force(model, sequences: list[Sequence], feature_layers: tuple[int, ...], top_k: int,
                  batch_size: int) -> dict[str, torch.Tensor]:
    """One shard: every sequence's positions concatenated, `offsets` marking where each starts.

    `predicts_response[p]` is True where token p+1 belongs to the response: the positions whose
    next token a drafter is trained to predict."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].tokens))
    rows: dict[int, dict[str, torch.Tensor]] = {}
    for start in range(0, len(order), batch_size):
        batch = [sequences[i] for i in order[start : start + batch_size]]
        width = max(len(s.tokens) for s in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)  # right padding never reaches earlier positions
        for row, s in enumerate(batch):
            ids[row, : len(s.tokens)] = torch.tensor(s.tokens)
        out = model.model(ids, output_hidden_states=True)
        features = torch.cat([out.hidden_states[i] for i in feature_layers], dim=-1)
        probs, top_ids = model.lm_head(out.last_hidden_state).softmax(-1).topk(top_k, dim=-1)
        for row, (i, s) in enumerate(zip(order[start : start + batch_size], batch)):
            n = len(s.tokens)
            predicts = torch.zeros(n, dtype=torch.bool)
            predicts[max(0, s.response_start - 1) : n - 1] = True
            rows[i] = dict(features=features[row, :n].half(), tokens=ids[row, :n].int(),
                           top_ids=top_ids[row, :n].int(), top_probs=probs[row, :n].half(),
                           predicts_response=predicts)
    shard = {key: torch.cat([rows[i][key] for i in range(len(sequences))]) for key in rows[0]}
    lengths = torch.tensor([len(s.tokens) for s in sequences])
    shard["offsets"] = torch.cat((torch.zeros(1, dtype=torch.long), lengths.cumsum(0)))
    return shard


def write_shard(path: Path, shard: dict[str, torch.Tensor]) -> None:
    write_file(path, lambda tmp: save_file({k: v.contiguous() for k, v in shard.items()}, tmp))


def load_shards(directory: Path, count: int) -> list[dict[str, torch.Tensor]]:
    return [load_file(shard_path(directory, i)) for i in range(count)]
