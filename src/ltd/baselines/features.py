"""What the learned baselines see, computed by one function for training (rows of recorded traces)
and for inference (the engine's live DraftTree, as a batch of one): same candidates, same order,
same arithmetic, so a classifier meets at inference exactly the numbers it learned from.

Both sides hold the same tree in the same layout: candidates in creation order (level 1: k, each
later level: k * k, the children of the k frontier nodes in frontier order), their cumulative
log-probs and parents, and the entropies of the fed nodes (the root, then k per later level). A
trace row holds every level; the live tree the levels drafted so far, and a feature of level d
reads nothing past level d.
"""
import torch

from ltd.core.errors import LtdError
from ltd.decoding.tree import DraftTree

DEPTH_FEATURES = 5  # per level, for DISCO and SpecDec++
CANDIDATE_FEATURES = 4  # per candidate, for C2T


def candidate_depths(count: int, top_k: int) -> torch.Tensor:
    """[count] the level of each of the first `count` candidates, 1 for the root's children."""
    return torch.cat((torch.ones(min(count, top_k), dtype=torch.long),
                      2 + torch.arange(max(count - top_k, 0)) // (top_k * top_k)))


def _tree_rows(tree: DraftTree) -> tuple[torch.Tensor, torch.Tensor]:
    """The live tree as a trace row ([1, n] scores and parents), on the CPU in float32 as traces are."""
    return tree.all_scores().float().cpu()[None], torch.cat(tree.parents).cpu()[None]


def _own_log_probs(scores: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
    """[B, n] each candidate's own conditional log-prob: its cumulative score minus its parent's
    (a root child's parent, the root, scores 0)."""
    parent_scores = scores.gather(1, parents.clamp(min=0)).masked_fill(parents < 0, 0.0)
    return scores - parent_scores


def _level_scores(scores: torch.Tensor, depth: torch.Tensor, top_k: int) -> torch.Tensor:
    """[B, n] the scores of level depth[b] in each row, -inf elsewhere."""
    level = candidate_depths(scores.shape[1], top_k)[None, :] == depth[:, None]
    return torch.where(level, scores, -torch.inf)


def best_candidate(scores: torch.Tensor, depth: torch.Tensor, top_k: int) -> torch.Tensor:
    """[B] the index of level depth[b]'s best candidate in each row ([B, n] scores): the highest
    score, the older on ties, as the frontier picks it."""
    return _level_scores(scores.float(), depth, top_k).argmax(dim=1)


def depth_features(scores: torch.Tensor, parents: torch.Tensor, entropies: torch.Tensor, depth: torch.Tensor,
                   top_k: int, max_depth: int) -> torch.Tensor:
    """[B, DEPTH_FEATURES] float32: the tree of each row ([B, n] scores and parents, [B, e] fed-node
    entropies) right after the expansion that made level depth[b], described by that level:
    the best candidate's cumulative score, the frontier's probability mass (logsumexp of the k
    best scores, DDD's quantity), the best candidate's own log-prob (the drafter's confidence in
    it, DISCO's quantity), the entropy of the node fed to make it (SVIP's) and depth / max_depth.
    The best candidate is the level's highest score, the older on ties, as the frontier picks."""
    scores = scores.float()
    rows = torch.arange(scores.shape[0])
    masked = _level_scores(scores, depth, top_k)
    best = masked.argmax(dim=1)  # as best_candidate: the first of equal maxima, the older candidate
    mass = masked.topk(top_k, dim=1).values.logsumexp(dim=1)
    own = _own_log_probs(scores, parents)[rows, best]
    # Level 1 was made by feeding the root (entropy 0); level d >= 2 by feeding k nodes, entropies
    # 1 + (d - 2) k onwards, each with k children listed together.
    start = torch.where(depth == 1, 0, top_k + (depth - 2) * top_k * top_k)
    fed = torch.where(depth == 1, 0, 1 + (depth - 2) * top_k + (best - start) // top_k)
    return torch.stack((scores[rows, best], mass, own, entropies.float()[rows, fed], depth / max_depth), dim=1)


def tree_depth_features(tree: DraftTree, depths: list[int], max_depth: int) -> torch.Tensor:
    """[len(depths), DEPTH_FEATURES] `depth_features` of the engine's tree at levels `depths` (all
    drafted already): the same function on the tree seen as a trace row."""
    if any(e is None for e in tree.entropies):
        raise LtdError("the learned depth baselines need the drafter's entropies, and this draft tree has none")
    scores, parents = _tree_rows(tree)
    entropies = torch.cat(tree.entropies).float().cpu()[None]
    n = len(depths)
    return depth_features(scores.expand(n, -1), parents.expand(n, -1), entropies=entropies.expand(n, -1),
                          depth=torch.tensor(depths), top_k=tree.k, max_depth=max_depth)


def candidate_features(scores: torch.Tensor, parents: torch.Tensor, top_k: int, max_depth: int) -> torch.Tensor:
    """[B, n, CANDIDATE_FEATURES] float32 for every candidate of every row ([B, n]): its cumulative
    score, its own log-prob, its depth / max_depth and its rank within its level by score (0 =
    best, older first on ties, as DraftTree.select orders them) over the level's size."""
    scores = scores.float()
    depths = candidate_depths(scores.shape[1], top_k)
    rank = torch.empty_like(scores)
    for d in range(1, int(depths.max()) + 1):
        at = (depths == d).nonzero()[:, 0]
        order = torch.argsort(-scores[:, at], dim=1, stable=True)
        ranks = torch.empty_like(order).scatter_(1, order, torch.arange(at.numel()).expand_as(order))
        rank[:, at] = ranks.float() / at.numel()
    return torch.stack((scores, _own_log_probs(scores, parents), (depths / max_depth).expand_as(scores), rank), dim=2)


def tree_candidate_features(tree: DraftTree, max_depth: int) -> torch.Tensor:
    """[n, CANDIDATE_FEATURES] `candidate_features` of every candidate of the engine's tree."""
    return candidate_features(*_tree_rows(tree), tree.k, max_depth)[0]
