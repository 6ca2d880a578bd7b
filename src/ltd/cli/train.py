"""make train: the whole LTD pipeline on one model (conf/train.yaml; the steps: ltd.jobs.train).

    python -m ltd.cli.train ltd=cpu                          # what `make train` runs
    python -m ltd.cli.train ltd=cpu reward=acceptance         # `make ablation reward=acceptance`
    python -m ltd.cli.train ltd=cpu tune=false                # never search a tuned tree here (best-constant stands in)

When `tuned` is among the evaluated methods and its tree was measured on another machine, model or
drafter (or is missing), make train first searches one here as make sweep-tree does
(conf/sweep_tree.yaml's budget), unless tune=false.
"""
from pathlib import Path

import hydra
from hydra import compose
from omegaconf import OmegaConf

from ltd.baselines.tree_search import SearchJob
from ltd.cli.app import launch, run_directory, set_threads, user_errors
from ltd.cli.sweep_tree import search_job
from ltd.config.files import CONFIG_PATH
from ltd.config.models import provenance
from ltd.config.schema import check_config
from ltd.controllers.methods import check_tuned_methods, tuned_here
from ltd.core.artefacts import note
from ltd.core.provenance import Provenance
from ltd.core.results import ResultPaths
from ltd.jobs import train
from ltd.jobs.sweeps import finished_before, in_sweep


def tree_search(cfg, who: Provenance) -> SearchJob | None:
    """The search make train runs first (None: none), per `tune`: true always, false never, null when
    the tuned tree evaluated was measured elsewhere or is missing."""
    if "tuned" not in cfg.evaluate.methods:
        return None
    if cfg.tune is False or (cfg.tune is None and tuned_here(tuned_path(cfg), who)):
        check_tuned_methods(["tuned"], cfg, who)
        if not tuned_here(tuned_path(cfg), who):
            note("tune=false: best-constant (make train's own static baseline) stands in as the fair one, and LTD's "
                 "ratio is reported against the better of the two")
        return None
    search = OmegaConf.merge(compose("sweep_tree"), {
        "model": cfg.model, "drafter": cfg.drafter, "trees": cfg.trees, "threads": cfg.threads,
        "logger": cfg.logger, "experiment": cfg.experiment, "storage": str(ResultPaths(cfg.results).studies),
        "max_other_load": cfg.max_other_load, "require_quiet": cfg.require_quiet})
    return search_job(check_config(search, "sweep_tree"), who)


def tuned_path(cfg) -> Path:
    return Path(CONFIG_PATH) / "controller" / f"tuned-{cfg.model.name}.yaml"


@hydra.main(config_path=CONFIG_PATH, config_name="train", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "train")
        baselines = check_config(compose("train_baselines"), "train_baselines")
        threads = set_threads(cfg.threads)
        who = provenance(cfg, threads)
        job = train.prepare(cfg, baselines, who)
        job.search = tree_search(cfg, who)
        run_dir = run_directory("a make train run")
        if in_sweep() and finished_before(cfg.results, run_dir):
            return
        train.run(job, run_dir)


if __name__ == "__main__":
    launch(main, "train")
