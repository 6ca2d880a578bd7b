"""Re-SpS's environment, online on the real engine as the paper trains it: a step takes one tree
shape (an index into the grid), drafts and verifies `persistence` cycles with it (fewer where the
answer ends), and is rewarded with the mean of their tokens per second; the observation is the
target's normalised hidden state at the last accepted token.

As in the paper each window is one episode (done after every step), but the answer goes on: a
reset starts a new prompt only once the answer being decoded has ended. With an episode a step,
PPO's advantage is the window's reward against the critic's estimate for that state.
"""
from collections.abc import Callable
from pathlib import Path

import torch
from tensordict import TensorDict
from torchrl.envs import EnvBase

from ltd.core.errors import LtdError
from ltd.decoding.controller import StaticTree
from ltd.decoding.engine import Engine, SpeculativeRun
from ltd.rl.env_base import PolicyEnv, step_output
from ltd.rl.policies import Policy, PolicySpec
from ltd.rl.ppo import PPOTrainer
from ltd.rl.resps.actions import Shape, normalised_state
from ltd.rl.settings import PPOSettings


class ReSpSOnlineEnv(PolicyEnv):
    def __init__(self, engine: Engine, prompts: list[list[int]], grid: tuple[Shape, ...], state_width: int,
                 persistence: int, max_new_tokens: int = 256, seed: int = 0):
        if not prompts:
            raise LtdError("the resps environment needs at least one prompt")
        if persistence < 1:
            raise LtdError(f"resps persistence must be a whole number of cycles >= 1, got {persistence}")
        super().__init__(1, state_width, len(grid), "throughput", seed)
        self.engine, self.prompts, self.grid = engine, prompts, grid
        self.persistence, self.max_new_tokens = persistence, max_new_tokens
        self.top_k = max(s.top_k for s in grid)

    def _set_seed(self, seed: int | None) -> None:
        # A batch (seeded by the trainer) starts a new answer: what it sees depends on its seed alone,
        # so a resumed training collects what an uninterrupted one would have.
        super()._set_seed(seed)
        self.run = None

    def _new_answer(self) -> None:
        prompt = self.prompts[int(torch.randint(len(self.prompts), (1,), generator=self.generator))]
        self.run = SpeculativeRun(self.engine, prompt, self.top_k, self.max_new_tokens, state=True)

    def _reset(self, tensordict: TensorDict | None = None, **kwargs) -> TensorDict:
        while self.run is None or self.run.done:  # an answer that ends at its first token has no cycle
            self._new_answer()
        return step_output(1, normalised_state(self.run.state())[None], torch.tensor([False]))

    def _step(self, tensordict: TensorDict) -> TensorDict:
        shape = self.grid[int(tensordict["action"].reshape(-1)[0])]
        tree_shape = StaticTree(shape.depth, shape.top_k, shape.verify)
        speeds, accepted, cycle = [], [], None
        while len(speeds) < self.persistence and not self.run.done:
            tree = self.run.draft_root(shape.top_k)
            self.run.draft(tree, tree_shape)
            cycle = self.run.verify(tree, shape.verify)
            speeds.append((cycle.accepted + 1) / (cycle.draft_s + cycle.verify_s))
            accepted.append(cycle.accepted)
        reward = torch.tensor([sum(speeds) / len(speeds)])
        observation = normalised_state(self.run.state())[None]
        # The window's cycles for the trainer's curves: its mean accepted tokens, its shape.
        ended = (torch.tensor([True]), torch.tensor([shape.depth]), torch.tensor([shape.verify]),
                 torch.tensor([round(sum(accepted) / len(accepted))]))
        return step_output(1, observation, torch.tensor([True]), reward, ended)


def resps_spec(grid: tuple[Shape, ...], state_width: int, hidden: tuple[int, ...]) -> PolicySpec:
    return PolicySpec("resps", top_k=max(s.top_k for s in grid), max_depth=max(s.depth for s in grid), hidden=hidden,
                      state_width=state_width, grid=tuple((s.verify, s.depth, s.top_k) for s in grid))


def train_resps(make_env: Callable[[], EnvBase], spec: PolicySpec, settings: PPOSettings, directory: Path,
                validate: Callable[[Policy], float] | None = None, log=lambda metrics: None,
                progress=lambda done, total: None) -> Policy:
    """PPO on the environment `make_env` builds; the policy that validated best (or, without
    `validate`, the last) is saved to `directory`/policy.pt. The run checkpoints to
    `directory`/training.pt and resumes from it."""
    directory.mkdir(parents=True, exist_ok=True)
    trainer = PPOTrainer(make_env, spec, settings, directory / "training.pt")
    policy = trainer.train(validate, log=log, progress=progress, keep_best=validate is not None)
    policy.save(directory / "policy.pt")
    return policy
