"""make resps: Re-SpS's policy, trained online on the real engine as the paper trains it.

1. The grid of tree shapes: the paper's bins, or this machine's from its cost model (make profile).
2. The prompts: the first turns of the tasks' last questions (evaluation reads the first ones).
3. PPO on the online environment (ltd.rl.resps_env): windows of `persistence` cycles, each
   rewarded with its mean tokens per second; a progress bar; checkpoints after every batch.
4. The policy in <results>/policies/<model>-<drafter>-resps/policy.pt, keyed by the weights, the
   machine and the settings (a run with other settings starts over; the same one resumes), and the
   shapes it picks on the prompts' first states.

`controller=resps` (conf/controller/resps.yaml) then decodes with it in make run and make eval.
"""
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from ltd.artefacts import Artefact, read_or_drop
from ltd.decoding.engine import Engine, SpeculativeRun
from ltd.errors import LtdError
from ltd.eval.tasks import load_questions
from ltd.rl.resps_actions import Shape, action_grid, cost_model_bins, normalised_state, paper_grid
from ltd.rl.resps_env import train_resps
from ltd.rl.settings import ReSpSSettings
from ltd.traces.cost_model import CostModel, cost_model_file, cost_model_key


def resps_directory(results: str, model_name: str, drafter_kind: str) -> Path:
    """Where make resps keeps the policy (and make train looks for it)."""
    return Path(results) / "policies" / f"{model_name}-{drafter_kind}-resps"


def shapes_for(settings: ReSpSSettings, results: str, model: dict, drafter: dict, machine: dict,
               top_k: int) -> tuple[Shape, ...]:
    if settings.bins == "paper":
        return paper_grid()
    file = cost_model_file(results, cost_model_key(model, drafter, machine, top_k))
    costs = read_or_drop(file.path, CostModel.load, "measuring it again") if file.fresh else None
    if costs is None:
        raise LtdError(f"no cost model of {model['name']} with this drafter on this machine in {results}/profiles "
                       f"(top-k {top_k}): make profile measures one, or resps=paper takes the paper's bins")
    grid = action_grid(*cost_model_bins(costs, top_k, settings.budget))
    if not grid:
        raise LtdError(f"no tree shape of top-k up to {top_k} costs at most {settings.budget} target steps here: "
                       f"raise resps.budget, or top_k (make profile top_k=...)")
    return grid


def first_turns(target, tasks, questions: int) -> list[list[int]]:
    return [target.encode_chat([{"role": "user", "content": q.turns[0]}])
            for task in tasks for q in load_questions(task.path, questions, task.per_category, from_end=True)]


def run(target, drafter, settings: ReSpSSettings, grid: tuple[Shape, ...], prompts: list[list[int]],
        key: dict, directory: Path) -> Path:
    """Train (or go on training) the policy; returns its file."""
    policies = Artefact(directory, {**key, "settings": asdict(settings),
                                    "grid": [asdict(s) for s in grid]}, "a resps policy", directory=True)
    policies.open(owned=("*.pt",))
    engine = Engine(target.decoder, target.stop_token_ids, drafter)
    print(f"resps: {len(grid)} tree shapes (V {sorted({s.verify for s in grid})}, depth "
          f"{sorted({s.depth for s in grid})}, top-k {sorted({s.top_k for s in grid})}), {len(prompts)} prompts, "
          f"shapes held {settings.persistence} cycles")
    with tqdm(total=settings.ppo.frames, desc="ppo resps", unit="window") as bar:
        def log(metrics: dict) -> None:
            # ppo.batch_metrics names every loss term loss_*; loss_entropy is the policy's entropy itself.
            bar.set_postfix(window_tok_s=f"{metrics['reward_per_step']:.2f}", entropy=f"{metrics['loss_entropy']:.2f}")

        def progress(done: int, total: int) -> None:
            bar.n = done
            bar.refresh()

        policy = train_resps(engine, prompts, grid, settings.persistence, settings.hidden, settings.ppo, directory,
                             settings.max_new_tokens, log, progress)
    picked = Counter()
    with torch.no_grad():
        for prompt in prompts:
            state = SpeculativeRun(engine, prompt, max(s.top_k for s in grid), 1, state=True).state()
            picked[grid[int(policy(normalised_state(state)[None]).argmax())]] += 1
    print("most likely shapes on the prompts' first states: " + ", ".join(
        f"V {s.verify} depth {s.depth} top-k {s.top_k} ({n})" for s, n in picked.most_common(5)))
    print(f"policy: {directory / 'policy.pt'} (controller=resps decodes with it)")
    return directory / "policy.pt"
