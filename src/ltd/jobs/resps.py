"""make resps: Re-SpS's policy, trained in replay (the default on a CPU) or online on the real
engine as the paper trains it.

1. The grid of tree shapes: the paper's bins, or this machine's from its cost model (make profile).
2. Replay: the tasks' last questions recorded once per top-k of the grid, with the target's states
   (make record states=true; reused when there); the last `validation` of each task held out.
   Online: the first turns of the tasks' last questions as prompts.
3. PPO (ltd.rl.resps.replay, ltd.rl.resps.env): windows of `persistence` cycles, each rewarded with
   its mean tokens per second; a progress bar; W&B curves; checkpoints after every batch. In
   replay the checkpoint kept is the one with the best held-out speed-up.
4. The policy in <results>/policies/<model>-<drafter>-resps/policy.pt, keyed by the weights, the
   machine and the settings (a run with other settings starts over; the same one resumes), and the
   shapes it picks; in replay, its held-out speed-up held 1, 10 and 30 cycles (the paper's
   persistence ablation) beside the best constant shape.

`controller=resps` (conf/controller/resps.yaml) then decodes with it in make run and make eval.
"""
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ltd.core.artefacts import Artefact
from ltd.core.errors import LtdError
from ltd.core.provenance import Provenance
from ltd.core.results import ResultPaths
from ltd.core.tasks import load_questions
from ltd.core.tracking import Tracker
from ltd.decoding.engine import Engine, SpeculativeRun
from ltd.rl.resps.actions import Shape, action_grid, cost_model_bins, normalised_state, paper_grid
from ltd.rl.resps.env import ReSpSOnlineEnv, resps_spec, train_resps
from ltd.rl.resps.replay import ReSpSReplayEnv, ShapeTables, best_constant_shape, resps_replay_speedup
from ltd.rl.settings import ReSpSSettings
from ltd.traces.cost_model import CostModel, cost_model_file, cost_model_key, saved_cost_model
from ltd.traces.trace_sets import record_tasks, trace_set

PERSISTENCE_ABLATION = (1, 10, 30)


def cost_model_for(results: str, who: Provenance, top_k: int) -> CostModel:
    file = cost_model_file(results, cost_model_key(who.model, who.drafter, who.machine, top_k))
    costs = saved_cost_model(file)
    if costs is None:
        raise LtdError(f"no cost model of {who.model['name']} with this drafter on this machine in "
                       f"{ResultPaths(results).profiles} (top-k {top_k}): make profile measures one (resps=paper "
                       f"trains online on the paper's bins without it)")
    return costs


def shapes_for(settings: ReSpSSettings, costs: CostModel | None, top_k: int) -> tuple[Shape, ...]:
    if settings.bins == "paper":
        return paper_grid()
    grid = action_grid(*cost_model_bins(costs, top_k, settings.budget))
    if not grid:
        raise LtdError(f"no tree shape of top-k up to {top_k} costs at most {settings.budget} target steps here: "
                       f"raise resps.budget, or top_k (make profile top_k=...)")
    return grid


def first_turns(target, tasks, questions: int) -> list[list[int]]:
    return [target.encode_chat([{"role": "user", "content": q.turns[0]}])
            for task in tasks for q in load_questions(task.path, questions, task.per_category, from_end=True)]


@dataclass
class ReSpSJob:
    """What make resps trains on, and where: plain values from conf/train_resps.yaml."""
    settings: ReSpSSettings
    grid: tuple[Shape, ...]
    costs: CostModel | None  # prices replay (and made the cost_model bins)
    tasks: list  # task configs
    questions: int  # the last N of each task
    validation: int  # (replay) the last N of those, held out
    results: str
    who: Provenance  # for the policy's key


