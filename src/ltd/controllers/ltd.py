"""The LTD controller: the trained depth and size policies deciding in the engine.

After each expansion the depth policy reads the latest level's scores (stop or one more level);
once drafting stops the size policy reads every candidate's score and picks V. Both run greedily
on the same observations the environments trained them on (ltd.rl.observations). Either policy
may be left out (the paper's component ablations): a fixed `depth` or `verify` stands in for it.
The engine counts the time spent here as policy time.
"""
from dataclasses import dataclass, field
from typing import ClassVar

from ltd.core.errors import LtdError
from ltd.decoding.controller import Controller, check_verify
from ltd.decoding.tree import DraftTree
from ltd.rl.partners import FixedDepth, FixedSize, PolicyDepth, PolicySize
from ltd.rl.policies import Policy


@dataclass
class LTD(Controller):
    kind: ClassVar[str] = "ltd"
    depth_policy: str | None = None  # path of a saved depth policy
    size_policy: str | None = None  # path of a saved size policy
    depth: int = 8  # levels drafted when there is no depth policy
    verify: int = 60  # V when there is no size policy
    top_k: int = field(init=False)
    max_depth: int = field(init=False)

    def __post_init__(self):
        if self.depth_policy is None and self.size_policy is None:
            raise LtdError("the ltd controller needs a depth policy, a size policy, or both")
        self.depth_net = None if self.depth_policy is None else Policy.load(self.depth_policy, "depth")
        self.size_net = None if self.size_policy is None else Policy.load(self.size_policy, "size")
        specs = [p.spec for p in (self.depth_net, self.size_net) if p is not None]
        if len({(s.top_k, s.max_depth) for s in specs}) > 1:
            raise LtdError("the depth and size policies were trained on different trees (top_k or max_depth)")
        self.top_k, self.max_depth = specs[0].top_k, specs[0].max_depth
        if self.depth_net is None and not 1 <= self.depth <= self.max_depth:
            raise LtdError(f"ltd depth must be in 1..{self.max_depth}, got {self.depth}")
        if self.size_net is None and self.verify < 0:
            raise LtdError(f"ltd verify must be >= 0, got {self.verify}")
        if self.size_net is None:
            check_verify("ltd", self.verify, self.max_depth, self.top_k)
        # The same deciders the environments train beside (ltd.rl.partners).
        self.depth_decider = FixedDepth(self.depth) if self.depth_net is None else PolicyDepth(self.depth_net)
        self.size_decider = FixedSize(self.verify) if self.size_net is None else PolicySize(self.size_net)

    def keep_drafting(self, tree: DraftTree, context_length: int) -> bool:
        return self.depth_decider.keep_drafting(tree, context_length)

    def verify_size(self, tree: DraftTree, context_length: int) -> int:
        return self.size_decider.verify_size(tree, context_length)
