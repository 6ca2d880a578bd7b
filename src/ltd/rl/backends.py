"""Where the policies train (conf/env): the replay backend (recorded traces priced by the cost
model; batched, exact for greedy decoding, thousands of steps per second) or the online backend
(the real engine on real prompts, timed by the wall clock, as the paper trains). Each builds
either environment around the partner policy of the current stage."""
from dataclasses import dataclass

from ltd.decoding.engine import Engine
from ltd.rl.ltd.depth_env import DepthOnlineEnv, DepthReplayEnv
from ltd.rl.ltd.size_env import SizeOnlineEnv, SizeReplayEnv
from ltd.rl.policies import Policy
from ltd.rl.rewards import Reward
from ltd.traces.cost_model import CostModel
from ltd.traces.trace import Trace


@dataclass
class ReplayBackend:
    traces: list[Trace]
    costs: CostModel
    sizes: tuple[int, ...]
    reward: Reward
    size_envs: int  # replay rows stepped at once
    depth_envs: int

    def size_env(self, depth: int | Policy | None, seed: int) -> SizeReplayEnv:
        return SizeReplayEnv(self.traces, self.costs, sizes=list(self.sizes), batch=self.size_envs, depth=depth,
                             reward=self.reward, seed=seed)

    def depth_env(self, verify: int | Policy, seed: int) -> DepthReplayEnv:
        return DepthReplayEnv(self.traces, self.costs, batch=self.depth_envs, verify=verify, reward=self.reward,
                              seed=seed)


@dataclass
class OnlineBackend:
    engine: Engine
    prompts: list[list[int]]
    sizes: tuple[int, ...]
    reward: Reward
    top_k: int
    max_depth: int
    max_new_tokens: int
    temperature: float = 0.0  # the answers decoded in training: sampled, as evaluated, when > 0
    costs: CostModel | None = None  # prices an autoregressive step where the reward asks (tokens_saved)

    def size_env(self, depth: int | Policy | None, seed: int) -> SizeOnlineEnv:
        return SizeOnlineEnv(self.engine, self.prompts, sizes=list(self.sizes), top_k=self.top_k,
                             max_depth=self.max_depth, depth=depth, reward=self.reward,
                             max_new_tokens=self.max_new_tokens, seed=seed, temperature=self.temperature,
                             costs=self.costs)

    def depth_env(self, verify: int | Policy, seed: int) -> DepthOnlineEnv:
        return DepthOnlineEnv(self.engine, self.prompts, top_k=self.top_k, max_depth=self.max_depth, verify=verify,
                              reward=self.reward, max_new_tokens=self.max_new_tokens, seed=seed,
                              temperature=self.temperature, costs=self.costs)
