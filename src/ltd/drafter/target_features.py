"""What an EAGLE-3 head learns from, produced by the target in batches through ltd's own decoder:
for every position, the fused features (inputs of the low, mid and high layers), the token, and
the target's own next-token distribution (its top-k, enough to hold nearly all the mass).

Two sources of responses:
- `target` (self-distillation, as EAGLE regenerates its data): the target answers each prompt
  greedily itself. The head then trains on exactly the text and the features it will meet at
  greedy decoding time.
- `corpus` (teacher forcing): the target reads the corpus response.

Written as shards of a few dozen sequences, each atomic, so a killed run resumes at the first
missing shard. The target runs on its own device and dtype; the shards are always CPU tensors
(features and probabilities in float16, ids in int32), whatever produced them.
"""
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ltd.core.atomic import write_file
from ltd.drafter.corpus import Example

MAX_READ_TOKENS = 4096  # per batch when reading (teacher forcing): its logits take 4096 x vocab floats


@dataclass
class Sequence:
    tokens: list[int]  # the prompt, then the corpus response (teacher forcing) or nothing (generation)
    response_start: int  # index of the first response token


def encode(target, example: Example, max_length: int, with_response: bool) -> Sequence:
    """The chat-templated conversation, cut at `max_length` tokens; the response starts after the
    prompt's generation header. Without the response: the whole prompt, for the target to answer."""
    user = [{"role": "user", "content": example.prompt}]
    prompt = target.encode_chat(user)
    if not with_response:
        return Sequence(prompt, len(prompt))
    tokens = target.encode_chat(user + [{"role": "assistant", "content": example.response}], add_generation_prompt=False)
    return Sequence(tokens[:max_length], min(len(prompt), max_length))


def shard_path(directory: Path, index: int) -> Path:
    return directory / f"shard-{index:05d}.safetensors"


