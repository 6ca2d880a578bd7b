"""What every drafter shares: the draft tree's attention bookkeeping and top-k proposals.

A drafter absorbs the accepted context (`update`), which yields the root expansion, then expands
frontier nodes one level at a time (`expand`). Each expansion proposes the top-k (log-prob,
target token) children of every fed node. Fed nodes occupy consecutive slots after the context in
the drafter's own cache; `rollback` drops them once the cycle is verified.
"""
import torch


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


def top_k(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most likely entries of each row: (log-probs, indices), both [rows, k]."""
    values, indices = logits.topk(k, dim=-1)
    return values - logits.logsumexp(dim=-1, keepdim=True), indices
