"""Controllers: the one place where drafting decisions are made.

After each expansion the engine asks `keep_drafting`; once drafting stops it asks `verify_size`.
The engine at inference and the environments at training call the same methods on the same tree.
Controllers that adapt across cycles hear `start` when a generation begins and `observe` after
every verification. One that decides from the target's state (`reads_state`) is shown, before each
cycle, the target's hidden state at the last accepted token (`see`), and may change the cycle's
top-k (`cycle_top_k`, at most its `top_k`). The controllers themselves live in ltd.controllers.
"""
from dataclasses import dataclass
from typing import ClassVar

from ltd.core.errors import LtdError
from ltd.decoding.tree import DraftTree, tree_capacity


class Controller:
    kind: ClassVar[str]  # the name configs use for it
    reads_state: ClassVar[bool] = False  # whether it is shown the target's hidden state (see)
    top_k: int  # the largest top-k of its trees

    def start(self) -> None:
        """A generation begins: reset whatever adapts from cycle to cycle."""

    def see(self, state) -> None:
        """A cycle begins (`reads_state` only): `state()` gives the target's hidden state at the last
        accepted token ([hidden], float32, on the CPU; an EAGLE-3 drafter's three layers averaged).
        A getter, so that a controller holding its decision costs no copy from the device."""

    def cycle_top_k(self) -> int:
        """The top-k of the cycle about to be drafted."""
        return self.top_k

    def observe(self, accepted: int) -> None:
        """A cycle was verified: `accepted` draft tokens were accepted (the bonus token not counted)."""

    def keep_drafting(self, tree: DraftTree, context_length: int) -> bool:
        raise NotImplementedError

    def verify_size(self, tree: DraftTree, context_length: int) -> int:
        raise NotImplementedError


@dataclass
class StaticTree(Controller):
    """A fixed tree shape: `depth` expansions, top-k per node, `verify` tokens (EAGLE-3: 8, 10, 60)."""

    kind: ClassVar[str] = "static"
    depth: int = 8
    top_k: int = 10
    verify: int = 60

    def __post_init__(self):
        for name in ("depth", "top_k", "verify"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LtdError(f"static tree {name} must be an integer >= 1, got {value!r}")
        check_verify("static tree", self.verify, self.depth, self.top_k)

    def keep_drafting(self, tree: DraftTree, context_length: int) -> bool:
        return tree.depth < self.depth

    def verify_size(self, tree: DraftTree, context_length: int) -> int:
        return self.verify


def check_verify(who: str, verify: int, depth: int, top_k: int) -> None:
    """V can be no more than the candidates the deepest tree holds: a larger one is a mistake."""
    most = tree_capacity(depth, top_k)
    if verify > most:
        raise LtdError(f"{who} verify must be at most {most}, what a tree of depth {depth} and top-k {top_k} "
                       f"holds; got {verify}")
