"""make sweep-tree: an Optuna study (or the paper's grid) over static tree shapes, each trial
measured with the evaluation harness; the best shape becomes <results>/conf/controller/tuned-<model>.yaml,
with the key of what it was measured on (machine, model, drafter, settings) beside it. Every entry point
finds it there through Hydra's search path (`controller=tuned-<model>`, or `tuned` among methods),
before the tree ltd ships for the model.

    python -m ltd.cli.sweep_tree trials=40 tasks=null task=humaneval   # the paper's: HumanEval alone
    python -m ltd.cli.sweep_tree mode=grid questions=4

The search space covers every tree LTD may choose (depth up to trees.max_depth, top-k up to
trees.top_k, V up to LTD's largest size), so the tuned tree is the strongest static baseline there
is to find. With `tasks` (the default: the five of the evaluation), each trial decodes the last
`questions` of every one and scores the speed-up over all their tokens: a tree tuned on code alone
drafts too deep for chat. Each trial runs under the load guard (require_quiet=true refuses a busy
one) and stops the search if its tree's output is not the target's own. With `pruner=wilcoxon` (the
default) a trial whose questions so far are worse than the best trial's on the same questions stops
early (PRUNED), and the next trial starts sooner: docs/sweeps.md.

A study is keyed like every artefact: the default study name ends with the key's digest, so other
settings start another study; a study named with `study=` refuses settings other than its own.
`storage=sqlite:///studies.db` (or any database URL) lets several workers share one
study: started on one or many machines with the same study=, they finish `trials` together.
"""
from dataclasses import asdict
from pathlib import Path

import hydra
from omegaconf import OmegaConf

from ltd.baselines.tree_search import SearchJob, check_pruner, check_sampler, check_space, open_search, shape, tune
from ltd.cli.app import launch, run_directory, set_threads, user_errors
from ltd.config.files import CONFIG_PATH, chosen_tasks, found_tuned
from ltd.config.models import load_model, provenance
from ltd.config.schema import check_config
from ltd.core.fingerprints import digest
from ltd.core.provenance import Provenance
from ltd.core.results import ResultPaths
from ltd.core.tasks import load_questions, task_identity
from ltd.core.tracking import Tracker
from ltd.decoding.controller import StaticTree
from ltd.decoding.engine import Engine
from ltd.eval.machine_load import LoadGuard

STUDY = 4  # format of what a trial measures (4: questions in an order shuffled per batch, each an intermediate
# value; 3: rotation across trials, intervals; 2: the last questions of each task)


def search_job(cfg, who: Provenance) -> SearchJob:
    """The search a checked sweep_tree config describes, in plain values (make train builds one too)."""
    space = OmegaConf.to_object(cfg.space if cfg.mode == "optuna" else cfg.grid)
    check_space(cfg.mode, space)
    check_sampler(cfg.sampler)
    check_pruner(cfg.pruner, cfg.prune_p)
    tasks = chosen_tasks(cfg)
    tasks_name = "+".join(task.name for task in tasks)
    questions = [question for task in tasks for question in load_questions(task.path, cfg.questions,
                                                                              task.per_category, from_end=True)]
    key = {"artefact": "tree search", "format": STUDY, "batch": cfg.batch, **who.parts(),
           "task": [task_identity(task) for task in tasks] if cfg.tasks else task_identity(cfg.task),
           "mode": cfg.mode, "space": asdict(space), "seed": cfg.seed,
           # TPE's studies keep their names: the sampler is in the key when it is another
           **({"sampler": cfg.sampler} if cfg.mode == "optuna" and cfg.sampler != "tpe" else {}),
           "questions": cfg.questions, "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
           "warmup_tokens": cfg.warmup_tokens}
    name = cfg.study or f"tree-{cfg.model.name}-{tasks_name}-{cfg.mode}-{digest(key, 8)}"
    paths = ResultPaths(cfg.results)
    there = found_tuned(cfg.model.name, cfg.results)  # this results' own, or the shipped one
    return SearchJob(name, key, mode=cfg.mode, space=space, trials=cfg.trials, batch=cfg.batch, seed=cfg.seed,
                     storage=cfg.storage or str(paths.studies), questions=questions, tasks_name=tasks_name,
                     max_new_tokens=cfg.max_new_tokens,
                     temperature=cfg.temperature, warmup_tokens=cfg.warmup_tokens,
                     tuned_path=paths.tuned_tree(cfg.model.name) if cfg.write_best else None,
                     guard=LoadGuard(cfg.max_other_load, cfg.require_quiet), where=who.describe_machine(),
                     sampler=cfg.sampler, pruner=cfg.pruner, prune_p=cfg.prune_p,
                     start=earlier_tree(there, space) if cfg.mode == "optuna" else None)


def earlier_tree(path: Path | None, space) -> StaticTree | None:
    """The tuned tree at `path` (from any machine), where it lies in an optuna `space`: a new search
    measures it first."""
    if path is None or not path.is_file():
        return None
    settings = OmegaConf.to_container(OmegaConf.load(path))
    tree = StaticTree(settings["depth"], settings["top_k"], settings["verify"])
    bounds = (space.depth, space.top_k, space.verify)
    return tree if all(low <= value <= high for value, (low, high) in zip(shape(tree), bounds)) else None


def search_tracker(cfg, job: SearchJob, run_dir: Path) -> Tracker:
    logger = OmegaConf.to_object(cfg.logger)
    return Tracker(logger, run_dir, job_type="sweep",
                   name=f"sweep-tree-{cfg.model.name}-{job.tasks_name}-{run_dir.name}", group=cfg.experiment,
                   tags=[cfg.model.name, cfg.drafter.kind, *job.tasks_name.split("+"), cfg.mode],
                   config=OmegaConf.to_container(cfg, resolve=True))


@hydra.main(config_path=CONFIG_PATH, config_name="sweep_tree", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "sweep_tree")
        threads = set_threads(cfg.threads)
        OmegaConf.to_object(cfg.logger).validate()
        job = search_job(cfg, provenance(cfg, threads))
        run_dir = run_directory("a tree search")
        opened = open_search(job)
        target, drafter = load_model(cfg)
        tune(job, opened, Engine(target.decoder, target.stop_token_ids, drafter), target,
             search_tracker(cfg, job, run_dir))


if __name__ == "__main__":
    launch(main, "sweep_tree")
