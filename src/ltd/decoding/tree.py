"""The draft tree of one cycle, grown EAGLE-2/3 style, and the selection of what is verified.

Expansion 1 (the root's) proposes top-k children of the root. Every later expansion feeds the k
frontier nodes to the drafter, scores their top-k children by cumulative log-prob (k*k
candidates) and keeps the k best as the next frontier. Every candidate of every level competes
for the V verified slots by cumulative log-prob. A child never outscores its parent, and ties go
to the older node, so the selected set is always a tree. Each level also keeps the entropy of
every node fed to make it (the root for level 1), for controllers that read it.
"""
from dataclasses import dataclass

import torch


@dataclass
class Selection:
    """The V selected nodes in creation order (parents first), laid out for one verify pass whose
    input is [root, node 0, ..., node V-1]."""

    tokens: torch.Tensor  # [V]
    depths: torch.Tensor  # [V], root children at 1
    parents: torch.Tensor  # [V], index in the verify input (0 = root)
    mask: torch.Tensor  # [V+1, V+1] bool, row i: the ancestors of input i and itself
    tree_mass: torch.Tensor | float = 0.0  # the whole tree's sum of path probabilities (Cycle.tree_mass)

    @property
    def size(self) -> int:
        return self.tokens.numel()


def tree_capacity(depth: int, top_k: int) -> int:
    """Candidates a tree of `depth` levels holds: k children of the root, then k children of each
    of the k frontier nodes per further level."""
    return top_k + (depth - 1) * top_k * top_k


class DraftTree:
    def __init__(self, top_k: int, device: torch.device | str = "cpu"):
        self.k = top_k
        self.device = torch.device(device)
        self.tokens: list[torch.Tensor] = []  # per level
        self.parents: list[torch.Tensor] = []  # global candidate index, -1 = root
        self.scores: list[torch.Tensor] = []
        self.entropies: list[torch.Tensor | None] = []  # per level, of its fed nodes in order; None if not given
        self.count = 0
        self.frontier = torch.empty(0, dtype=torch.long)  # global candidate indices
        self.frontier_parent_slots = torch.empty(0, dtype=torch.long)
        self.slots_used = 0

    @property
    def depth(self) -> int:
        return len(self.scores)

    def all_scores(self) -> torch.Tensor:
        """Cumulative log-probs of every candidate, in creation order."""
        return torch.cat(self.scores)

    def frontier_tokens(self) -> torch.Tensor:
        return torch.cat(self.tokens)[self.frontier]

    def _add_level(self, tokens, parents, scores, parent_slots, entropy) -> None:
        start = self.count
        self.tokens.append(tokens)
        self.parents.append(parents)
        self.scores.append(scores)
        self.entropies.append(None if entropy is None else entropy.reshape(-1))
        self.count += tokens.numel()
        keep = min(self.k, scores.numel())
        best = scores.topk(keep).indices.sort().values
        self.frontier = start + best
        self.frontier_parent_slots = parent_slots[best]

    def add_root(self, logp: torch.Tensor, tokens: torch.Tensor, entropy: torch.Tensor | None = None) -> None:
        """The root expansion: [1, k] log-probs and target tokens, and the root's entropy ([1])."""
        n = tokens.shape[-1]
        minus_one = torch.full((n,), -1, dtype=torch.long, device=self.device)
        self._add_level(tokens.reshape(-1), minus_one, logp.reshape(-1), minus_one, entropy)

    def grow(self, drafter) -> None:
        """One level more: the drafter is fed the frontier and proposes its children (the one
        expansion the engine, the environments, the recorder and the profiler all make)."""
        self.add_expansion(*drafter.expand(self.frontier_tokens(), self.frontier_parent_slots, self.depth, self.k))

    def add_expansion(self, logp: torch.Tensor, tokens: torch.Tensor, entropy: torch.Tensor | None = None) -> None:
        """The children ([F, k]) of the frontier nodes just fed to the drafter, in frontier order,
        and the fed nodes' entropies ([F]).

        Fed nodes took the drafter's next F slots."""
        F, k = tokens.shape
        fed_slots = self.slots_used + torch.arange(F, device=self.device)
        self.slots_used += F
        parent_scores = self.all_scores()[self.frontier]
        scores = (parent_scores[:, None] + logp).reshape(-1)
        parents = self.frontier.repeat_interleave(k)
        self._add_level(tokens.reshape(-1), parents, scores, fed_slots.repeat_interleave(k), entropy)

    def select(self, size: int) -> Selection:
        scores = self.all_scores()
        size = max(0, min(size, scores.numel()))
        chosen = torch.argsort(-scores, stable=True)[:size].sort().values
        tokens = torch.cat(self.tokens)[chosen]
        parent_global = torch.cat(self.parents)[chosen]
        depths = torch.cat([torch.full_like(t, d + 1) for d, t in enumerate(self.tokens)])[chosen]
        position = torch.full((self.count,), -1, dtype=torch.long, device=self.device)
        position[chosen] = torch.arange(1, size + 1, device=self.device)
        parents = torch.where(parent_global < 0, 0, position[parent_global.clamp(min=0)])
        mask = torch.zeros(size + 1, size + 1, dtype=torch.bool, device=self.device)
        mask[0, 0] = True
        rows = torch.arange(1, size + 1, device=self.device)
        for d in range(1, self.depth + 1):  # parents' rows are complete before their children's
            at = rows[depths == d]
            mask[at] = mask[parents[at - 1]]
            mask[at, at] = True
        return Selection(tokens, depths, parents, mask, scores.float().exp().sum())
