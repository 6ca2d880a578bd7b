"""The draft tree's bookkeeping and selection, and greedy acceptance, on hand-made inputs."""
import pytest
import torch

from ltd.decoding.acceptance import accept_greedy
from ltd.decoding.tree import DraftTree, Selection

VOCAB = 50


def proposals(rows: int, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """What a drafter returns: per row, the k best (log-prob, token), best first, distinct tokens."""
    logits = 3 * torch.randn(rows, VOCAB, generator=generator)
    values, tokens = logits.topk(k, dim=-1)
    return values - logits.logsumexp(-1, keepdim=True), tokens


def grown_tree(k: int, depth: int, seed: int = 0) -> DraftTree:
    generator = torch.Generator().manual_seed(seed)
    tree = DraftTree(k)
    tree.add_root(*proposals(1, k, generator))
    while tree.depth < depth:
        tree.add_expansion(*proposals(tree.frontier.numel(), k, generator))
    return tree


def expected_choice(tree: DraftTree, size: int) -> torch.Tensor:
    """Global indices of the `size` best scores, ties to the older (lower index), in index order."""
    scores = tree.all_scores().tolist()
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return torch.tensor(sorted(ranked[:size]), dtype=torch.long)


def level_of_each_node(tree: DraftTree) -> torch.Tensor:
    return torch.cat([torch.full((t.numel(),), d + 1) for d, t in enumerate(tree.tokens)])


def ancestors(selection: Selection, index: int) -> set[int]:
    """Verify-input indices on the way from `index` up to the root (0), both included."""
    found = {index}
    while index != 0:
        index = int(selection.parents[index - 1])
        found.add(index)
    return found


def assert_is_tree(selection: Selection):
    size = selection.size
    for i in range(1, size + 1):
        parent = int(selection.parents[i - 1])
        assert 0 <= parent < i, "a parent must be selected and come before its child"
        parent_depth = 0 if parent == 0 else int(selection.depths[parent - 1])
        assert int(selection.depths[i - 1]) == parent_depth + 1
    assert selection.mask.shape == (size + 1, size + 1)
    for i in range(size + 1):
        assert set(selection.mask[i].nonzero().flatten().tolist()) == ancestors(selection, i)


@pytest.mark.parametrize("k, depth, size", [(2, 3, 4), (3, 5, 10), (10, 8, 60), (4, 6, 1), (3, 4, 0)])
def test_select_takes_the_best_scores_and_forms_a_tree(k, depth, size):
    tree = grown_tree(k, depth, seed=k * 100 + depth)
    selection = tree.select(size)
    assert selection.size == size
    assert_is_tree(selection)
    chosen = expected_choice(tree, size)
    assert torch.equal(selection.tokens, torch.cat(tree.tokens)[chosen])
    assert torch.equal(selection.depths, level_of_each_node(tree)[chosen])


def test_select_more_than_there_is_selects_everything():
    tree = grown_tree(3, 4)
    selection = tree.select(10_000)
    assert selection.size == tree.count == 3 + 3 * 9
    assert torch.equal(selection.tokens, torch.cat(tree.tokens))
    assert_is_tree(selection)


def test_ties_go_to_older_nodes():
    """Log-prob 0 makes a child score exactly like its parent; equal siblings tie too. The older
    node must win, so a child is never selected without its parent."""
    tree = DraftTree(2)
    tree.add_root(torch.tensor([[-1.0, -1.0]]), torch.tensor([[5, 6]]))
    # Each frontier node's first child is certain (log-prob 0): same score as its parent.
    tree.add_expansion(torch.tensor([[0.0, -3.0], [0.0, -3.0]]), torch.tensor([[7, 8], [9, 10]]))
    for size, tokens in [(1, [5]), (2, [5, 6]), (3, [5, 6, 7]), (4, [5, 6, 7, 9])]:
        selection = tree.select(size)
        assert selection.tokens.tolist() == tokens, size
        assert_is_tree(selection)


def test_frontier_is_the_top_k_of_the_latest_level():
    k = 4
    generator = torch.Generator().manual_seed(3)
    tree = DraftTree(k)
    tree.add_root(*proposals(1, k, generator))
    assert tree.frontier.tolist() == list(range(k))
    assert tree.frontier_parent_slots.tolist() == [-1] * k
    for level in range(1, 4):
        parent_frontier = tree.frontier.clone()
        first_slot = tree.slots_used
        tree.add_expansion(*proposals(k, k, generator))
        start = tree.count - k * k
        latest = tree.scores[-1]
        assert tree.frontier.numel() == k
        assert bool((tree.frontier >= start).all())
        chosen = tree.frontier - start
        others = torch.ones(k * k, dtype=torch.bool)
        others[chosen] = False
        assert latest[chosen].min() >= latest[others].max()
        # Each frontier node's parent slot is the slot its parent took when it was fed.
        parents = torch.cat(tree.parents)[tree.frontier]
        fed_slot = {int(node): first_slot + i for i, node in enumerate(parent_frontier)}
        assert tree.frontier_parent_slots.tolist() == [fed_slot[int(p)] for p in parents]
        assert torch.equal(tree.frontier_tokens(), torch.cat(tree.tokens)[tree.frontier])


# -- greedy acceptance ----------------------------------------------------------------------------
def hand_made_selection() -> Selection:
    """Verify input [root, 1:a=10, 2:b=11, 3:c=12 (child of a), 4:d=13 (child of a), 5:e=14 (child of c)]."""
    parents = torch.tensor([0, 0, 1, 1, 3])
    tokens = torch.tensor([10, 11, 12, 13, 14])
    depths = torch.tensor([1, 1, 2, 2, 3])
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[:, 0] = True
    for i in range(1, 6):
        mask[i] = mask[int(parents[i - 1])]
        mask[i, i] = True
    return Selection(tokens, depths, parents, mask)


def logits_predicting(next_tokens: list[int]) -> torch.Tensor:
    """Logits over [root, nodes...] whose argmax in row i is next_tokens[i]."""
    logits = torch.randn(len(next_tokens), 20, generator=torch.Generator().manual_seed(0))
    logits[torch.arange(len(next_tokens)), next_tokens] = 10.0
    return logits


@pytest.mark.parametrize("predicted, path, bonus", [
    ([10, 12, 1, 14, 2, 3], [0, 1, 3, 5], 3),  # a, c, e all right: bonus from e's row
    ([10, 13, 1, 14, 2, 3], [0, 1, 4], 2),  # a then d (the second child)
    ([11, 12, 4, 14, 2, 3], [0, 2], 4),  # b: a's right subtree is ignored
    ([10, 19, 1, 14, 2, 3], [0, 1], 19),  # a, then a token not drafted
    ([7, 12, 1, 14, 2, 3], [0], 7),  # nothing accepted: the root's own prediction
], ids=["full-depth", "second-child", "other-branch", "stop-at-1", "none"])
def test_accept_greedy_follows_the_argmax(predicted, path, bonus):
    accepted, next_token = accept_greedy(hand_made_selection(), logits_predicting(predicted))
    assert accepted.tolist() == path
    assert next_token == bonus


def test_accept_greedy_on_empty_selection():
    empty = Selection(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long),
                      torch.empty(0, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool))
    accepted, next_token = accept_greedy(empty, logits_predicting([3]))
    assert accepted.tolist() == [0] and next_token == 3
