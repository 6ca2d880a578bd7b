"""What the analysis notebooks read, and nothing else: the results store (one row per task and
method of every evaluation), the evaluation records its rows point to (every cycle and question),
the policies `make train` left (each stage's PPO curve) and the cost models `make profile` measured.
Nothing here runs a model."""
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ltd.core.errors import LtdError
from ltd.core.results import ResultPaths
from ltd.eval.store import load_store
from ltd.traces.cost_model import CostModel

# The experiments whose rows are ablations (one change to LTD), kept out of the main tables.
ABLATIONS = ("ablation", "ablation_rewards", "ablation_components")
GENERALISATION = ("mmlu",)  # tasks evaluated for generalisation, kept out of Table 1
DRAFTER_RL = "drafter-rl"  # the job of the rows comparing drafters (make drafter-rl), not methods


@dataclass
class PolicyRun:
    """One `make train` policy directory: its settings and each stage's PPO curve."""
    name: str
    reward: str
    component: str
    stages: dict[str, pd.DataFrame]  # stage name -> one row per PPO batch


class Results:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.paths = ResultPaths(root)
        self._store: pd.DataFrame | None = None

    @property
    def store(self) -> pd.DataFrame:
        """Every row of <root>/store.jsonl; raises, saying what to run, when there is none."""
        if self._store is None:
            store = load_store(self.paths.store)
            if store.empty:
                raise LtdError(f"no results in {self.paths.store}: run make train (or make eval) first")
            if "temperature" not in store:
                store["temperature"] = 0.0
            store["temperature"] = store["temperature"].fillna(0.0)
            for column in ("experiment", "reward", "component", "drafter", "job"):
                if column not in store:
                    store[column] = None
            self._store = store
        return self._store

    def main_rows(self, experiment: str | None = None) -> pd.DataFrame:
        """Greedy rows of the paper's tasks (of one `experiment`, or all), ablations, generalisation
        and the drafter comparisons of make drafter-rl left out."""
        s = self.store
        rows = s[(s["temperature"] == 0) & ~s["experiment"].isin(ABLATIONS) & ~s["task"].isin(GENERALISATION)
                 & (s["job"] != DRAFTER_RL)]
        return rows if experiment is None else rows[rows["experiment"] == experiment]

    def records_directory(self, row) -> Path:
        """Where a row's cycles and questions are: `make eval` writes them in its run directory,
        `make train` in one subdirectory per task."""
        run_dir = Path(row["run_dir"])
        return run_dir if (run_dir / "questions.parquet").is_file() else run_dir / row["task"]

    def records(self, rows: pd.DataFrame, kind: str) -> pd.DataFrame:
        """The `kind` records ("cycles" or "questions") of the evaluations `rows` came from, with
        each evaluation's model, drafter, task and temperature; evaluations whose files are gone
        are left out."""
        frames = []
        for _, row in rows.drop_duplicates(["run_dir", "task"]).iterrows():
            path = self.records_directory(row) / f"{kind}.parquet"
            if path.is_file():
                frame = pd.read_parquet(path)
                frame["run_dir"], frame["task"] = row["run_dir"], row["task"]
                for column in ("model", "drafter", "temperature"):
                    frame[column] = row[column]
                frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def cost_models(self) -> dict[str, CostModel]:
        """The cost models under <root>/profiles with a verify curve, by file name (make drafter-rl's
        chain profiles, one verify size for PPOW's gamma, have none)."""
        found = {}
        for path in sorted(self.paths.profiles.glob("*.json")):
            try:
                model = CostModel.load(path)
            except LtdError:
                continue  # a key file or a damaged profile: not a cost model to plot
            if len(model.verify_sizes) > 1:
                found[path.stem] = model
        return found

    def policy_runs(self) -> list[PolicyRun]:
        """Every LTD policy directory under <root>/policies that finished training."""
        runs = []
        for training in sorted(self.paths.all_policies.glob("*/training.json")):
            summary = json.loads(training.read_text())
            if "stages" not in summary:
                continue  # Re-SpS's policy: no staged PPO
            stages = {}
            for stage in summary["stages"]:
                path = training.parent / f"{stage['stage']}.json"
                curve = json.loads(path.read_text()).get("curve", []) if path.is_file() else []
                if curve:
                    stages[stage["stage"]] = pd.DataFrame(curve)
            runs.append(PolicyRun(training.parent.name, summary.get("reward", "?"), summary.get("component", "?"),
                                  stages))
        return runs


def describe_rows(rows: pd.DataFrame) -> str:
    """Where a figure's numbers came from, for its caption: models, drafters, machines, runs."""
    parts = []
    for column in ("model", "drafter", "machine"):
        if column in rows and rows[column].notna().any():
            parts.append(", ".join(sorted(rows[column].dropna().astype(str).unique())))
    runs = rows["run_dir"].nunique() if "run_dir" in rows else 0
    return "; ".join(parts) + f" ({runs} run{'s' * (runs != 1)})"
