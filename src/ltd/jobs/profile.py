"""The cost model a job prices cycles with: the one saved for this model, drafter and machine when it
serves, else measured now (make profile, make train, make drafter-rl)."""
from collections.abc import Callable

from ltd.core.artefacts import Artefact
from ltd.eval.machine_load import LoadGuard, LoadMeter
from ltd.traces.cost_model import CostModel, saved_cost_model


def ensure_cost_model(file: Artefact, measure: Callable[[CostModel | None], CostModel],
                      reuse: Callable[[CostModel], bool] = lambda costs: True,
                      guard: LoadGuard | None = None) -> tuple[CostModel, str | None]:
    """(the cost model, what `guard` read of the machine's load while measuring it): the saved one
    in `file` when `reuse` accepts it (no verdict then), else `measure(the saved one or None)`'s, timed
    under `guard` (a
    busy profile is refused or warned about before it is saved: a policy would train on its prices)
    and written with its key."""
    costs = saved_cost_model(file)
    if costs is not None and reuse(costs):
        return costs, None
    meter = None
    if guard is not None:
        guard.before_timing()
        meter = LoadMeter().start()
    costs = measure(costs)
    verdict = None
    if guard is not None:
        load = meter.read()
        guard.check(load, "the profile")
        verdict = guard.verdict(load)
    with file.rewrite():
        costs.save(file.path)
    return costs, verdict
