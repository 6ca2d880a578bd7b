"""make drafter-rl: PPOW, the second training stage of an EAGLE-3 head, and its ablations
(conf/train_ppow.yaml, conf/ppow/; the steps: ltd.jobs.ppow). `make drafter` first.

    python -m ltd.cli.train_ppow                                           # SmolLM2-135M's head, full PPOW
    python -m ltd.cli.train_ppow variants=[full,no_proximity,no_windowing,no_both,cst]   # the ablation table
    python -m ltd.cli.train_ppow model=qwen2.5-coder-1.5b drafter=eagle3
"""
import hydra
from omegaconf import OmegaConf

from ltd.cli.app import launch, run_directory, set_threads, user_errors
from ltd.config.files import CONFIG_PATH, chosen_tasks, ppow_variants
from ltd.config.models import drafter_job, load_model, provenance, require_eagle3
from ltd.config.schema import check_config
from ltd.core.tracking import Tracker
from ltd.decoding.controller import StaticTree
from ltd.jobs import ppow


@hydra.main(config_path=CONFIG_PATH, config_name="train_ppow", version_base=None)
def main(cfg) -> None:
    with user_errors():
        require_eagle3(cfg, "PPOW tunes")
        cfg = check_config(cfg, "train_ppow")
        variants, logger = ppow_variants(cfg), OmegaConf.to_object(cfg.logger)
        logger.validate()
        StaticTree(*cfg.eval_tree)
        threads = set_threads(cfg.threads)
        who = provenance(cfg, threads)
        job = ppow.PPOWJob(drafter_job(cfg.drafter), variants, tasks=chosen_tasks(cfg), questions=cfg.questions,
                           max_new_tokens=cfg.max_new_tokens, eval_tree=tuple(cfg.eval_tree), root=cfg.drafter.root,
                           results=cfg.results, who=who)
        target, draft = load_model(cfg)
        run_dir = run_directory("a make drafter-rl run")
        with Tracker(logger, run_dir, job_type="drafter-rl", group=cfg.experiment, name=f"ppow-{cfg.model.name}",
                     tags=[cfg.model.name, "ppow", *cfg.variants],
                     config=OmegaConf.to_container(cfg, resolve=True)) as tracker:
            ppow.run(target, draft, job=job, threads=threads, run_dir=run_dir, tracker=tracker)


if __name__ == "__main__":
    launch(main, "train_ppow")
