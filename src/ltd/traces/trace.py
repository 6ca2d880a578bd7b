"""Decoding traces: for every position of a greedy answer, the drafter's full expansion.

Why one recording answers every decision: with greedy decoding the output is the target's greedy
answer whatever was drafted, the drafter's state at a position depends only on the accepted
prefix, and an expansion at level i depends only on the levels before it. So at each position,
the tree grown to `max_depth` with top-k `k` holds the tree of every (stop depth, V) choice, and
which candidates lie on the target's own continuation says what each choice would accept.

Position p means: the accepted prefix is prompt + answer[:p] and the tree's root is answer[p].
Candidates are in creation order (level 1: k, each later level: k * k), as DraftTree keeps them.
A trace recorded with `states` also holds, per position, the target's hidden state at the last
accepted token (what Re-SpS's policy reads), in half precision.
"""
from dataclasses import dataclass
from pathlib import Path

import torch

from ltd.core.atomic import write_file
from ltd.core.errors import LtdError
from ltd.decoding.tree import DraftTree
from ltd.models.proposals import check_top_k


@dataclass
class Trace:
    """One answer's trace. P positions (the last answer token has nothing after it to verify)."""

    prompt_length: int
    answer: torch.Tensor  # [P + 1] the target's greedy answer
    scores: torch.Tensor  # [P, N] float32 cumulative log-probs of the N candidates
    tokens: torch.Tensor  # [P, N] int64 their tokens
    parents: torch.Tensor  # [P, N] int64 their parent's candidate index, -1 = the root
    entropies: torch.Tensor  # [P, 1 + (levels - 1) k] float32 the fed nodes' entropies (root first)
    on_path: torch.Tensor  # [P, N] bool the candidate and its ancestors are the target's continuation
    top_k: int
    states: torch.Tensor | None = None  # [P, hidden] float16, the target's state at the last accepted token

    @property
    def positions(self) -> int:
        return self.scores.shape[0]

    @property
    def depths(self) -> torch.Tensor:
        """[N] the level of each candidate, 1 for the root's children."""
        k, n = self.top_k, self.scores.shape[1]
        return torch.cat((torch.ones(k, dtype=torch.long), 2 + torch.arange(n - k) // (k * k)))

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        # Token ids and parent indices fit 32 bits: half the file of int64.
        tensors = dict(answer=self.answer, scores=self.scores, tokens=self.tokens.int(), parents=self.parents.int(),
                       entropies=self.entropies, on_path=self.on_path)
        if self.states is not None:
            tensors["states"] = self.states
        metadata = dict(prompt_length=str(self.prompt_length), top_k=str(self.top_k))
        write_file(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @classmethod
    def load(cls, path: Path) -> "Trace":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
            tensors = {key: f.get_tensor(key) for key in f.keys()}
        tensors["tokens"], tensors["parents"] = tensors["tokens"].long(), tensors["parents"].long()
        return cls(prompt_length=int(metadata["prompt_length"]), top_k=int(metadata["top_k"]), **tensors)


def on_target_path(tokens: torch.Tensor, parents: torch.Tensor, depths: torch.Tensor,
                   continuation: torch.Tensor) -> torch.Tensor:
    """[N] bool: a candidate at depth d is on the path when its token is continuation[d - 1] and its
    parent is on the path (the root always is). Levels come in order, parents before children."""
    on_path = torch.zeros(tokens.numel(), dtype=torch.bool)
    for d in range(1, min(int(depths.max()), continuation.numel()) + 1):
        level = depths == d
        parent_ok = torch.ones(int(level.sum()), dtype=torch.bool) if d == 1 else on_path[parents[level]]
        on_path[level] = parent_ok & (tokens[level] == continuation[d - 1])
    return on_path


@torch.inference_mode()
def record_answer(target, drafter, prompt: list[int], answer: list[int], top_k: int, max_depth: int,
                  states: bool = False) -> Trace:
    """The trace of `answer` (the target's greedy answer to `prompt`): the target reads prompt and
    answer once for its features, the drafter absorbs them position by position and at each grows
    the full tree, which is then rolled back. `states`: keep the target's state at every position,
    as SpeculativeRun.state() gives it (an EAGLE-3 drafter's layers averaged, else the last layer)."""
    decoder = target.decoder
    device = decoder.device
    sequence = torch.tensor(prompt + answer, dtype=torch.long, device=device)
    n_prompt, positions = len(prompt), len(answer) - 1
    # The engine's cache sizes: the same memory layout gives the same floats as decoding does.
    capacity = decoder.max_positions
    check_top_k(drafter, top_k)
    if len(sequence) + top_k * max_depth > capacity:
        raise LtdError(f"a trace of {len(sequence)} tokens with {max_depth} levels of {top_k} does not fit the "
                       f"context of {capacity}")
    decoder.reset(capacity)
    layers = drafter.feature_layers or ((decoder.spec.num_layers,) if states else ())
    _, captured = decoder(sequence[:-1], feature_layers=layers, last_only=True)
    features = captured if drafter.feature_layers else None
    drafter.reset(capacity)
    feature = lambda i: features[i : i + 1] if features is not None else None
    proposals = drafter.update(sequence[: n_prompt + 1], features[:n_prompt] if features is not None else None,
                               top_k)
    rows = dict(scores=[], tokens=[], parents=[], entropies=[])
    for p in range(positions):
        tree = DraftTree(top_k, device)
        tree.add_root(*proposals)
        while tree.depth < max_depth:
            tree.grow(drafter)
        drafter.rollback()
        rows["scores"].append(tree.all_scores().float().cpu())
        rows["tokens"].append(torch.cat(tree.tokens).cpu())
        rows["parents"].append(torch.cat(tree.parents).cpu())
        rows["entropies"].append(torch.cat(tree.entropies).float().cpu())
        if p + 1 < positions:  # absorb the next root: answer[p + 1] after the feature at answer[p]
            at = n_prompt + p
            proposals = drafter.update(sequence[at + 1 : at + 2], feature(at), top_k)
    stacked = {key: torch.stack(value) for key, value in rows.items()}
    answer_tensor = torch.tensor(answer, dtype=torch.long)
    trace = Trace(prompt_length=n_prompt, answer=answer_tensor, on_path=torch.zeros(0), top_k=top_k, **stacked)
    if states:  # position p's last accepted token is sequence[n_prompt + p - 1]
        hidden = captured[n_prompt - 1 : n_prompt - 1 + positions].float()
        trace.states = hidden.view(positions, len(layers), captured.shape[-1] // len(layers)).mean(1).half().cpu()
    depths = trace.depths
    trace.on_path = torch.stack([
        on_target_path(stacked["tokens"][p], stacked["parents"][p], depths, answer_tensor[p + 1 : p + 1 + max_depth])
        for p in range(positions)
    ]) if positions else torch.zeros(0, depths.numel(), dtype=torch.bool)
    return trace


def accepted_for(trace: Trace, position: int, depth: int, verify: int) -> int:
    """Draft tokens the target accepts at `position` when drafting stops after `depth` levels and
    the best `verify` candidates are verified, exactly as DraftTree.select picks them."""
    return int(accepted_in_rows(trace.scores[position : position + 1], trace.on_path[position : position + 1],
                                trace.depths, torch.tensor([depth]), torch.tensor([verify]))[0])


def accepted_in_rows(scores: torch.Tensor, on_path: torch.Tensor, candidate_depth: torch.Tensor,
                     depth: torch.Tensor, verify: torch.Tensor) -> torch.Tensor:
    """Accepted draft tokens for a batch of trace rows ([B, N] scores and on_path), each with its
    own stop depth and V ([B]): the verified candidates are the best V drafted ones by score."""
    grown = candidate_depth[None, :] <= depth[:, None]
    # Candidates not drafted sort last; ties keep creation order, as DraftTree.select does.
    order = torch.argsort(torch.where(grown, -scores, torch.inf), dim=1, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    chosen = grown & (rank < verify[:, None])
    return torch.where(chosen & on_path, candidate_depth[None, :], 0).max(dim=1).values
