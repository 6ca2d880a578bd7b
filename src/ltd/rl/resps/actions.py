"""Re-SpS's action space: one index over whole tree shapes (V, depth, top-k), and the state it is
chosen from (the target's hidden state at the last accepted token).

The paper's bins are GPU-sized (total tokens 32-128, depth 3-8, top-k 8-32) and keep a shape only
when a tree of it can hold its total tokens, TT <= k^(d-1). On another machine the bins come from
its cost model: the verify sizes and depths whose cost stays within `budget` target steps (past
that a cycle must accept more tokens than any drafter here does to pay for itself), and top-k up
to the recorded trees'. The same validity rule, and the engine's own (a tree of depth d and top-k k
holds k + (d-1)k^2 candidates), filter either.
"""
from dataclasses import dataclass

import torch

from ltd.decoding.tree import tree_capacity
from ltd.traces.cost_model import CostModel

PAPER_TOTAL_TOKENS = (32, 48, 64, 80, 96, 128)  # TT: the root and V = TT - 1 draft tokens
PAPER_DEPTHS = (3, 4, 5, 6, 7, 8)
PAPER_TOP_KS = (8, 12, 16, 20, 32)


@dataclass(frozen=True)
class Shape:
    verify: int  # V: draft tokens verified
    depth: int
    top_k: int

    def __str__(self) -> str:
        return f"V {self.verify}, depth {self.depth}, top-k {self.top_k}"


def valid(shape: Shape) -> bool:
    """The paper's rule on total tokens (V + 1 <= k^(d-1)) and what the engine's tree holds."""
    return (shape.verify + 1 <= shape.top_k ** (shape.depth - 1)
            and shape.verify <= tree_capacity(shape.depth, shape.top_k))


def action_grid(verify_sizes, depths, top_ks) -> tuple[Shape, ...]:
    """Every valid shape of the bins, in (V, depth, top-k) order: action i is shape i."""
    return tuple(s for v in sorted(verify_sizes) for d in sorted(depths) for k in sorted(top_ks)
                 if valid(s := Shape(v, d, k)))


def paper_grid() -> tuple[Shape, ...]:
    return action_grid([tt - 1 for tt in PAPER_TOTAL_TOKENS], PAPER_DEPTHS, PAPER_TOP_KS)


def cost_model_bins(costs: CostModel, top_k: int, budget: float = 2.0) -> tuple[list[int], list[int], list[int]]:
    """(V, depth, top-k) bins for the machine `costs` was measured on: V > 0 and depths whose verify
    or drafting cost at the middle profiled context is at most `budget` target steps (a V = 0
    verification), and every top-k from 2 to `top_k` (a chain, k = 1, holds no tree the paper's
    rule allows). A depth is priced in a cycle that accepts nothing (the drafter absorbing one
    token): the cheapest cycle of that depth, so no depth is left out for what it may accept."""
    context = costs.contexts[len(costs.contexts) // 2]
    step = costs.verify_seconds(0, context)
    sizes = [v for v in costs.verify_sizes if v > 0 and costs.verify_seconds(v, context) <= budget * step]
    depths = [d for d in range(1, costs.max_depth + 1) if costs.draft_seconds(d, context, 0) <= budget * step]
    return sizes, depths, list(range(2, top_k + 1))


def normalised_state(state: torch.Tensor) -> torch.Tensor:
    """The hidden state scaled to unit root-mean-square: a target's raw hidden states run to
    hundreds in places, which would saturate the policy's tanh units from its first layer on."""
    state = state.float()
    return state / state.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-6)
