"""The policies' observations, computed by one function for the engine at inference (from the
live DraftTree) and for the replay environments at training (from a trace): same candidates, same
order, same scaling, so a policy sees at inference exactly what it learned from.

Size policy (the paper): every candidate's cumulative score so far, in creation order, zero-padded
to the full tree of `max_depth` levels, then the depth and the context length (scaled to about 1).
Depth policy (the paper): the cumulative scores of the latest expansion (top_k at the root's,
top_k * top_k after), zero-padded to top_k * top_k, then the depth and the context length.

A score enters as the drafter's probability of the candidate's path, exp(cumulative log-prob), in
[0, 1], not as the log-prob itself: deep candidates' log-probs reach -20 and saturate the tanh
layers, and a depth policy trained on them stayed below the best constant tree (Qwen2.5-Coder 1.5B
with its 0.5B draft LM, held-out replay: 3.22x against 3.32x; on probabilities 3.41x). A padded
entry is then what it means: a path of probability 0.
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
    """[B, size_width] from rows of scores in creation order ([B, n], n up to the full tree) of
    trees grown to `depth` ([B]) levels: the candidates past each row's depth are zeroed."""
    width = tree_width(top_k, max_depth)
    n = min(scores.shape[1], width)
    kept = torch.arange(n) < grown_candidates(depth, top_k)[:, None]
    out = torch.zeros(scores.shape[0], width + 2)
    out[:, :n] = scores[:, :n].float().exp() * kept
    return _tail(out, depth, context_length, max_depth)


def latest_level(scores: torch.Tensor, depth: torch.Tensor, top_k: int) -> torch.Tensor:
    """[B, top_k * top_k] the scores of level `depth` ([B]) of full-tree rows ([B, N]), -inf past
    the level's end (the root's level has top_k)."""
    k = top_k
    start = torch.where(depth == 1, 0, k + (depth - 2) * k * k)
    offsets = torch.arange(k * k)[None, :]
    kept = offsets < torch.where(depth == 1, k, k * k)[:, None]
    return torch.where(kept, scores.gather(1, (start[:, None] + offsets).where(kept, 0)), -torch.inf)


def depth_observations(latest: torch.Tensor, depth: torch.Tensor, context_length: torch.Tensor,
                       top_k: int, max_depth: int) -> torch.Tensor:
    """[B, depth_width] from the scores of each row's latest level ([B, n <= top_k * top_k]; -inf
    for no candidate)."""
    out = torch.zeros(latest.shape[0], top_k * top_k + 2)
    out[:, : latest.shape[1]] = latest.float().exp()
    return _tail(out, depth, context_length, max_depth)


def size_observation(tree: DraftTree, context_length: int, max_depth: int) -> torch.Tensor:
    """The size observation of the engine's live tree: a batch of one through the same code."""
    return size_observations(tree.all_scores().cpu()[None], torch.tensor([tree.depth]),
                             torch.tensor([context_length]), tree.k, max_depth)[0]


def depth_observation(tree: DraftTree, context_length: int, max_depth: int) -> torch.Tensor:
    """The depth observation of the engine's live tree, after its latest expansion."""
    return depth_observations(tree.scores[-1].cpu()[None], torch.tensor([tree.depth]),
                              torch.tensor([context_length]), tree.k, max_depth)[0]
