"""The notebooks of analysis/ in the order `make analysis` runs them, each with the results it
needs and the command that makes them: a notebook whose results are missing is skipped with that
command, not run into an error."""
from collections.abc import Callable
from dataclasses import dataclass

from ltd.analysis.sources import ABLATIONS, Results


@dataclass
class Notebook:
    name: str  # analysis/<name>.py
    has_results: Callable[[Results, dict], bool]  # (the results, the notebooks' parameters)
    make: str  # what to run for its results


def _any(results: Results, test: Callable) -> bool:
    """Whether any stored row passes `test` (a frame -> boolean Series)."""
    return bool(test(results.store).any())


NOTEBOOKS = [
    Notebook("table1", lambda r, p: not r.main_rows().empty, "make train (or make eval, make sweep name=cpu_table1)"),
    Notebook("ablations", lambda r, p: _any(r, lambda s: s["experiment"].isin(ABLATIONS)),
             "make ablation reward=acceptance (or make sweep name=ablation_rewards)"),
    Notebook("cost_model", lambda r, p: bool(r.cost_models()), "make profile (make train runs it)"),
    Notebook("policies", lambda r, p: bool(r.policy_runs()), "make train"),
    Notebook("temperature", lambda r, p: _any(r, lambda s: s["temperature"] > 0),
             'make eval ARGS="temperature=1" (or make sweep name=temperature)'),
    Notebook("mmlu", lambda r, p: _any(r, lambda s: (s["task"] == "mmlu") & (s["method"] == p["method"])),
             'make eval ARGS="task=mmlu task.per_category=1 max_new_tokens=64 methods=[autoregressive,tuned,ltd]"'),
]
