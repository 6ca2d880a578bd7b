"""What every drafter shares: the draft tree's attention bookkeeping and top-k proposals.

A drafter absorbs the accepted context (`update`), which yields the root expansion, then expands
frontier nodes one level at a time (`expand`). Each expansion proposes the top-k (log-prob,
target token) children of every fed node, with the entropy of that node's whole next-token
distribution (entropy-based controllers read it). Fed nodes occupy consecutive slots after the
context in the drafter's own cache; `rollback` drops them once the cycle is verified.
"""
from typing import NamedTuple

import torch

from ltd.core.errors import LtdError


class TreeSlots:
    """Which fed draft nodes each fed node may attend to: its ancestors and itself."""

    def __init__(self, device: torch.device, capacity: int = 256):
        self.device = device
        self.mask = torch.zeros(capacity, capacity, dtype=torch.bool, device=device)
        self.count = 0

    def reset(self) -> None:
        self.count = 0

    def add(self, parents: torch.Tensor) -> torch.Tensor:
        """Give slots to nodes whose parents sit in `parents` (slot, or -1 for the root).

        Returns their mask rows over all slots so far ([F, count]), the new nodes included."""
        n, F = self.count, parents.numel()
        if n + F > self.mask.shape[0]:
            grown = torch.zeros(2 * (n + F), 2 * (n + F), dtype=torch.bool, device=self.device)
            grown[:n, :n] = self.mask[:n, :n]
            self.mask = grown
        rows = self.mask[n : n + F, : n + F]
        rows.zero_()
        has_parent = parents >= 0
        if has_parent.any():
            rows[has_parent, :n] = self.mask[parents[has_parent], :n]
        rows[torch.arange(F, device=self.device), n + torch.arange(F, device=self.device)] = True
        self.count = n + F
        return rows


def check_top_k(drafter, top_k: int) -> None:
    """A drafter proposes the top-k of its vocabulary: k cannot be larger."""
    if top_k > drafter.vocab_size:
        raise LtdError(f"top-k {top_k} is more than the {drafter.vocab_size} tokens the drafter proposes from")


class Proposals(NamedTuple):
    """What `update` and `expand` return: per fed node (one row each; the root for `update`)."""

    logp: torch.Tensor  # [rows, k] log-probs of the k most likely children, best first
    tokens: torch.Tensor  # [rows, k] their target token ids
    entropy: torch.Tensor  # [rows] entropy (nats, float32) of the node's whole next-token distribution


def top_k_entropy(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k most likely entries of each row (log-probs, indices: [rows, k]) and each row's
    entropy in nats ([rows], float32): H = logsumexp(z) - sum(p * z)."""
    values, indices = logits.topk(k, dim=-1)
    # Entropy sums a whole vocabulary of small terms: float32 even for half-precision logits (a no-op
    # for float32 ones, where the log-probs come out exactly as before).
    z = logits.float()
    lse = z.logsumexp(dim=-1, keepdim=True)
    p = (z - lse).exp()
    # A -inf logit has p = 0 and adds nothing; clamping keeps 0 * -inf from turning the sum into nan.
    entropy = lse.squeeze(-1) - (p * z.clamp(min=torch.finfo(z.dtype).min)).sum(dim=-1)
    # A peaked row's two terms are large and nearly equal: their float32 difference can come out a
    # few thousandths below zero (seen with the 0.5B draft LM), which SVIP's sqrt refuses.
    entropy = entropy.clamp(min=0)
    return (values.float() - lse).to(logits.dtype), indices, entropy