class BatchRun:
    """B left-padded rows in the decoder's batched cache; collects what each fed position yields.

    When the rows are prompts to answer, the prompt positions' next-token distributions are not
    kept (nothing is trained on them): only the last one's, computing logits at one position per
    row instead of all."""

    def __init__(self, decoder, rows: list[list[int]], answer_tokens: int, feature_layers: tuple[int, ...],
                 top_k: int):
        self.decoder, self.layers, self.top_k = decoder, feature_layers, top_k
        B, width = len(rows), max(map(len, rows))
        decoder.reset(width + answer_tokens, batch=B)
        device = decoder.device
        self.valid = torch.zeros(B, width + answer_tokens, dtype=torch.bool, device=device)
        ids = torch.zeros(B, width, dtype=torch.long, device=device)
        for b, row in enumerate(rows):
            ids[b, width - len(row):] = torch.tensor(row, device=device)
            self.valid[b, width - len(row) : width] = True
        self.positions = (self.valid[:, :width].cumsum(1) - 1).clamp(min=0)
        self.fed = [ids]
        self.outputs: list[tuple[torch.Tensor, ...]] = []
        self.next_token = self._feed(ids, self.positions, last_only=answer_tokens > 0)

    def _feed(self, ids: torch.Tensor, positions: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        logits, features = self.decoder(ids, positions=positions, valid=self.valid, feature_layers=self.layers,
                                        last_only=last_only)
        # A softmax in bfloat16 would round the probabilities the head learns from.
        probs, top_ids = logits.float().softmax(-1).topk(self.top_k, dim=-1)
        if last_only:  # distributions of the earlier positions: unknown, never trained on
            pad = torch.zeros(ids.shape[0], ids.shape[1] - 1, self.top_k, device=probs.device)
            probs, top_ids = torch.cat((pad, probs), dim=1), torch.cat((pad.long(), top_ids), dim=1)
        self.outputs.append((features.half(), top_ids.int(), probs.half()))
        # The token greedy decoding picks: bfloat16 logits tie often, and topk may break a tie
        # differently from argmax.
        return logits[:, -1].argmax(-1)

    def step(self, alive: torch.Tensor) -> None:
        """Feed every row its greedy next token; rows not `alive` are fed but stay padding."""
        column = self.decoder.length
        self.valid[:, column] = alive
        self.positions = self.positions[:, -1:] + 1
        ids = self.next_token[:, None]
        self.fed.append(ids)
        self.next_token = self._feed(ids, self.positions)

    def rows(self) -> list[dict[str, torch.Tensor]]:
        """Per row, its real positions only, on the CPU: tokens, features, top_ids, top_probs."""
        tokens = torch.cat(self.fed, dim=1).int().cpu()
        features, top_ids, top_probs = (torch.cat(parts, dim=1).cpu() for parts in zip(*self.outputs))
        real = self.valid[:, : tokens.shape[1]].cpu()
        return [dict(tokens=tokens[b, real[b]], features=features[b, real[b]], top_ids=top_ids[b, real[b]],
                     top_probs=top_probs[b, real[b]]) for b in range(len(real))]


@torch.inference_mode()
def target_pass(decoder, sequences: list[Sequence], feature_layers: tuple[int, ...], top_k: int, batch_size: int,
                new_tokens: int = 0, stop_ids: tuple[int, ...] = (), progress=None) -> dict[str, torch.Tensor]:
    """One shard: every sequence's positions concatenated, `offsets` marking where each starts.

    With `new_tokens` > 0 the target first answers each sequence greedily, up to a stop token or
    `new_tokens` tokens (self-distillation); otherwise it reads the sequences as they are.
    `predicts_response[p]` is True where the token after position p belongs to the response: the
    positions whose next token a drafter is trained to predict. `progress(sequences, tokens)` is
    called after each batch."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].tokens))
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=decoder.device)
    rows: dict[int, dict[str, torch.Tensor]] = {}
    start = 0
    while start < len(order):
        # Reading whole conversations keeps logits at every position: a cap on tokens bounds memory.
        longest = len(sequences[order[min(start + batch_size, len(order)) - 1]].tokens)
        size = batch_size if new_tokens else max(1, min(batch_size, MAX_READ_TOKENS // longest))
        members = order[start : start + size]
        start += size
        run = BatchRun(decoder, [sequences[i].tokens for i in members], new_tokens, feature_layers, top_k)
        alive = torch.ones(len(members), dtype=torch.bool, device=decoder.device)
        for _ in range(new_tokens - 1):  # the last answer token is predicted, never fed
            alive &= ~torch.isin(run.next_token, stops)
            if not alive.any():
                break
            run.step(alive)
        for i, row in zip(members, run.rows()):
            n, first = len(row["tokens"]), sequences[i].response_start
            predicts = torch.zeros(n, dtype=torch.bool)
            # Teacher forcing: the last position's next token lies past the response. Generation:
            # the last fed position predicted the answer's last token.
            predicts[max(0, first - 1) : n if new_tokens else n - 1] = True
            rows[i] = dict(row, predicts_response=predicts)
        if progress is not None:
            progress(len(members), sum(len(rows[i]["tokens"]) for i in members))
    shard = {key: torch.cat([rows[i][key] for i in range(len(sequences))]) for key in rows[0]}
    lengths = torch.tensor([len(rows[i]["tokens"]) for i in range(len(sequences))])
    shard["offsets"] = torch.cat((torch.zeros(1, dtype=torch.long), lengths.cumsum(0)))
    return shard


def write_shard(path: Path, shard: dict[str, torch.Tensor]) -> None:
    write_file(path, lambda tmp: save_file({k: v.contiguous() for k, v in shard.items()}, tmp))


def load_shards(directory: Path, count: int) -> list[dict[str, torch.Tensor]]:
    return [load_file(shard_path(directory, i)) for i in range(count)]


def first_sequences(shard: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """The shard cut to its first `count` sequences."""
    end = int(shard["offsets"][count])
    return {key: value[: count + 1] if key == "offsets" else value[:end] for key, value in shard.items()}
