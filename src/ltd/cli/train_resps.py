"""make resps: Re-SpS's policy trained online on the real engine (conf/train_resps.yaml; the steps:
ltd.resps_pipeline). Then `controller=resps` decodes with it.

    python -m ltd.cli.train_resps                      # the bins from this machine's profile (make profile)
    python -m ltd.cli.train_resps resps=paper          # the paper's bins and budget
"""
import hydra
from omegaconf import OmegaConf

from ltd import resps_pipeline
from ltd.cli.app import launch, set_threads, user_errors
from ltd.config_files import CONFIG_PATH, chosen_tasks
from ltd.configured_models import identities, load_model
from ltd.fingerprints import machine
from ltd.schema import check_config


@hydra.main(config_path=CONFIG_PATH, config_name="train_resps", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "train_resps")
        settings = OmegaConf.to_object(cfg.resps)
        settings.validate()
        threads = set_threads(cfg.threads)
        (model, drafter), here = identities(cfg), machine(threads, cfg.model.device)
        grid = resps_pipeline.shapes_for(settings, cfg.results, model, drafter, here, cfg.top_k)
        target, draft = load_model(cfg)
        prompts = resps_pipeline.first_turns(target, chosen_tasks(cfg), cfg.questions)
        directory = resps_pipeline.resps_directory(cfg.results, cfg.model.name, cfg.drafter.kind)
        key = {"artefact": "resps policy", "model": model, "drafter": drafter, "machine": here,
               "tasks": list(cfg.tasks), "questions": cfg.questions}
        resps_pipeline.run(target, draft, settings, grid, prompts, key, directory)


if __name__ == "__main__":
    launch(main, "train_resps")
