"""Which drafted tokens the target accepts, given its logits over [root, node 0, ..., node V-1].

Both rules return (accepted, next_token): the verify-input indices of the accepted path, root
first, and the token the target itself emits after it (the bonus token, next cycle's root).
"""
import torch

from ltd.decoding.tree import Selection


def accept_greedy(selection: Selection, logits: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Follow the target's argmax down the tree: the output equals greedy decoding exactly."""
    predicted = logits.argmax(dim=-1)
    correct = selection.tokens == predicted[selection.parents]
    # A node is on the target's path when it and all its ancestors are correct.
    on_path = ~(selection.mask[1:, 1:] & ~correct[None, :]).any(dim=-1)
    if not on_path.any():
        return torch.zeros(1, dtype=torch.long, device=logits.device), int(predicted[0])
    depths = torch.where(on_path, selection.depths, 0)
    last = int(depths.argmax()) + 1
    accepted = selection.mask[last].nonzero().squeeze(-1)
    return accepted, int(predicted[last])


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    return int(torch.multinomial(probs, 1, generator=generator))


def accept_sampling(selection: Selection, logits: torch.Tensor, temperature: float,
                    generator: torch.Generator | None) -> tuple[torch.Tensor, int]:
    """Speculative sampling over a tree of deterministic (top-k) drafts, lossless in distribution.

    At each node the children are tried in turn: child x is accepted with probability p(x) under
    the target's current residual p; a rejected x is removed from p, which is renormalised. When
    every child is rejected, the next token is drawn from the residual. Each step therefore draws
    exactly from the target's distribution."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    children: dict[int, list[int]] = {}
    for i, parent in enumerate(selection.parents.tolist(), start=1):
        children.setdefault(parent, []).append(i)
    tokens = selection.tokens.tolist()
    uniforms = torch.rand(selection.size + 1, generator=generator, device=logits.device).tolist()
    path, node = [0], 0
    while True:
        residual = probs[node]
        for child in children.get(node, []):
            token = tokens[child - 1]
            p = float(residual[token] / residual.sum())
            if uniforms[child] < p:
                path.append(child)
                node = child
                break
            residual[token] = 0  # in place: a node's row is never read again once left
        else:
            return torch.tensor(path, device=logits.device), sample(residual / residual.sum(), generator)
