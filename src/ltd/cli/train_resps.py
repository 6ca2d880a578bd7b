"""make resps: Re-SpS's policy (conf/train_resps.yaml; the steps: ltd.jobs.resps), trained in
replay on traces recorded with the target's states, or online on the real engine. Then
`controller=resps` decodes with it.

    python -m ltd.cli.train_resps                          # replay, the bins from this machine's profile
    python -m ltd.cli.train_resps resps=paper              # the paper's bins and settings, online
    python -m ltd.cli.train_resps resps.persistence=30     # shapes held 30 cycles in training
"""
import hydra
from omegaconf import OmegaConf

from ltd.cli.app import launch, run_directory, set_threads, user_errors
from ltd.config.files import CONFIG_PATH, chosen_tasks
from ltd.config.models import load_model, provenance
from ltd.config.schema import check_config
from ltd.core.tracking import Tracker
from ltd.jobs import resps


@hydra.main(config_path=CONFIG_PATH, config_name="train_resps", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "train_resps")
        settings, logger = OmegaConf.to_object(cfg.resps), OmegaConf.to_object(cfg.logger)
        settings.validate()
        logger.validate()
        threads = set_threads(cfg.threads)
        who = provenance(cfg, threads)
        needs_costs = settings.bins == "cost_model" or settings.environment == "replay"
        costs = resps.cost_model_for(cfg.results, who, cfg.top_k) if needs_costs else None
        job = resps.ReSpSJob(settings, resps.shapes_for(settings, costs, cfg.top_k), costs=costs,
                             tasks=chosen_tasks(cfg), questions=cfg.questions, validation=cfg.validation,
                             results=cfg.results, who=who)
        target, draft = load_model(cfg)
        with Tracker(logger, run_directory("a make resps run"), job_type="resps", group=cfg.experiment,
                     name=f"resps-{cfg.model.name}-{settings.environment}", tags=[cfg.model.name, cfg.drafter.kind,
                     "resps"], config=OmegaConf.to_container(cfg, resolve=True)) as tracker:
            resps.train(target, draft, job, tracker)


if __name__ == "__main__":
    launch(main, "train_resps")
