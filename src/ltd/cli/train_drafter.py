"""make drafter: train an EAGLE-3 head for the chosen target, or reuse the finished one.

    python -m ltd.cli.train_drafter model=smollm2-135m drafter=eagle3 drafter.train.epochs=3
"""
import hydra

from ltd.cli.app import launch, set_threads, user_errors
from ltd.config.files import CONFIG_PATH
from ltd.config.models import drafter_job, load_target_of, require_eagle3
from ltd.config.schema import check_config
from ltd.core.tables import format_table
from ltd.jobs.drafter import train_drafter


@hydra.main(config_path=CONFIG_PATH, config_name="train_drafter", version_base=None)
def main(cfg) -> None:
    with user_errors():
        require_eagle3(cfg, "make drafter trains")
        cfg = check_config(cfg, "train_drafter")
        threads = set_threads(cfg.threads)
        job = drafter_job(cfg.drafter)
        job.validate()
        target = load_target_of(cfg)
        directory, metrics = train_drafter(target, job, cfg.drafter.root)
        depth, top_k, verify = job.eval_tree
        print(f"\n{target.name}: EAGLE-3 head in {directory}")
        print(f"held-out corpus prompts: {metrics['prompts']}, {metrics['cycles']} cycles, tree depth {depth}, "
              f"top-k {top_k}, V {verify}, greedy, {threads} threads")
        rows = [{"depth": d, "acceptance": rate} for d, rate in enumerate(metrics["acceptance_by_depth"], start=1)]
        print(format_table(rows, ["depth", "acceptance"]))
        print(f"tau {metrics['tau']:.2f}; draft vocabulary covers {metrics['draft_vocab_coverage']:.1%} of the "
              f"target's top-1; final loss {metrics['final_loss']:.3f}; {metrics['train_steps']} steps in "
              f"{metrics['train_seconds'] / 60:.1f} min")


if __name__ == "__main__":
    launch(main, "train_drafter")