def train(target, drafter, job: ReSpSJob, tracker: Tracker) -> Path:
    """Train (or go on training) the policy; returns its file."""
    s, grid, held = job.settings, job.grid, None
    key = {"artefact": "resps policy", **job.who.parts(), "tasks": [t.name for t in job.tasks],
           "questions": job.questions, "settings": asdict(s), "grid": [asdict(shape) for shape in grid]}
    prompts = first_turns(target, job.tasks, job.questions)
    if s.environment == "replay":
        tables, held, key["traces"] = replay_tables(target, drafter, job)
        make_env = lambda: ReSpSReplayEnv(tables, s.persistence, s.envs, s.ppo.seed)
    else:
        engine = Engine(target.decoder, target.stop_token_ids, drafter)
        make_env = lambda: ReSpSOnlineEnv(engine, prompts, grid=grid, state_width=target.decoder.spec.hidden_size,
                                          persistence=s.persistence, max_new_tokens=s.max_new_tokens, seed=s.ppo.seed)
    directory = ResultPaths(job.results).resps(job.who.model["name"], job.who.drafter["kind"])
    Artefact(directory, key, "a resps policy", directory=True).open(owned=("*.pt",))
    print(f"resps ({s.environment}): {len(grid)} tree shapes (V {sorted({x.verify for x in grid})}, depth "
          f"{sorted({x.depth for x in grid})}, top-k {sorted({x.top_k for x in grid})}), shapes held "
          f"{s.persistence} cycles")
    policy = ppo(make_env, resps_spec(grid, target.decoder.spec.hidden_size, s.hidden), settings=s, directory=directory,
                 tracker=tracker, held=held)
    print(f"most likely shapes on the training prompts' first states: "
          f"{most_likely_shapes(target, drafter, policy, grid, prompts)}")
    print(f"policy: {directory / 'policy.pt'} (controller=resps decodes with it)")
    return directory / "policy.pt"


def replay_tables(target, drafter, job: ReSpSJob) -> tuple[ShapeTables, ShapeTables, dict]:
    """(training tables, held-out tables, the trace sets for the policy's key): each task's last
    questions recorded once per top-k of the grid, to its deepest level, with the states."""
    train, held, sets = {}, {}, {}
    for k in sorted({s.top_k for s in job.grid}):
        recorded = record_tasks(target, drafter, results=job.results, model=job.who.model,
                                drafter_id=job.who.drafter, tasks=job.tasks, questions=job.questions,
                                validation=job.validation, max_new_tokens=job.settings.max_new_tokens, top_k=k,
                                max_depth=max(s.depth for s in job.grid), states=True)
        train[k], held[k] = recorded.train, recorded.held_out
        sets[str(k)] = [trace_set(recorded.train_paths), trace_set(recorded.held_paths)]
    if not all(held.values()) or not all(train.values()):
        raise LtdError("replay needs answers to train on and held-out ones: check questions and validation")
    return ShapeTables(train, job.costs, job.grid), ShapeTables(held, job.costs, job.grid), sets


def ppo(make_env, spec, settings: ReSpSSettings, directory: Path, tracker: Tracker, held: ShapeTables | None):
    """PPO with a progress bar and W&B curves; in replay, validated on `held` (the best checkpoint
    is kept) and then the persistence ablation on it."""
    validate = None
    if held is not None:
        best, scored = best_constant_shape(held)
        print(f"held-out replay: the best constant shape, {held.grid[best]}, runs {scored['speedup']:.2f}x "
              f"(tau {scored['tau']:.2f})")
        validate = lambda policy: resps_replay_speedup(held, policy, settings.persistence)["speedup"]
    with tqdm(total=settings.ppo.frames, desc="ppo resps", unit="window") as bar:
        def log(metrics: dict) -> None:
            tracker.log(metrics, step=metrics["batch"])
            shown = dict(window_tok_s=f"{metrics['reward_per_step']:.2f}", entropy=f"{metrics['entropy']:.2f}")
            if "validation" in metrics:
                shown["held_out"] = f"{metrics['validation']:.2f}x"
            bar.set_postfix(shown)

        def progress(done: int, total: int) -> None:
            bar.n = done
            bar.refresh()

        policy = train_resps(make_env, spec, settings=settings.ppo, directory=directory, validate=validate, log=log,
                             progress=progress)
    if held is not None:
        rows = {n: resps_replay_speedup(held, policy, n) for n in PERSISTENCE_ABLATION}
        print("held-out replay, the policy's most likely shape held N cycles: " + ", ".join(
            f"N {n}: {r['speedup']:.2f}x (tau {r['tau']:.2f}, {r['shapes']} shapes)" for n, r in rows.items()))
        tracker.summarise({f"held_out/speedup_persistence_{n}": r["speedup"] for n, r in rows.items()})
    return policy


@torch.no_grad()
def most_likely_shapes(target, drafter, policy, grid: tuple[Shape, ...], prompts: list[list[int]]) -> str:
    """The policy's most likely shapes on the prompts' first states."""
    engine, picked = Engine(target.decoder, target.stop_token_ids, drafter), Counter()
    for prompt in prompts:
        state = SpeculativeRun(engine, prompt, max(s.top_k for s in grid), 1, state=True).state()
        picked[grid[int(policy(normalised_state(state)[None]).argmax())]] += 1
    return ", ".join(f"{shape} ({n})" for shape, n in picked.most_common(5))
