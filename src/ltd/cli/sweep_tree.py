"""make sweep-tree: an Optuna study (or the paper's grid) over static tree shapes, each trial
measured with the evaluation harness; the best shape becomes conf/controller/tuned-<model>.yaml,
with the key of what it was measured on (machine, model, drafter, settings) beside it.

    python -m ltd.cli.sweep_tree trials=40 tasks=null task=humaneval   # the paper's: HumanEval alone
    python -m ltd.cli.sweep_tree mode=grid questions=4

With `tasks` (the default: the five of the evaluation), each trial decodes the first `questions` of
every one and scores the speed-up over all their tokens: a tree tuned on code alone drafts too deep
for chat.

A study is keyed like every artefact: the default study name ends with the key's digest, so other
settings start another study; a study named with `study=` refuses settings other than its own.
`storage=sqlite:///results/sweeps/studies.db` (or any database URL) lets several workers share one
study: started on one or many machines with the same study=, they finish `trials` together.
"""
import datetime
from dataclasses import asdict
from pathlib import Path

import hydra
from omegaconf import OmegaConf

from ltd.cli.app import launch, run_directory, set_threads, user_errors
from ltd.config_files import CONFIG_PATH, chosen_tasks
from ltd.configured_models import identities, load_model
from ltd.decoding.controller import StaticTree
from ltd.decoding.engine import Engine
from ltd.eval.tasks import load_questions, task_identity
from ltd.eval.tree_search import (best_tree, best_trial, check_space, finished, open_keyed_study, search, tree_speedup,
                                  trials_table, write_tuned)
from ltd.fingerprints import describe_machine, digest, machine
from ltd.schema import check_config
from ltd.tracking import Tracker

STUDY = 2  # format of what a trial measures (2: the last questions of each task; 1 read the first)


@hydra.main(config_path=CONFIG_PATH, config_name="sweep_tree", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "sweep_tree")
        threads = set_threads(cfg.threads)
        space = OmegaConf.to_object(cfg.space if cfg.mode == "optuna" else cfg.grid)
        check_space(cfg.mode, space)
        tasks = chosen_tasks(cfg)
        tasks_name = "+".join(task.name for task in tasks)
        questions = [question for task in tasks for question in load_questions(task.path, cfg.questions,
                                                                                  task.per_category, from_end=True)]
        logger = OmegaConf.to_object(cfg.logger)
        logger.validate()
        model, drafter_id, here = *identities(cfg), machine(threads, cfg.model.device)
        key = {"artefact": "tree search", "format": STUDY, "model": model, "drafter": drafter_id, "machine": here,
               "task": [task_identity(task) for task in tasks] if cfg.tasks else task_identity(cfg.task),
               "mode": cfg.mode, "space": asdict(space), "seed": cfg.seed,
               "questions": cfg.questions, "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
               "warmup_tokens": cfg.warmup_tokens}
        name = cfg.study or f"tree-{cfg.model.name}-{tasks_name}-{cfg.mode}-{digest(key, 8)}"
        run_dir = run_directory("a tree search")
        study, location = open_keyed_study(cfg.storage, name, key, cfg.mode, space, cfg.seed)
        target, drafter = load_model(cfg)
        engine = Engine(target.decoder, target.stop_token_ids, drafter)
        tracker = Tracker(
            logger, run_dir, job_type="sweep",
            name=f"sweep-tree-{cfg.model.name}-{tasks_name}-{run_dir.name}", group=cfg.experiment,
            tags=[cfg.model.name, cfg.drafter.kind, *(task.name for task in tasks), cfg.mode],
            config=OmegaConf.to_container(cfg, resolve=True),
        )

        warm_up = target.encode_chat([{"role": "user", "content": questions[0].turns[0]}])
        engine.generate(warm_up, StaticTree(depth=3, top_k=4, verify=8), cfg.warmup_tokens)
        measure = tree_speedup(engine, target, questions, cfg.max_new_tokens, cfg.temperature, cfg.seed)
        search(study, cfg.trials, cfg.mode, space, measure, tracker, f"sweep {name}")

        trials = finished(study)
        if not trials:
            return
        print(f"\n{name}: {len(trials)} trials on {len(questions)} questions of {tasks_name}, up to "
              f"{cfg.max_new_tokens} new tokens, {threads} threads (study: {location})")
        print(trials_table(study))
        best = best_tree(study)
        if cfg.write_best:
            path = Path(CONFIG_PATH) / "controller" / f"tuned-{cfg.model.name}.yaml"
            note = (f"Best static tree for {cfg.model.name} from make sweep-tree (study {name}, {len(trials)} trials, "
                    f"{tasks_name}) on {describe_machine(here)}: speed-up {best_trial(study).value:.3f}x, "
                    f"{datetime.date.today()}")
            write_tuned(path, {**key, "artefact": "tuned tree", "study": name}, best, note)
            print(f"best: depth {best.depth}, top-k {best.top_k}, V {best.verify} -> {path} "
                  f"(make eval names it as method `tuned`)")


if __name__ == "__main__":
    launch(main, "sweep_tree")
