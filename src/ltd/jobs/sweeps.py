"""Sweeps: the files in sweeps/ (each a Hydra config that starts from a job's config and lists what
it sweeps), the jobs of a running sweep, and the report of those that failed.

A sweep file is a primary config: `python -m ltd.cli.<job> --config-dir sweeps --config-name <name>`
runs it (make sweep name=<name> says the same). Its jobs' directories are named after their overrides
(conf/hydra/sweep.yaml), so running it again finds what each job finished; a job that fails on a
user's mistake (a model not installed, a missing GPU) leaves one line in its directory's error.txt
and the sweep goes on; the lines are printed together when the sweep ends.
"""
import shutil
import sys
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from ltd.config.files import CONFIG_PATH
from ltd.core.atomic import write_file
from ltd.core.errors import LtdError
from ltd.core.project import PROJECT
from ltd.core.results import ResultPaths
from ltd.eval.runner import AUTOREGRESSIVE
from ltd.eval.store import load_store, stored_run
from ltd.eval.table1 import markdown, sweep_cells, table1

SWEEPS = PROJECT / "sweeps"
ERROR_FILE = "error.txt"


def sweep_file(name: str) -> Path:
    path = SWEEPS / f"{name}.yaml"
    if not name or not path.is_file():
        names = ", ".join(sorted(p.stem for p in SWEEPS.glob("*.yaml")))
        raise LtdError(f"unknown sweep {name!r}; choose from: {names}" if name else f"name the sweep, one of: {names}")
    return path


def sweep_job(name: str) -> str:
    """The entry point a sweep runs: the job config its defaults list starts from."""
    defaults = OmegaConf.load(sweep_file(name)).get("defaults") or []
    job = defaults[0] if defaults and isinstance(defaults[0], str) else None
    if job is None or not (Path(CONFIG_PATH) / f"{job}.yaml").is_file():
        raise LtdError(f"sweeps/{name}.yaml must start its defaults with the job it sweeps (eval, train, ...)")
    return job


def check_launcher(name: str, overrides: list[str]) -> None:
    """One line, before any job starts, when the sweep is to go to SLURM (hydra/launcher=slurm, on
    the command line or in the sweep file) from a machine without SLURM's commands."""
    defaults = [str(d) for d in OmegaConf.load(sweep_file(name)).get("defaults") or []]
    asked = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("hydra/launcher=")]
    asked += [d.split(":", 1)[1].strip() for d in defaults if "hydra/launcher" in d and ":" in d]
    missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
    if any("slurm" in launcher for launcher in asked) and missing:
        raise LtdError(f"hydra/launcher=slurm submits through SLURM, and this machine has no {' or '.join(missing)} "
                       f"on its PATH: run make sweep on the cluster, or leave the launcher out to run the jobs here")


def swept_values(name: str) -> dict[str, list[str]]:
    """What a sweep file sweeps: {key: values} from hydra.sweeper.params."""
    params = OmegaConf.select(OmegaConf.load(sweep_file(name)), "hydra.sweeper.params") or {}
    return {key: [v.strip() for v in str(values).split(",")] for key, values in params.items()}


def sweep_table(store: pd.DataFrame, sweep: str) -> pd.DataFrame:
    """Table 1 of a sweep of sweeps/: its experiment's rows, over the models, tasks and methods it
    asked for (what it does not sweep: what the store holds)."""
    config = OmegaConf.load(sweep_file(sweep))
    swept, experiment = swept_values(sweep), config.get("experiment", sweep)
    rows = store[store["experiment"] == experiment] if "experiment" in store else store.iloc[0:0]
    if rows.empty:
        raise LtdError(f"the results store has no rows of experiment {experiment!r}: make sweep name={sweep} first")
    listed = lambda key: swept.get(key) or sorted(rows[key].unique())
    methods = [m for m in (config.get("methods") or listed("method")) if m != AUTOREGRESSIVE]
    return sweep_cells(table1(rows, models=listed("model"), tasks=listed("task"), methods=methods))


def write_table1(sweep: str, results: str) -> tuple[pd.DataFrame, Path]:
    """Table 1 of `sweep` from <results>/store.jsonl, written to <results>/tables/<sweep>.md and .csv."""
    table = sweep_table(load_store(ResultPaths(results).store), sweep)
    out = ResultPaths(results).table(sweep)
    write_file(out.with_suffix(".md"), lambda tmp: tmp.write_text(markdown(table) + "\n"))
    write_file(out.with_suffix(".csv"), lambda tmp: table.to_csv(tmp, index=False))
    return table, out


def in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_overrides() -> list[str]:
    """This job's own overrides (a sweep's point, and what the command line added)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def finished_before(results: str, run_dir: Path) -> bool:
    """True, with a line saying so, when the results store holds rows of `run_dir`: a sweep's job
    run again that finished before."""
    store = ResultPaths(results).store
    if stored_run(store, run_dir):
        print(f"{run_dir}: finished already, its rows are in {store}")
        return True
    return False


def record_failure(message: str) -> None:
    """One job of a sweep failed on a user's mistake: its line, in its directory and on stderr."""
    from hydra.core.hydra_config import HydraConfig

    directory = Path(HydraConfig.get().runtime.output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    overrides = " ".join(job_overrides())
    (directory / ERROR_FILE).write_text(f"{overrides}\n{message}\n")
    print(f"{overrides}: error: {message}", file=sys.stderr)


def clear_failure(directory: Path) -> None:
    """A job run again forgets the failure of its last run."""
    (Path(directory) / ERROR_FILE).unlink(missing_ok=True)


def failures(sweep_dir: Path) -> list[str]:
    """One line per distinct error of the sweep's failed jobs, with the jobs it stopped: a model
    that is not there is one line, whatever tasks were asked of it."""
    by_message: dict[str, dict[str, list[str]]] = {}
    for path in sorted(Path(sweep_dir).glob(f"*/{ERROR_FILE}")):
        overrides, _, message = path.read_text().strip().partition("\n")
        values = by_message.setdefault(message, {})
        for override in overrides.split():
            key, _, value = override.partition("=")
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
        values.setdefault("", []).append(path.parent.name)  # counts the jobs
    lines = []
    for message, values in by_message.items():
        jobs = len(values.pop(""))
        shown = " ".join(f"{key}={','.join(chosen)}" for key, chosen in values.items())
        lines.append(f"{jobs} job{'s' if jobs > 1 else ''} ({shown}): error: {message}")
    return lines


class SweepReport(Callback):
    """When a sweep ends (on the machine that launched it, whatever the launcher): one line per
    failed job, and exit code 2 when any failed."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = failures(sweep_dir)
        jobs = len([p for p in sweep_dir.glob("*") if p.is_dir() and not p.name.startswith(".")])
        count = len(list(sweep_dir.glob(f"*/{ERROR_FILE}")))
        print(f"sweep {config.get('experiment', sweep_dir.name)}: {jobs} jobs in {sweep_dir}, {count} failed")
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        if failed:
            sys.exit(2)
