"""The reduced draft vocabulary: the target ids the target itself predicts most often."""
import torch

from ltd.core.errors import LtdError


def choose_vocabulary(shards: list[dict], vocab_size: int, draft_vocab_size: int) -> torch.Tensor:
    """The `draft_vocab_size` most frequent top-1 predictions of the target over response
    positions (ties to the lower id), sorted ascending."""
    if draft_vocab_size > vocab_size:
        raise LtdError(f"draft vocabulary ({draft_vocab_size}) is larger than the target's ({vocab_size})")
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for shard in shards:
        predicted = shard["top_ids"][shard["predicts_response"], 0].long()
        counts += torch.bincount(predicted, minlength=vocab_size)
    order = torch.argsort(-counts, stable=True)
    return order[:draft_vocab_size].sort().values


def coverage(shards: list[dict], vocabulary: torch.Tensor, vocab_size: int) -> float:
    """Share of the target's top-1 predictions that the draft vocabulary can express."""
    member = torch.zeros(vocab_size, dtype=torch.bool)
    member[vocabulary] = True
    hits = total = 0
    for shard in shards:
        predicted = shard["top_ids"][shard["predicts_response"], 0].long()
        hits += int(member[predicted].sum())
        total += predicted.numel()
    return hits / max(1, total)
