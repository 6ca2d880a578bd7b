"""The policies' observations, computed by one function for the engine at inference (from the
live DraftTree) and for the replay environment at training (from a trace): same candidates, same
order, same scaling, so a policy sees at inference exactly what it learned from.

Size policy (the paper): every candidate's cumulative score so far, in creation order, zero-padded
to the full tree of `max_depth` levels, then the depth and the context length (scaled to about 1).
"""
import torch

CONTEXT_SCALE = 1024.0  # context lengths enter the network as multiples of this


def tree_width(top_k: int, max_depth: int) -> int:
    """Candidates in a full tree: top_k at the root, top_k * top_k at every further level."""
    return top_k + (max_depth - 1) * top_k * top_k


def size_observation(scores: torch.Tensor, depth: int, context_length: int, top_k: int,
                     max_depth: int) -> torch.Tensor:
    """[tree_width + 2] float32 from the candidates' scores ([n], creation order): the engine's
    tree, seen as a batch of one by the same code the replay environment runs."""
    width = tree_width(top_k, max_depth)
    padded = torch.zeros(1, width)
    padded[0, : scores.numel()] = scores
    return size_observations(padded, torch.tensor([scores.numel()]), torch.tensor([depth]),
                             torch.tensor([context_length]), top_k, max_depth)[0]


def size_observations(scores: torch.Tensor, grown: torch.Tensor, depth: torch.Tensor, context_length: torch.Tensor,
                      top_k: int, max_depth: int) -> torch.Tensor:
    """`size_observation` for a batch: rows of full-tree scores ([B, tree_width]) of which the first
    `grown` ([B]) are the tree drafted so far."""
    width = tree_width(top_k, max_depth)
    kept = torch.arange(width)[None, :] < grown[:, None]
    out = torch.zeros(scores.shape[0], width + 2)
    out[:, :width] = torch.where(kept, scores.float(), 0.0)
    out[:, width] = depth / max_depth
    out[:, width + 1] = context_length / CONTEXT_SCALE
    return out
