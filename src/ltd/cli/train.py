"""make train: the whole LTD pipeline on one model (conf/train.yaml; the steps: ltd.ltd_pipeline).

    python -m ltd.cli.train ltd=cpu                          # what `make train` runs
    python -m ltd.cli.train ltd=cpu reward=acceptance         # `make ablation reward=acceptance`
"""
import sys

import hydra
from hydra import compose

from ltd import ltd_pipeline
from ltd.cli.app import launch, run_directory, set_threads, user_errors
from ltd.config_files import CONFIG_PATH
from ltd.configured_models import identities
from ltd.fingerprints import machine
from ltd.schema import check_config
from ltd.sweeps import finished_before, in_sweep


@hydra.main(config_path=CONFIG_PATH, config_name="train", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "train")
        baselines = check_config(compose("train_baselines"), "train_baselines")
        threads = set_threads(cfg.threads)
        model, drafter = identities(cfg)
        job = ltd_pipeline.prepare(cfg, baselines, model, drafter, machine(threads, cfg.model.device))
        run_dir = run_directory("a make train run")
        if in_sweep() and finished_before(cfg.results, run_dir):
            return
        lossless = ltd_pipeline.run(job, run_dir)
    if not lossless:
        print("error: a method's output differs from autoregressive decoding", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    launch(main, "train")
