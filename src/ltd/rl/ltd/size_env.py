"""The size environment: one action per cycle, how many draft tokens to verify (V from `sizes`).

The tree's depth comes from the depth partner (ltd.rl.partners): None draws it uniformly from
1..max_depth (stage 1: the paper trains the size policy on random depths), an int fixes it, a depth
Policy (frozen, greedy) decides it as it would in the engine (co-adaptive rounds). An episode is one answer; the
reward is the cycle's (conf/reward). Two backends:

- SizeReplayEnv: batched over recorded traces and the cost model; exact for greedy decoding and
  deterministic for a seed. Episodes start at a random position of a random answer, so short
  rollouts still cover whole answers.
- SizeOnlineEnv: the real engine and the wall clock on prompts, one answer at a time (the paper's
  setting; slow, and what the replay backend stands in for).
"""
import torch
from tensordict import TensorDict

from ltd.core.errors import LtdError
from ltd.decoding.engine import Engine, SpeculativeRun
from ltd.rl.env_base import PolicyEnv, cycle_of, step_output
from ltd.rl.observations import size_observation, size_observations, size_width
from ltd.rl.partners import depth_partner
from ltd.rl.policies import Policy
from ltd.rl.rewards import Reward
from ltd.rl.trace_table import TraceTable
from ltd.traces.cost_model import CostModel
from ltd.traces.trace import Trace


class SizeReplayEnv(PolicyEnv):
    def __init__(self, traces: list[Trace], costs: CostModel, sizes: list[int], batch: int = 1,
                 depth: int | Policy | None = None, reward: Reward | str = "throughput", seed: int = 0):
        self.table = TraceTable(traces, costs)
        self.top_k, self.max_depth = self.table.top_k, self.table.max_depth
        super().__init__(batch, size_width(self.top_k, self.max_depth), len(sizes), reward, seed, costs=costs)
        self.sizes, self.partner = torch.tensor(sizes), depth_partner(depth, self.max_depth, self.generator)
        self.trace_index = torch.zeros(batch, dtype=torch.long)
        self.position = torch.zeros(batch, dtype=torch.long)
        self.depth = torch.ones(batch, dtype=torch.long)

    def _observe(self) -> torch.Tensor:
        rows, context = self.table.rows(self.trace_index, self.position)
        scores = self.table.scores[rows]
        self.depth = self.partner.depths(scores, context)
        return size_observations(scores, self.depth, context, self.top_k, self.max_depth)

    def _reset(self, tensordict: TensorDict | None = None, **kwargs) -> TensorDict:
        rows = self.rows_to_reset(tensordict)
        self.trace_index[rows], self.position[rows] = self.table.draw(int(rows.numel()), self.generator)
        return step_output(self.batch_size[0], self._observe(), torch.zeros(self.batch_size, dtype=torch.bool))

    def _step(self, tensordict: TensorDict) -> TensorDict:
        verify = self.sizes[tensordict["action"].reshape(-1)]
        rows, context = self.table.rows(self.trace_index, self.position)
        accepted = self.table.accepted(rows, self.depth, verify)
        draft_s, verify_s = self.table.seconds(self.depth, verify, context, accepted)
        reward = self.priced(accepted.float(), draft_s, verify_s, context)
        self.position += accepted + 1
        ended = self.position >= self.table.length[self.trace_index]
        self.position[ended] = 0  # an ended row is observed at a valid place until it is reset
        cycle = (torch.ones(self.batch_size, dtype=torch.bool), self.depth, verify, accepted)
        return step_output(self.batch_size[0], self._observe(), ended, reward, cycle)


class SizeOnlineEnv(PolicyEnv):
    """Batch 1: each step verifies one real cycle; the reward uses its wall-clock times."""

    def __init__(self, engine: Engine, prompts: list[list[int]], sizes: list[int], top_k: int, max_depth: int,
                 depth: int | Policy | None = None, reward: Reward | str = "throughput", max_new_tokens: int = 256,
                 seed: int = 0, temperature: float = 0.0, costs: CostModel | None = None):
        if not prompts:
            raise LtdError("the online environment needs at least one prompt")
        super().__init__(1, size_width(top_k, max_depth), len(sizes), reward, seed, costs=costs)
        self.engine, self.prompts, self.sizes = engine, prompts, list(sizes)
        self.partner = depth_partner(depth, max_depth, self.generator)
        self.top_k, self.max_depth, self.max_new_tokens = top_k, max_depth, max_new_tokens
        self.temperature = temperature
        self.run: SpeculativeRun | None = None

    def _draft(self) -> torch.Tensor:
        """Draft the next cycle's tree to the partner's depth; its size observation."""
        run = self.run
        self.context, self.tree = run.context, run.draft_root()
        self.partner_s = run.draft(self.tree, self.partner)
        return size_observation(self.tree, self.context, self.max_depth)[None]

    def _reset(self, tensordict: TensorDict | None = None, **kwargs) -> TensorDict:
        prompt = self.prompts[int(torch.randint(len(self.prompts), (1,), generator=self.generator))]
        self.run = self.new_answer(self.engine, prompt, self.top_k, self.max_new_tokens, self.temperature)
        done = torch.tensor([self.run.done])
        observation = torch.zeros(1, size_width(self.top_k, self.max_depth)) if self.run.done else self._draft()
        return step_output(1, observation, done)

    def _step(self, tensordict: TensorDict) -> TensorDict:
        verify = self.sizes[int(tensordict["action"].reshape(-1)[0])]
        cycle = self.run.verify(self.tree, verify, self.partner_s)
        reward = self.priced(torch.tensor([float(cycle.accepted)]), torch.tensor([cycle.draft_s]),
                             torch.tensor([cycle.verify_s]), torch.tensor([self.context]))
        done = self.run.done
        observation = torch.zeros(1, size_width(self.top_k, self.max_depth)) if done else self._draft()
        return step_output(1, observation, torch.tensor([done]), reward, cycle_of(cycle))

