"""The cost model: what one draft-and-verify cycle costs on this machine, measured by `make profile`.

A cycle's draft time is the drafter absorbing the accepted tokens (which yields the root
expansion) plus one expansion per further level; its verify time is one target pass over the
root and V draft tokens. Both grow with the context. Times were measured at a few context lengths
and sizes; in between they are interpolated linearly, and beyond the last point extrapolated from
the last two, so a replay environment can price any (depth, V, context).
"""
import bisect
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ltd.atomic import write_json
from ltd.errors import LtdError


def interpolate(xs: list[float], ys: list[float], x: float) -> float:
    """Piecewise-linear through (xs, ys) (xs ascending), extended linearly past both ends."""
    if len(xs) == 1:
        return ys[0]
    i = min(max(bisect.bisect_right(xs, x), 1), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return max(0.0, y0 + (y1 - y0) * (x - x0) / (x1 - x0))


@dataclass
class CostModel:
    model: str
    drafter: str
    device: str
    threads: int
    top_k: int
    contexts: list[int]  # ascending
    verify_sizes: list[int]  # V, ascending (the root token comes on top)
    verify_s: list[list[float]]  # [context][V]: one target pass over 1 + V tokens
    update_s: list[float]  # [context]: the drafter absorbs an accepted token and its bonus
    expand_s: list[list[float]]  # [context][level - 2]: expansion of level 2, 3, ... (top_k fed nodes)

    def __post_init__(self):
        if sorted(self.contexts) != list(self.contexts) or sorted(self.verify_sizes) != list(self.verify_sizes):
            raise LtdError("cost model contexts and verify sizes must be ascending")

    @property
    def max_depth(self) -> int:
        return 1 + len(self.expand_s[0])

    def _at_context(self, rows: list[float], context: int) -> float:
        return interpolate(self.contexts, rows, context)

    def verify_seconds(self, size: int, context: int) -> float:
        per_context = [interpolate(self.verify_sizes, row, size) for row in self.verify_s]
        return self._at_context(per_context, context)

    def draft_seconds(self, depth: int, context: int) -> float:
        """Seconds to draft a tree of `depth` levels (the root expansion included)."""
        if not 1 <= depth <= self.max_depth:
            raise LtdError(f"the cost model covers depths 1 to {self.max_depth}, not {depth}")
        update = self._at_context(self.update_s, context)
        levels = [self._at_context([row[level] for row in self.expand_s], context) for level in range(depth - 1)]
        return update + sum(levels)

    def save(self, path: str | Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> "CostModel":
        path = Path(path)
        if not path.is_file():
            raise LtdError(f"no cost model at {path}: make profile measures one")
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as error:
            raise LtdError(f"{path} is not a cost model ({error})") from None
