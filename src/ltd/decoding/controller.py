"""Controllers: the one place where drafting decisions are made.

After each expansion the engine asks `keep_drafting`; once drafting stops it asks `verify_size`.
The engine at inference and the environments at training call the same methods on the same tree.
Controllers that adapt across cycles hear `start` when a generation begins and `observe` after
every verification. `make_controller` builds any of them from config settings.
"""
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

from ltd.decoding.tree import DraftTree, tree_capacity
from ltd.errors import LtdError


class Controller:
    kind: ClassVar[str]  # the name configs use for it
    top_k: int

    def start(self) -> None:
        """A generation begins: reset whatever adapts from cycle to cycle."""

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


def controller_kinds() -> dict[str, type[Controller]]:
    """Every controller `make_controller` builds, by kind."""
    # The baselines subclass Controller, so importing them at the top of this module would be circular.
    from ltd.decoding.baselines import BASELINES
    from ltd.decoding.ltd_controller import LTD
    from ltd.learned.controllers import LEARNED_BASELINES

    return {c.kind: c for c in (StaticTree, *BASELINES, *LEARNED_BASELINES, LTD)}


def make_controller(settings: Mapping) -> Controller:
    """A controller from config settings: `kind` plus any of that controller's fields (the rest
    keep their defaults). A list is taken for a tuple field."""
    kinds = controller_kinds()
    choices = ", ".join(kinds)
    if not isinstance(settings, Mapping):
        raise LtdError(f"controller settings must be a mapping with a kind, got {settings!r}")
    settings = dict(settings)
    kind = settings.pop("kind", None)
    if kind is None:
        raise LtdError(f"controller settings have no kind; choose from: {choices}")
    if not isinstance(kind, str) or kind not in kinds:
        raise LtdError(f"unknown controller kind {kind!r}; choose from: {choices}")
    cls = kinds[kind]
    names = [f.name for f in fields(cls) if f.init]
    for name in settings:
        if name not in names:
            raise LtdError(f"controller {kind} has no setting {name!r}; it takes: {', '.join(names)}")
    # YAML and OmegaConf give lists where the fields, like their defaults, are tuples.
    values = {name: tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
              for name, value in settings.items()}
    return cls(**values)
