"""The paper's learned dynamic baselines as controllers, each reading its trained classifier
(`weights`, written by `python -m ltd.cli.train_baselines`) when it is built, so a missing file
stops a run before any decoding.

- DISCO: after each expansion, a classifier of the tree so far predicts whether the next level
  would be accepted; drafting stops when it says probably not.
- SpecDec++: after each expansion, an acceptance head predicts, level by level, whether each
  level's best candidate is accepted given its parent was; drafting stops once the predicted
  probability that some drafted token is rejected (1 - the product) exceeds `threshold`.
- C2T: a fixed-depth tree whose verified size is the number of candidates a classifier predicts
  on the target's path; the engine verifies that many best candidates by score.
"""
from dataclasses import dataclass, field
from typing import ClassVar

from ltd.baselines.classifiers import TrainedClassifier, load_classifier
from ltd.baselines.features import tree_candidate_features, tree_depth_features
from ltd.controllers.heuristics import DepthRule
from ltd.core.errors import LtdError
from ltd.decoding.controller import Controller, check_verify
from ltd.decoding.tree import DraftTree


def _load(controller, depth: int) -> TrainedClassifier:
    """The controller's classifier, refused if it was trained on another tree."""
    if not isinstance(controller.weights, str) or not controller.weights:
        raise LtdError(f"{controller.kind} weights must be the path of a trained classifier, "
                       f"got {controller.weights!r}")
    trained = load_classifier(controller.weights, controller.kind)
    if (trained.top_k, trained.max_depth) != (controller.top_k, depth):
        raise LtdError(f"{controller.weights} was trained for top-k {trained.top_k} and depth {trained.max_depth}, "
                       f"not this {controller.kind}'s {controller.top_k} and {depth}")
    return trained


def _is_probability(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


@dataclass
class LearnedDepthRule(DepthRule):
    """What DISCO and SpecDec++ share: the trained classifier at `weights` and a `threshold`."""

    weights: str = ""
    threshold: float = 0.5
    trained: TrainedClassifier = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        super().__post_init__()
        self._require("threshold", _is_probability(self.threshold), "a probability from 0 to 1")
        self.trained = _load(self, self.max_depth)


@dataclass
class DISCO(LearnedDepthRule):
    """Stop when the predicted probability that the next level is accepted is below `threshold`."""

    kind: ClassVar[str] = "disco"

    def stop(self, tree: DraftTree) -> bool:
        features = tree_depth_features(tree, [tree.depth], self.max_depth)
        return float(self.trained.classifier.probability(features)[0]) < self.threshold


@dataclass
class SpecDecPP(LearnedDepthRule):
    """Stop when 1 - prod_d p(level d's best accepted | its parent accepted) > `threshold` (0.7,
    SpecDec++'s h). The product is recomputed from the tree at every call, levels 1 to the latest
    in one batch: no state to carry between calls."""

    kind: ClassVar[str] = "specdec_pp"
    threshold: float = 0.7

    def stop(self, tree: DraftTree) -> bool:
        features = tree_depth_features(tree, list(range(1, tree.depth + 1)), self.max_depth)
        accepted = float(self.trained.classifier.probability(features).prod())
        return 1 - accepted > self.threshold


@dataclass
class C2T(Controller):
    """A tree `depth` levels deep (8, the paper's); verifies as many candidates as the classifier
    puts on the target's path with probability above `threshold`, within 1..`verify` (60)."""

    kind: ClassVar[str] = "c2t"
    top_k: int = 10
    verify: int = 60
    depth: int = 8
    weights: str = ""
    threshold: float = 0.5
    trained: TrainedClassifier = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in ("top_k", "verify", "depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LtdError(f"c2t {name} must be an integer >= 1, got {value!r}")
        check_verify("c2t", self.verify, self.depth, self.top_k)
        if not _is_probability(self.threshold):
            raise LtdError(f"c2t threshold must be a probability from 0 to 1, got {self.threshold!r}")
        self.trained = _load(self, self.depth)

    def keep_drafting(self, tree: DraftTree, context_length: int) -> bool:
        return tree.depth < self.depth

    def verify_size(self, tree: DraftTree, context_length: int) -> int:
        probability = self.trained.classifier.probability(tree_candidate_features(tree, self.depth))
        return min(max(int((probability > self.threshold).sum()), 1), self.verify)


LEARNED_BASELINES = (DISCO, SpecDecPP, C2T)
