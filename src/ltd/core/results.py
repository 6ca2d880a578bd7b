"""Every path under a results directory, in one place: what each job writes there and where the
others look for it.

    store.jsonl                              one row per method and task of every evaluation
    profiles/<model>-<drafter>-<digest>.json the cost model of a cycle on this machine (make profile)
    traces/<model>-<drafter>-<task>-<digest> full draft trees at every position (make record)
    baselines/<model>-<drafter>/             the learned baselines' classifiers
    policies/<model>-<drafter>-<name>/       LTD's policies (`<reward>-<component>`, `humaneval`), Re-SpS's (`resps`)
    tables/<sweep>.md, .csv                  a sweep's Table 1 (make table1)
    sweeps/                                  Optuna studies of tree shapes (make sweep-tree)
    conf/controller/tuned-<model>.yaml       the best tree make sweep-tree found: controller=tuned-<model>
                                             (every entry point puts <results>/conf on Hydra's search path)
    analysis/                                the notebooks' HTML, CSV and figures (make analysis)
    run.md, run.json, peer.md, peer.json     the latest make run and make bench-peer tables
    bench-decode.json                        the latest make bench-decode
    dashboard/                               the W&B workspace and report as code (make dashboard)
    gpu-check/                               make gpu-check's tables and runs

Controller configs name trained weights through resolvers of this registry, filled from the job's
`results`, `model.name` and `drafter.kind`: `${ltd.policy:throughput-full,depth.pt}`,
`${ltd.baseline:disco.pt}`.
"""
from pathlib import Path

from omegaconf import OmegaConf


def tuned_name(model: str) -> str:
    """The controller config of the best tree make sweep-tree found for `model` (controller=tuned-<model>)."""
    return f"tuned-{model}"


class ResultPaths:
    """The paths of one results directory (`results=` of every job)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def store(self) -> Path:
        return self.root / "store.jsonl"

    def profile(self, file_name: str) -> Path:
        return self.root / "profiles" / file_name

    @property
    def profiles(self) -> Path:
        return self.root / "profiles"

    def traces(self, name: str) -> Path:
        return self.root / "traces" / name

    @property
    def all_traces(self) -> Path:
        return self.root / "traces"

    def baselines(self, model: str, drafter: str) -> Path:
        return self.root / "baselines" / f"{model}-{drafter}"

    def policies(self, model: str, drafter: str, name: str) -> Path:
        return self.root / "policies" / f"{model}-{drafter}-{name}"

    @property
    def all_policies(self) -> Path:
        return self.root / "policies"

    def resps(self, model: str, drafter: str) -> Path:
        """Where make resps keeps Re-SpS's policy (and make train looks for it)."""
        return self.policies(model, drafter, "resps")

    def table(self, sweep: str) -> Path:
        """A sweep's Table 1, without its suffix (.md and .csv)."""
        return self.root / "tables" / sweep

    @property
    def studies(self) -> Path:
        return self.root / "sweeps"

    @property
    def configs(self) -> Path:
        """Configs a job wrote for later ones (conf/<group>/...), on Hydra's search path."""
        return self.root / "conf"

    def tuned_tree(self, model: str) -> Path:
        return self.configs / "controller" / f"{tuned_name(model)}.yaml"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    def report(self, file_name: str) -> Path:
        """A command's latest output: run.md, run.json (make run), peer.md, peer.json (make bench-peer),
        bench-decode.json, dashboard/ (make dashboard), gpu-check/ (make gpu-check)."""
        return self.root / file_name


def policy_file(name: str, file: str, _root_) -> str:
    """`${ltd.policy:<name>,<file>}`: a file of the job's model and drafter's policies `<name>`."""
    paths = ResultPaths(_root_.get("results") or "results")
    return str(paths.policies(_root_.model.name, _root_.drafter.kind, name) / file)


def baseline_file(file: str, _root_) -> str:
    """`${ltd.baseline:<file>}`: a learned baseline's classifier for the job's model and drafter."""
    paths = ResultPaths(_root_.get("results") or "results")
    return str(paths.baselines(_root_.model.name, _root_.drafter.kind) / file)


def register_resolvers() -> None:
    """Make `${ltd.policy:...}` and `${ltd.baseline:...}` resolvable (ltd.config.files does, for
    every config ltd composes)."""
    OmegaConf.register_new_resolver("ltd.policy", policy_file, replace=True)
    OmegaConf.register_new_resolver("ltd.baseline", baseline_file, replace=True)
