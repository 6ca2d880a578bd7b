"""Controllers: the one place where drafting decisions are made.

After each expansion the engine asks `keep_drafting`; once drafting stops it asks `verify_size`.
The engine at inference and the environments at training call the same methods on the same tree.
"""
from dataclasses import dataclass

from ltd.decoding.tree import DraftTree
from ltd.errors import LtdError


class Controller:
    top_k: int

    def keep_drafting(self, tree: DraftTree, context_length: int) -> bool:
        raise NotImplementedError

    def verify_size(self, tree: DraftTree, context_length: int) -> int:
        raise NotImplementedError


@dataclass
class StaticTree(Controller):
    """A fixed tree shape: `depth` expansions, top-k per node, `verify` tokens (EAGLE-3: 8, 10, 60)."""

    depth: int = 8
    top_k: int = 10
    verify: int = 60

    def __post_init__(self):
        for name in ("depth", "top_k", "verify"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LtdError(f"static tree {name} must be an integer >= 1, got {value!r}")

    def keep_drafting(self, tree: DraftTree, context_length: int) -> bool:
        return tree.depth < self.depth

    def verify_size(self, tree: DraftTree, context_length: int) -> int:
        return self.verify
