"""Train the paper's learned baselines (DISCO, SpecDec++, C2T) on a model's HumanEval traces
(`make record` first; `make train` calls it too) and write their weights where conf/controller/{disco,specdec_pp,c2t}.yaml
look for them; prints each one's held-out balanced accuracy.

    python -m ltd.cli.train_baselines epochs=5
"""
from pathlib import Path

import hydra

from ltd.cli.app import CONFIG_PATH, launch, set_threads, user_errors
from ltd.cli.schema import check_config
from ltd.errors import LtdError
from ltd.eval.report import format_table
from ltd.learned.classifiers import save_classifier
from ltd.learned.train import KINDS, TrainSettings, train_baseline
from ltd.traces.record import Trace


def fit_baselines(cfg, traces: list[Trace], output: Path, kinds: tuple[str, ...] = KINDS) -> str:
    """Train `kinds` on `traces` with the settings of a train_baselines config, write their
    weights to `output`; returns the table of what each learned."""
    settings = TrainSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                             held_out=cfg.held_out, seed=cfg.seed)
    table = []
    for kind in kinds:
        depth = cfg.c2t_depth if kind == "c2t" else None
        trained, metrics = train_baseline(kind, traces, cfg.hidden[kind], settings, depth)
        save_classifier(output / f"{kind}.pt", trained)
        table.append(dict(baseline=kind, rows=metrics["rows"], **{"held-out": metrics["held_out_rows"],
                          "loss before": metrics["held_out_loss_before"], "loss after": metrics["held_out_loss"],
                          "balanced accuracy": metrics["balanced_accuracy"]}))
    return format_table(table, list(table[0]))


@hydra.main(config_path=CONFIG_PATH, config_name="train_baselines", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "train_baselines")
        threads = set_threads(cfg.threads)
        name = f"{cfg.model.name}-{cfg.drafter.kind}"
        source = Path(cfg.traces or f"results/traces/{name}-humaneval")
        files = sorted(source.glob("*.safetensors"))
        if not files:
            raise LtdError(f"no traces in {source}: make record ARGS='model={cfg.model.name} "
                           f"drafter={cfg.drafter.kind}' records them")
        traces = [Trace.load(f) for f in files]
        output = Path(cfg.output or f"results/baselines/{name}")
        print(f"{len(traces)} traces, {sum(t.positions for t in traces)} positions from {source}; {threads} threads")
        print(fit_baselines(cfg, traces, output))
        print(f"\nweights in {output}/{{{','.join(KINDS)}}}.pt")


if __name__ == "__main__":
    launch(main)
