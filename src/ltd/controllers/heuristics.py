"""The paper's training-free dynamic baselines: controllers that choose the draft depth by a fixed rule.

All grow the same EAGLE-style tree as StaticTree (top-k 10 per node, 60 verified tokens) and never
draft deeper than `max_depth` (12), the paper's settings for every dynamic baseline. The root
expansion always happens (the engine makes it before asking), so each rule decides from depth 1 on
whether to expand once more.
"""
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ltd.core.errors import LtdError
from ltd.decoding.controller import Controller, check_verify
from ltd.decoding.tree import DraftTree


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


@dataclass
class DepthRule(Controller):
    """What the baselines share: the tree's width, the verified size and the depth cap. A subclass
    says when to stop early in `stop`."""

    top_k: int = 10
    verify: int = 60
    max_depth: int = 12

    def __post_init__(self):
        for name in ("top_k", "verify", "max_depth"):
            self._require(name, _is_integer(getattr(self, name)) and getattr(self, name) >= 1,
                          "an integer >= 1")
        check_verify(self.kind, self.verify, self.max_depth, self.top_k)

    def _require(self, name: str, ok: bool, what: str) -> None:
        if not ok:
            raise LtdError(f"{self.kind} {name} must be {what}, got {getattr(self, name)!r}")

    def stop(self, tree: DraftTree) -> bool:
        raise NotImplementedError

    def keep_drafting(self, tree: DraftTree, context_length: int) -> bool:
        return tree.depth < self.max_depth and not self.stop(tree)

    def verify_size(self, tree: DraftTree, context_length: int) -> int:
        return self.verify


@dataclass
class DDD(DepthRule):
    """Dynamic Depth Decoding: after the expansions at `check_depths`, stop once the frontier
    beams' total probability (the logsumexp of their cumulative log-probs) falls below
    exp(`threshold`). Depths 5, 7, 9 and threshold -0.3 are the paper's settings."""

    kind: ClassVar[str] = "ddd"
    check_depths: tuple[int, ...] = (5, 7, 9)
    threshold: float = -0.3

    def __post_init__(self):
        super().__post_init__()
        depths = self.check_depths
        # Depths past max_depth are allowed (never reached), so that lowering max_depth alone works.
        self._require("check_depths", isinstance(depths, tuple) and all(_is_integer(d) and d >= 1 for d in depths),
                      "a list of integers >= 1")
        # The log of a probability mass is at most 0: a positive threshold would stop at every check.
        self._require("threshold", _is_number(self.threshold) and self.threshold <= 0, "a number <= 0")

    def stop(self, tree: DraftTree) -> bool:
        if tree.depth not in self.check_depths:
            return False
        return float(tree.all_scores()[tree.frontier].logsumexp(0)) < self.threshold


@dataclass
class SVIP(DepthRule):
    """SVIP: stop once sqrt(`factor` * H) > `min_entropy`, H the entropy (nats) of the drafter's
    next-token distribution at the most likely fed node of the latest expansion. Factor 0.15 and
    minimum 0.3 are the paper's settings and the official SVIP code's rule."""

    kind: ClassVar[str] = "svip"
    factor: float = 0.15
    min_entropy: float = 0.3

    def __post_init__(self):
        super().__post_init__()
        self._require("factor", _is_number(self.factor) and self.factor > 0, "a number > 0")
        self._require("min_entropy", _is_number(self.min_entropy) and self.min_entropy >= 0, "a number >= 0")

    def stop(self, tree: DraftTree) -> bool:
        entropy = tree.entropies[-1]
        if entropy is None:
            raise LtdError("the svip controller needs the drafter's entropies, and this draft tree has none")
        scores = tree.scores[-1]
        # The latest level lists each fed node's children together, so the best child's row is
        # its index over the children per fed node (at the root: one row).
        fed = int(scores.argmax()) // (scores.numel() // entropy.numel())
        return math.sqrt(self.factor * float(entropy[fed])) > self.min_entropy


@dataclass
class GammaTune(DepthRule):
    """GammaTune: a depth that follows acceptance. After each cycle gamma <- (1 - eta) gamma +
    eta (accepted + 1), kept within [depth/2, 1.5 depth]; a cycle drafts round(gamma) levels.
    Depth 8 (EAGLE-3's) and eta 0.2 are the paper's settings."""

    kind: ClassVar[str] = "gammatune"
    depth: int = 8
    eta: float = 0.2
    gamma: float = field(init=False, repr=False, compare=False)  # the adapted depth

    def __post_init__(self):
        super().__post_init__()
        self._require("depth", _is_integer(self.depth) and 1 <= self.depth <= self.max_depth,
                      f"an integer from 1 to max_depth ({self.max_depth})")
        self._require("eta", _is_number(self.eta) and 0 < self.eta <= 1, "a number in (0, 1]")
        self.start()

    def start(self) -> None:
        self.gamma = float(self.depth)

    def observe(self, accepted: int) -> None:
        # accepted + 1 is what the cycle emitted: a full acceptance pulls gamma above the depth
        # drafted, a rejection pulls it towards 1.
        gamma = (1 - self.eta) * self.gamma + self.eta * (accepted + 1)
        self.gamma = min(max(gamma, self.depth / 2), 1.5 * self.depth)

    def stop(self, tree: DraftTree) -> bool:
        return tree.depth >= round(self.gamma)


@dataclass
class ConfidenceThreshold(DepthRule):
    """DISCO-style confidence threshold: stop once the most likely child of the latest expansion,
    by its own conditional probability (over the kept frontier), is below `threshold`. The 0.4
    default is transformers' assistant_confidence_threshold."""

    kind: ClassVar[str] = "disco_threshold"
    threshold: float = 0.4

    def __post_init__(self):
        super().__post_init__()
        self._require("threshold", _is_number(self.threshold) and 0 <= self.threshold <= 1,
                      "a probability from 0 to 1")

    def stop(self, tree: DraftTree) -> bool:
        scores = tree.all_scores()
        parents = torch.cat(tree.parents)[tree.frontier]
        # Cumulative scores: a child's own log-prob is its score minus its parent's (the root's is 0).
        parent_scores = scores[parents.clamp(min=0)].masked_fill(parents < 0, 0.0)
        best = float((scores[tree.frontier] - parent_scores).max())
        return math.exp(best) < self.threshold


BASELINES = (DDD, SVIP, GammaTune, ConfidenceThreshold)
