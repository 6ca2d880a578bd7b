"""make profile: measure this machine's cost model for a target and drafter, print it, save it.

    python -m ltd.cli.profile contexts=[256,1024] repeats=3
    python -m ltd.cli.profile require_quiet=true     # refuse to profile on a busy machine

The profile goes to results/profiles/<model>-<drafter>-<digest>.json with its key beside it (the
model and drafter with their weights, this machine and thread count, top_k): make train reuses it
only where all of these are the same.
"""

import hydra
from tqdm import tqdm

from ltd.cli.app import launch, set_threads, user_errors
from ltd.config.files import CONFIG_PATH
from ltd.config.models import load_model, provenance
from ltd.config.schema import check_config
from ltd.core.artefacts import Artefact
from ltd.core.tables import format_table
from ltd.eval.machine_load import LoadGuard
from ltd.jobs.profile import ensure_cost_model
from ltd.traces.cost_model import CostModel, cost_model_file, cost_model_key
from ltd.traces.profiler import check_profile, measure_cost_model


def cost_tables(costs: CostModel) -> str:
    """The passes' milliseconds per context, then the engine's overhead per context and V."""
    rows, overheads = [], []
    for i, context in enumerate(costs.contexts):
        expansions = costs.expand_s[i]
        row = {"context": context, "absorb 1": 1000 * costs.absorb_s[i][0],
               f"absorb {costs.max_depth + 1}": 1000 * costs.absorb_s[i][-1],
               "expansion": 1000 * sum(expansions) / max(1, len(expansions))}
        rows.append(row | {f"V={v}": 1000 * s for v, s in zip(costs.verify_sizes, costs.verify_s[i])})
        overhead = zip(costs.verify_sizes, costs.overhead_s[i])
        overheads.append({"context": context} | {f"V={v}": 1000 * s for v, s in overhead})
    return (f"{format_table(rows, list(rows[0]))}\n"
            f"absorb n: the drafter absorbs n tokens, what a cycle accepted and its bonus (the root expansion); "
            f"expansion: one further level of {costs.top_k} fed nodes (mean over levels 2-{costs.max_depth}); "
            "V=n: the target verifies the root and n draft tokens\n\nthe engine's time a cycle outside these passes "
            f"(ms), by V verified:\n{format_table(overheads, list(overheads[0]))}")


@hydra.main(config_path=CONFIG_PATH, config_name="profile", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "profile")
        threads = set_threads(cfg.threads)
        check_profile(list(cfg.contexts), list(cfg.verify_sizes), top_k=cfg.top_k, max_depth=cfg.max_depth,
                      repeats=cfg.repeats, max_positions=cfg.model.max_context, model_name=cfg.model.name)
        who = provenance(cfg, threads)
        key = cost_model_key(who.model, who.drafter, who.machine, cfg.top_k)
        output = Artefact(cfg.output, key, "cost model") if cfg.output else cost_model_file(cfg.results, key)
        target, drafter = load_model(cfg)

        def measure(saved):
            with tqdm(total=len(cfg.contexts) * (cfg.repeats + 1), desc="profile", unit="round") as bar:
                return measure_cost_model(target, drafter, drafter_name=cfg.drafter.kind, threads=threads,
                                          contexts=list(cfg.contexts), verify_sizes=list(cfg.verify_sizes),
                                          top_k=cfg.top_k, max_depth=cfg.max_depth, repeats=cfg.repeats,
                                          progress=bar.update)

        costs, verdict = ensure_cost_model(output, measure, reuse=lambda saved: False,
                                           guard=LoadGuard(cfg.max_other_load, cfg.require_quiet))

        print(f"\n{target.name} with drafter {cfg.drafter.kind} on {who.describe_machine()}: milliseconds "
              f"(medians of {cfg.repeats})")
        print(cost_tables(costs))
        print(verdict)
        print(f"written: {output.path}")


if __name__ == "__main__":
    launch(main, "profile")
