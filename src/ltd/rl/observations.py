"""The policies' observations, computed by one function for the engine at inference (from the
live DraftTree) and for the replay environments at training (from a trace): same candidates, same
order, same scaling, so a policy sees at inference exactly what it learned from.

Size policy (the paper): every candidate's cumulative score so far, in creation order, zero-padded
to the full tree of `max_depth` levels, then the depth and the context length (scaled to about 1).
Depth policy (the paper): the cumulative scores of the latest expansion (top_k at the root's,
top_k * top_k after), zero-padded to top_k * top_k, then the depth and the context length.
"""
import torch

from ltd.decoding.tree import DraftTree

CONTEXT_SCALE = 1024.0  # context lengths enter the networks as multiples of this


def tree_width(top_k: int, max_depth: int) -> int:
    """Candidates in a full tree: top_k at the root, top_k * top_k at every further level."""
    return top_k + (max_depth - 1) * top_k * top_k


def size_width(top_k: int, max_depth: int) -> int:
    return tree_width(top_k, max_depth) + 2


def depth_width(top_k: int) -> int:
    return top_k * top_k + 2


def grown_candidates(depth: torch.Tensor, top_k: int) -> torch.Tensor:
    """Candidates in a tree of `depth` levels."""
    return top_k + (depth - 1) * top_k * top_k


def _tail(out: torch.Tensor, depth: torch.Tensor, context_length: torch.Tensor, max_depth: int) -> torch.Tensor:
    out[:, -2] = depth / max_depth
    out[:, -1] = context_length / CONTEXT_SCALE
    return out


def size_observations(scores: torch.Tensor, depth: torch.Tensor, context_length: torch.Tensor,
                      top_k: int, max_depth: int) -> torch.Tensor:
    """[B, size_width] from rows of full-tree scores ([B, >= the grown candidates]) of trees grown
    to `depth` ([B]) levels: the candidates past each row's depth are zeroed."""
    width = tree_width(top_k, max_depth)
    kept = torch.arange(width)[None, :] < grown_candidates(depth, top_k)[:, None]
    out = torch.zeros(scores.shape[0], width + 2)
    out[:, :width] = torch.where(kept, scores[:, :width].float(), 0.0)
    return _tail(out, depth, context_length, max_depth)


def depth_observations(scores: torch.Tensor, depth: torch.Tensor, context_length: torch.Tensor,
                       top_k: int, max_depth: int) -> torch.Tensor:
    """[B, depth_width] from rows of full-tree scores ([B, >= the grown candidates]): the scores
    of each row's level `depth` ([B]), the latest expansion."""
    k = top_k
    start = torch.where(depth == 1, 0, k + (depth - 2) * k * k)
    size = torch.where(depth == 1, k, k * k)
    offsets = torch.arange(k * k)[None, :]
    kept = offsets < size[:, None]
    index = (start[:, None] + offsets).where(kept, 0)
    out = torch.zeros(scores.shape[0], k * k + 2)
    out[:, : k * k] = torch.where(kept, scores.gather(1, index).float(), 0.0)
    return _tail(out, depth, context_length, max_depth)


def _tree_row(tree: DraftTree, max_depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The live tree as a trace row: its scores in creation order, zero-padded to the full tree."""
    scores = torch.zeros(1, tree_width(tree.k, max_depth))
    grown = tree.all_scores()
    scores[0, : grown.numel()] = grown.float().cpu()
    return scores, torch.tensor([tree.depth])


def size_observation(tree: DraftTree, context_length: int, max_depth: int) -> torch.Tensor:
    """The size observation of the engine's live tree: a batch of one through the same code."""
    scores, depth = _tree_row(tree, max_depth)
    return size_observations(scores, depth, torch.tensor([context_length]), tree.k, max_depth)[0]


def depth_observation(tree: DraftTree, context_length: int, max_depth: int) -> torch.Tensor:
    """The depth observation of the engine's live tree, after its latest expansion."""
    scores, depth = _tree_row(tree, max_depth)
    return depth_observations(scores, depth, torch.tensor([context_length]), tree.k, max_depth)[0]
