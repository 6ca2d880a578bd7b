"""The depth environment: after each draft expansion, stop (0) or draft one more level (1).

The root expansion is forced (every episode starts with a tree of one level), and a tree that
reaches `max_depth` levels stops by itself. When drafting stops, the verify partner
(ltd.rl.partners) picks V (an int: stage 1 verifies a fixed V, the paper's 60; a size Policy, frozen
and greedy, in co-adaptive rounds), the cycle is verified, and its reward (conf/reward) is paid at that step; steps that
continue earn 0. An episode is one cycle, so the return is that cycle's reward. Two backends:

- DepthReplayEnv: batched over recorded traces and the cost model; exact for greedy decoding and
  deterministic for a seed. Each episode is a random position of a random answer.
- DepthOnlineEnv: the real engine and the wall clock, walking answers cycle after cycle.
"""
import time

import torch
from tensordict import TensorDict

from ltd.core.errors import LtdError
from ltd.decoding.engine import Engine, SpeculativeRun
from ltd.decoding.tree import DraftTree
from ltd.rl.env_base import PolicyEnv, cycle_of, step_output
from ltd.rl.observations import depth_observation, depth_observations, depth_width, latest_level
from ltd.rl.partners import size_partner
from ltd.rl.policies import CONTINUE, Policy
from ltd.rl.rewards import Reward
from ltd.rl.trace_table import TraceTable
from ltd.traces.cost_model import CostModel
from ltd.traces.trace import Trace


class DepthReplayEnv(PolicyEnv):
    def __init__(self, traces: list[Trace], costs: CostModel, batch: int = 1, verify: int | Policy = 60,
                 reward: Reward | str = "throughput", seed: int = 0):
        self.table = TraceTable(traces, costs)
        self.top_k, self.max_depth = self.table.top_k, self.table.max_depth
        super().__init__(batch, depth_width(self.top_k), 2, reward, seed, costs=costs)
        self.partner = size_partner(verify)
        self.trace_index = torch.zeros(batch, dtype=torch.long)
        self.position = torch.zeros(batch, dtype=torch.long)
        self.depth = torch.ones(batch, dtype=torch.long)

    def _observe(self) -> torch.Tensor:
        rows, context = self.table.rows(self.trace_index, self.position)
        latest = latest_level(self.table.scores[rows], self.depth, self.top_k)
        return depth_observations(latest, self.depth, context, self.top_k, self.max_depth)

    def _reset(self, tensordict: TensorDict | None = None, **kwargs) -> TensorDict:
        rows = self.rows_to_reset(tensordict)
        self.trace_index[rows], self.position[rows] = self.table.draw(int(rows.numel()), self.generator)
        self.depth[rows] = 1
        return step_output(self.batch_size[0], self._observe(), torch.zeros(self.batch_size, dtype=torch.bool))

    def _step(self, tensordict: TensorDict) -> TensorDict:
        more = tensordict["action"].reshape(-1) == CONTINUE
        self.depth = torch.where(more, self.depth + 1, self.depth)
        stops = ~more | (self.depth >= self.max_depth)
        rows, context = self.table.rows(self.trace_index, self.position)
        verify = torch.zeros(self.batch_size, dtype=torch.long)  # the size partner decides for the rows stopping now
        if stops.any():
            verify[stops] = self.partner.sizes(self.table.scores[rows[stops]], self.depth[stops], context[stops])
        accepted = self.table.accepted(rows, self.depth, verify)
        draft_s, verify_s = self.table.seconds(self.depth, verify, context, accepted)
        reward = torch.where(stops, self.priced(accepted.float(), draft_s, verify_s, context), 0.0)
        cycle = (stops, self.depth.clone(), torch.where(stops, verify, 0), torch.where(stops, accepted, 0))
        return step_output(self.batch_size[0], self._observe(), stops, reward, cycle)


class DepthOnlineEnv(PolicyEnv):
    """Batch 1: continuing expands the real tree; stopping verifies it, timed by the wall clock."""

    def __init__(self, engine: Engine, prompts: list[list[int]], top_k: int, max_depth: int,
                 verify: int | Policy = 60, reward: Reward | str = "throughput", max_new_tokens: int = 256, seed: int = 0,
                 temperature: float = 0.0, costs: CostModel | None = None):
        if not prompts:
            raise LtdError("the online environment needs at least one prompt")
        super().__init__(1, depth_width(top_k), 2, reward, seed, costs=costs)
        self.engine, self.prompts, self.partner = engine, prompts, size_partner(verify)
        self.top_k, self.max_depth, self.max_new_tokens = top_k, max_depth, max_new_tokens
        self.temperature = temperature
        self.run: SpeculativeRun | None = None
        self.tree: DraftTree | None = None  # the cycle being drafted; None between cycles

    def _observe(self) -> torch.Tensor:
        return depth_observation(self.tree, self.context, self.max_depth)[None]

    def _reset(self, tensordict: TensorDict | None = None, **kwargs) -> TensorDict:
        """The next cycle of the answer being decoded, or the first of a new answer. A reset in the
        middle of a cycle (TorchRL's collector resets at every batch) goes on with that cycle: the
        drafter holds its tree, and drafting it again would feed the drafter the same tokens twice."""
        if self.run is None or self.run.done:
            prompt = self.prompts[int(torch.randint(len(self.prompts), (1,), generator=self.generator))]
            self.run = self.new_answer(self.engine, prompt, self.top_k, self.max_new_tokens, self.temperature)
            self.tree = None
        if self.tree is None:
            self.context, self.tree = self.run.context, self.run.draft_root()
        return step_output(1, self._observe(), torch.tensor([False]))

    def _step(self, tensordict: TensorDict) -> TensorDict:
        run, tree = self.run, self.tree
        if int(tensordict["action"].reshape(-1)[0]) == CONTINUE and run.can_expand(tree):
            run.expand(tree)
            if tree.depth < self.max_depth and run.can_expand(tree):
                return step_output(1, self._observe(), torch.tensor([False]), torch.zeros(1))
        p0 = time.perf_counter()
        verify = self.partner.verify_size(tree, self.context)
        cycle = run.verify(tree, verify, time.perf_counter() - p0)
        reward = self.priced(torch.tensor([float(cycle.accepted)]), torch.tensor([cycle.draft_s]),
                             torch.tensor([cycle.verify_s]), torch.tensor([self.context]))
        observation, self.tree = self._observe(), None
        return step_output(1, observation, torch.tensor([True]), reward, cycle_of(cycle))
