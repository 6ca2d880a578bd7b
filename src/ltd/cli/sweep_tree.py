"""make sweep-tree: an Optuna study (or the paper's grid) over static tree shapes, each trial
measured with the evaluation harness; the best shape becomes conf/controller/tuned-<model>.yaml.

    python -m ltd.cli.sweep_tree trials=40 task=humaneval
    python -m ltd.cli.sweep_tree mode=grid questions=4
"""
import datetime
from pathlib import Path

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from tqdm import tqdm

from ltd.atomic import write_file
from ltd.cli.app import CONFIG_PATH, launch, load_model, set_threads, user_errors
from ltd.cli.schema import check_config
from ltd.decoding.controller import StaticTree
from ltd.decoding.engine import Engine
from ltd.eval.report import format_table
from ltd.eval.runner import AUTOREGRESSIVE, Method, run_question, summarise
from ltd.eval.tasks import load_questions
from ltd.eval.tree_search import TreeSpace, finished, open_study, run_study, tuned_config
from ltd.tracking import LoggerSettings, Tracker


@hydra.main(config_path=CONFIG_PATH, config_name="sweep_tree", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "sweep_tree")
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        threads = set_threads(cfg.threads)
        space = TreeSpace(**OmegaConf.to_container(cfg.space if cfg.mode == "optuna" else cfg.grid))
        name = cfg.study or f"tree-{cfg.model.name}-{cfg.task.name}-{cfg.mode}"
        study = open_study(name, Path(cfg.storage) / f"{name}.journal", cfg.mode, space, cfg.seed)
        questions = load_questions(cfg.task.path, cfg.questions, cfg.task.per_category)
        logger = LoggerSettings(**OmegaConf.to_container(cfg.logger))
        logger.validate()
        target, drafter = load_model(cfg)
        engine = Engine(target.decoder, target.stop_token_ids, drafter)
        tracker = Tracker(
            logger, run_dir, job_type="sweep",
            name=f"sweep-tree-{cfg.model.name}-{cfg.task.name}-{run_dir.name}", group=cfg.experiment,
            tags=[cfg.model.name, cfg.drafter.kind, cfg.task.name, cfg.mode],
            config=OmegaConf.to_container(cfg, resolve=True),
        )

        def measure(tree: StaticTree):
            methods = [Method(AUTOREGRESSIVE), Method("tree", tree)]
            rows = []
            for number, question in enumerate(questions):
                rows += run_question(engine, target, methods, question, number, cfg.max_new_tokens, cfg.temperature,
                                     cfg.seed)[1]
            result = {row["method"]: row for row in summarise(pd.DataFrame(rows), [AUTOREGRESSIVE, "tree"])}
            tree_row = result["tree"]
            return tree_row["speed-up"], {"tau": tree_row["tau"], "tok/s": tree_row["tok/s"],
                                          "autoregressive tok/s": result[AUTOREGRESSIVE]["tok/s"],
                                          "lossless": tree_row["lossless"]}

        done = len(finished(study))
        bar = tqdm(total=cfg.trials, initial=min(done, cfg.trials), desc=f"sweep {name}", unit="trial")

        def on_trial(number, tree, value, details):
            bar.update()
            bar.set_postfix(best=f"{study.best_value:.3f}x", refresh=False)
            tracker.log({"speed-up": value, "depth": tree.depth, "top_k": tree.top_k, "verify": tree.verify,
                         "tau": details["tau"]}, step=number)

        warm_up = target.encode_chat([{"role": "user", "content": questions[0].turns[0]}])
        engine.generate(warm_up, StaticTree(depth=3, top_k=4, verify=8), cfg.warmup_tokens)
        try:
            run_study(study, cfg.trials, cfg.mode, space, measure, on_trial)
        finally:
            bar.close()
            if finished(study):
                tracker.summarise({"best/speed-up": study.best_value, **{f"best/{k}": v for k, v in
                                                                          study.best_params.items()}})
            tracker.finish()

        trials = finished(study)
        rows = [dict(trial=t.number, depth=t.params["depth"], top_k=t.params["top_k"], verify=t.params["verify"],
                     **{"speed-up": t.value}, tau=t.user_attrs["tau"], lossless=t.user_attrs["lossless"])
                for t in sorted(trials, key=lambda t: -t.value)]
        print(f"\n{name}: {len(trials)} trials on {len(questions)} {cfg.task.name} questions, up to "
              f"{cfg.max_new_tokens} new tokens, {threads} threads (study: {Path(cfg.storage) / name}.journal)")
        print(format_table(rows[:10], ["trial", "depth", "top_k", "verify", "speed-up", "tau", "lossless"]))
        best = StaticTree(**study.best_params)
        if cfg.write_best:
            path = Path(CONFIG_PATH) / "controller" / f"tuned-{cfg.model.name}.yaml"
            note = (f"Best static tree for {cfg.model.name} from make sweep-tree (study {name}, {len(trials)} trials, "
                    f"{cfg.task.name}): speed-up {study.best_value:.3f}x, {datetime.date.today()}")
            write_file(path, lambda tmp: tmp.write_text(tuned_config(best, note)))
            print(f"best: depth {best.depth}, top-k {best.top_k}, V {best.verify} -> {path} "
                  f"(make eval names it as method `tuned`)")


if __name__ == "__main__":
    launch(main)
