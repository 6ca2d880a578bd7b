"""make train: the whole LTD pipeline on one model (conf/train.yaml; the steps: ltd.jobs.train).

    python -m ltd.cli.train ltd=cpu                          # what `make train` runs
    python -m ltd.cli.train ltd=cpu reward=acceptance         # `make ablation reward=acceptance`
    python -m ltd.cli.train ltd=cpu tune=false                # never search a tuned tree here (best-constant stands in)

When `tuned` is among the evaluated methods and its tree was measured on another machine, model or
drafter (or is missing), make train first searches one here as make sweep-tree does
(conf/sweep_tree.yaml's budget), unless tune=false.
"""

import hydra
from hydra import compose
from omegaconf import OmegaConf

from ltd.baselines.tree_search import SearchJob
from ltd.cli.app import launch, run_directory, set_threads, user_errors
from ltd.cli.sweep_tree import search_job
from ltd.config.files import CONFIG_PATH, found_tuned
from ltd.config.models import provenance
from ltd.config.schema import check_config
from ltd.controllers.methods import check_tuned_methods, tuned_here
from ltd.core.artefacts import note
from ltd.core.provenance import Provenance
from ltd.jobs import train
from ltd.jobs.sweeps import finished_before, in_sweep


def tree_search(cfg, who: Provenance) -> SearchJob | None:
    """The search make train runs first (None: none), per `tune`: true always, false never, null when
    the tuned tree evaluated was measured elsewhere or is missing."""
    if "tuned" not in cfg.evaluate.methods:
        return None
    tuned = found_tuned(cfg.model.name, cfg.results)
    if cfg.tune is False or (cfg.tune is None and tuned is not None and tuned_here(tuned, who)):
        check_tuned_methods(["tuned"], cfg, who)
        if tuned is None or not tuned_here(tuned, who):
            note("tune=false: best-constant (make train's own static baseline) stands in as the fair one, and LTD's "
                 "ratio is reported against the better of the two")
        return None
    search = OmegaConf.merge(compose("sweep_tree"), {
        "model": cfg.model, "drafter": cfg.drafter, "trees": cfg.trees, "threads": cfg.threads,
        "logger": cfg.logger, "experiment": cfg.experiment, "results": cfg.results,
        "max_other_load": cfg.max_other_load, "require_quiet": cfg.require_quiet})
    return search_job(check_config(search, "sweep_tree"), who)


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
