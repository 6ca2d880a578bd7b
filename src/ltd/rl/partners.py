"""What decides the other half of each cycle while one policy trains or is validated: a depth
partner (how deep to draft) beside a size policy, a size partner (how many tokens to verify) beside
a depth policy. Each is a Controller, so the online environments run it through the engine's own
drafting loop, and each also decides for a batch of replayed positions at once (`depths`, `sizes`).
`depth_partner` and `size_partner` make one from a stage's setting: a number, a frozen policy, or
(depth only) None for random depths. The LTD controller decides with the same classes."""
from contextlib import contextmanager

import torch

from ltd.core.errors import LtdError
from ltd.decoding.controller import Controller
from ltd.decoding.tree import DraftTree
from ltd.rl.policies import Policy, keeps_drafting, policy_depths, policy_sizes, size_for


class RandomDepth(Controller):
    """Stage 1: each cycle drafts to a depth drawn uniformly from 1..max_depth (the paper trains
    the size policy on random depths)."""

    def __init__(self, max_depth: int, generator: torch.Generator):
        self.max_depth, self.generator, self.drawn = max_depth, generator, 1

    def keep_drafting(self, tree: DraftTree, context_length: int) -> bool:
        if tree.depth == 1:  # asked first after the root expansion: this cycle's depth
            self.drawn = int(torch.randint(1, self.max_depth + 1, (1,), generator=self.generator))
        return tree.depth < self.drawn

    def depths(self, scores: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return torch.randint(1, self.max_depth + 1, (scores.shape[0],), generator=self.generator)


class FixedDepth(Controller):
    def __init__(self, depth: int):
        self.depth = depth

    def keep_drafting(self, tree: DraftTree, context_length: int) -> bool:
        return tree.depth < self.depth

    def depths(self, scores: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return torch.full((scores.shape[0],), self.depth)


class PolicyDepth(Controller):
    """A depth policy, frozen and greedy, as it decides in the engine (co-adaptive rounds)."""

    def __init__(self, policy: Policy):
        self.policy = policy

    def keep_drafting(self, tree: DraftTree, context_length: int) -> bool:
        if tree.depth >= self.policy.spec.max_depth:
            return False
        with one_thread():
            return keeps_drafting(self.policy, tree, context_length)

    def depths(self, scores: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return policy_depths(self.policy, scores, context)


class FixedSize(Controller):
    def __init__(self, verify: int):
        self.verify = verify

    def verify_size(self, tree: DraftTree, context_length: int) -> int:
        return self.verify

    def sizes(self, scores: torch.Tensor, depth: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return torch.full((scores.shape[0],), self.verify)


class PolicySize(Controller):
    """A size policy, frozen and greedy, as it decides in the engine (co-adaptive rounds)."""

    def __init__(self, policy: Policy):
        self.policy = policy

    def verify_size(self, tree: DraftTree, context_length: int) -> int:
        with one_thread():
            return size_for(self.policy, tree, context_length)

    def sizes(self, scores: torch.Tensor, depth: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return policy_sizes(self.policy, scores, depth, context)


@contextmanager
def one_thread():
    """The policies' operations on one live tree are small: spreading them over threads costs more in
    OpenMP's fork and join than it saves (measured here: 0.9 ms a cycle on one thread, 2.4 ms on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


DepthPartner = RandomDepth | FixedDepth | PolicyDepth
SizePartner = FixedSize | PolicySize


def depth_partner(setting: int | Policy | None, max_depth: int, generator: torch.Generator) -> DepthPartner:
    if setting is None:
        return RandomDepth(max_depth, generator)
    if isinstance(setting, Policy):
        if setting.spec.role != "depth":
            raise LtdError("the depth partner must be a depth policy")
        return PolicyDepth(setting)
    if not 1 <= setting <= max_depth:
        raise LtdError(f"depth {setting} is outside 1..{max_depth}")
    return FixedDepth(setting)


def size_partner(setting: int | Policy) -> SizePartner:
    if isinstance(setting, Policy):
        if setting.spec.role != "size":
            raise LtdError("the verify partner must be a size policy")
        return PolicySize(setting)
    if setting < 0:
        raise LtdError(f"the depth environment verifies V >= 0 tokens, not {setting}")
    return FixedSize(setting)
