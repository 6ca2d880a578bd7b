"""Train the paper's learned baselines (DISCO, SpecDec++, C2T) on a model's HumanEval traces
(`make record` first; `make train` calls it too) and write their weights where
conf/controller/{disco,specdec_pp,c2t}.yaml look for them; prints each one's held-out balanced accuracy.

    python -m ltd.cli.train_baselines epochs=5

The traces are the newest recorded for this model and drafter (their weights included) unless
`traces=` names a directory. The weights' directory holds their key: evaluations refuse them for
another model or drafter.
"""
from pathlib import Path

import hydra

from ltd.baselines.fit import KINDS, baselines_key, baselines_settings, fit_baselines
from ltd.cli.app import launch, set_threads, user_errors
from ltd.config.files import CONFIG_PATH
from ltd.config.models import identities
from ltd.config.schema import check_config
from ltd.core.artefacts import Artefact, note, read_key
from ltd.core.errors import LtdError
from ltd.core.results import ResultPaths
from ltd.traces.trace_sets import read_traces, recorded_traces, trace_set


def chosen_traces(cfg, model: dict, drafter: dict) -> Path:
    if cfg.traces:
        return Path(cfg.traces)
    found = recorded_traces(Path(cfg.results), model, drafter, "humaneval")
    if not found:
        raise LtdError(f"no traces of {cfg.model.name} with this {cfg.drafter.kind} drafter on humaneval in "
                       f"{cfg.results}/traces: make record ARGS='{record_args(cfg)}' records them")
    if len(found) > 1:
        note(f"{len(found)} trace directories fit this model and drafter; taking the newest, {found[0]} "
             f"(traces= names another)")
    return found[0]


def record_args(cfg) -> str:
    """The make record arguments for this run's model and drafter (the drafter config chosen, which
    a model config may have chosen itself)."""
    from hydra.core.hydra_config import HydraConfig

    return f"model={cfg.model.name} drafter={HydraConfig.get().runtime.choices['drafter']}"


@hydra.main(config_path=CONFIG_PATH, config_name="train_baselines", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "train_baselines")
        if not 0 < cfg.held_out < 1:
            raise LtdError(f"held_out must be a fraction between 0 and 1, got {cfg.held_out}")
        threads = set_threads(cfg.threads)
        model, drafter = identities(cfg)
        source = chosen_traces(cfg, model, drafter)
        files = sorted(source.glob("*.safetensors"))
        if not files:
            raise LtdError(f"no traces in {source}: make record ARGS='{record_args(cfg)}' records them")
        recorded = read_key(source, directory=True)
        if recorded is None:
            note(f"{source} has no key: its traces are taken as this model's and drafter's")
        else:
            model, drafter = recorded["model"], recorded["drafter"]
        traces = read_traces(files)
        key = baselines_key(model, drafter, trace_set(files), baselines_settings(cfg))
        output = Artefact(cfg.output or ResultPaths(cfg.results).baselines(cfg.model.name, cfg.drafter.kind),
                          key, "learned baselines", directory=True)
        output.open(owned=("*.pt",))
        print(f"{len(traces)} traces, {sum(t.positions for t in traces)} positions from {source}; {threads} threads")
        print(fit_baselines(cfg, traces, output.path))
        print(f"\nweights in {output.path}/{{{','.join(KINDS)}}}.pt")


if __name__ == "__main__":
    launch(main, "train_baselines")
