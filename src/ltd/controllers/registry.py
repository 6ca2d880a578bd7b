"""Every controller by the name configs use for it, and `make_controller`, which builds one from
config settings."""
from collections.abc import Mapping, Sequence
from dataclasses import fields

from ltd.controllers.heuristics import BASELINES
from ltd.controllers.learned import LEARNED_BASELINES
from ltd.controllers.ltd import LTD
from ltd.controllers.resps import ReSpS
from ltd.core.errors import LtdError
from ltd.decoding.controller import Controller, StaticTree


def controller_kinds() -> dict[str, type[Controller]]:
    """Every controller `make_controller` builds, by kind."""
    return {c.kind: c for c in (StaticTree, *BASELINES, *LEARNED_BASELINES, LTD, ReSpS)}


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
