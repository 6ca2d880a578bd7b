"""make bench-env: environment steps per second of the replay backends (the size and the depth
environment), random actions, on the newest traces and cost model recorded for this model and
drafter (their weights included).

    python -m ltd.cli.bench_env batches=[256] steps=500
"""
import time

import hydra
import torch
from omegaconf import OmegaConf

from ltd.cli.app import launch, set_threads, user_errors
from ltd.config.files import CONFIG_PATH
from ltd.config.models import identities
from ltd.config.schema import check_config
from ltd.core.artefacts import find
from ltd.core.errors import LtdError
from ltd.core.results import ResultPaths
from ltd.core.tables import format_table
from ltd.rl.ltd.depth_env import DepthReplayEnv
from ltd.rl.ltd.size_env import SizeReplayEnv
from ltd.traces.cost_model import CostModel
from ltd.traces.trace_sets import read_traces, recorded_traces


@hydra.main(config_path=CONFIG_PATH, config_name="bench_env", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "bench_env")
        threads = set_threads(cfg.threads)
        results, (model, drafter) = ResultPaths(cfg.results), identities(cfg)
        profiles = find(results.profiles.glob("*.json"), {"model": model, "drafter": drafter}, directory=False)
        if not profiles:
            raise LtdError(f"no cost model of {cfg.model.name} with this {cfg.drafter.kind} drafter in "
                           f"{results.profiles}: make profile (or make train) measures one")
        costs = CostModel.load(profiles[0])
        directories = recorded_traces(results.root, model, drafter, cfg.traces)
        if not directories:
            raise LtdError(f"no {cfg.traces} traces of {cfg.model.name} with this {cfg.drafter.kind} drafter in "
                           f"{results.all_traces}: make record (or make train) records them")
        traces = [t for t in read_traces(sorted(directories[0].glob("*.safetensors"))) if t.positions]
        sizes = list(OmegaConf.to_container(cfg.ltd.sizes))
        envs = {"size": lambda b: SizeReplayEnv(traces, costs, sizes, batch=b),
                "depth": lambda b: DepthReplayEnv(traces, costs, batch=b, verify=cfg.ltd.depth_verify)}
        rows = []
        for name, make in envs.items():
            for batch in cfg.batches:
                env = make(batch)
                generator = torch.Generator().manual_seed(0)
                td = env.reset()
                for step in range(20 + cfg.steps):
                    if step == 20:
                        start = time.perf_counter()
                    td["action"] = torch.randint(env.action_spec.n, (batch,), generator=generator)
                    td = env.step_and_maybe_reset(td)[1]
                seconds = time.perf_counter() - start
                rows.append({"environment": name, "batch": batch, "steps/s": batch * cfg.steps / seconds,
                             "ms per call": 1000 * seconds / cfg.steps})
        print(f"replay environments on {len(traces)} traces ({sum(t.positions for t in traces)} positions) in "
              f"{directories[0]}, priced by {profiles[0]}; {threads} threads, random actions")
        print(format_table(rows, ["environment", "batch", "steps/s", "ms per call"]))


if __name__ == "__main__":
    launch(main, "bench_env")
