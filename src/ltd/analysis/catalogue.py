"""The notebooks of analysis/ in the order `make analysis` runs them, each with the results it
needs and the command that makes them: a notebook whose results are missing is skipped with that
command, not run into an error."""
from collections.abc import Callable
from dataclasses import dataclass

from ltd.analysis.sources import ABLATIONS, Results


@dataclass
class Notebook:
    name: str  # analysis/<name>.py
    has_results: Callable[[Results], bool]
    make: str  # what to run for its results


def _any(results: Results, test: Callable) -> bool:
    """Whether any stored row passes `test` (a frame -> boolean Series)."""
    return bool(test(results.store).any())


NOTEBOOKS = [
    Notebook("table1", lambda r: not r.main_rows().empty, "make train (or make eval, make sweep name=cpu_table1)"),
    Notebook("ablations", lambda r: _any(r, lambda s: s["experiment"].isin(ABLATIONS)),
             "make ablation reward=acceptance (or make sweep name=ablation_rewards)"),
    Notebook("cost_model", lambda r: bool(r.cost_models()), "make profile (make train runs it)"),
    Notebook("policies", lambda r: bool(r.policy_runs()), "make train"),
    Notebook("temperature", lambda r: _any(r, lambda s: s["temperature"] > 0),
             'make eval ARGS="temperature=1" (or make sweep name=temperature)'),
    Notebook("mmlu", lambda r: _any(r, lambda s: (s["task"] == "mmlu") & (s["method"] == "ltd")),
             'make eval ARGS="task=mmlu task.per_category=1 max_new_tokens=64 methods=[autoregressive,tuned,ltd]"'),
]
