"""The size environment, replay backend: one action per cycle, how many draft tokens to verify.

Each of the `batch` rows walks one recorded answer (a trace) cycle by cycle. A cycle's tree has a
depth given by the depth source (stage 1: uniform over 1..max_depth, as the paper trains the size
policy on random depths; or a fixed depth); the policy picks V from `sizes`; the trace says how
many draft tokens the target accepts, the cost model what the cycle cost, and the reward is
computed from both. An episode is one answer. Exact for greedy decoding, and deterministic: the
same seed gives the same traces, depths and rewards.
"""
import torch
from tensordict import TensorDict
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from ltd.errors import LtdError
from ltd.rl.observations import size_observations, tree_width
from ltd.rl.rewards import cycle_reward
from ltd.traces.cost_model import CostModel
from ltd.traces.record import Trace, accepted_in_rows


class SizeReplayEnv(EnvBase):
    def __init__(self, traces: list[Trace], costs: CostModel, sizes: list[int], batch: int = 1,
                 depth: int | None = None, reward: str = "throughput", seed: int = 0):
        if not traces or any(t.positions == 0 for t in traces):
            raise LtdError("the size environment needs traces with at least one position each")
        top_k, max_depth = traces[0].top_k, int(traces[0].depths.max())
        if depth is not None and not 1 <= depth <= max_depth:
            raise LtdError(f"depth {depth} is outside the traces' 1..{max_depth}")
        super().__init__(batch_size=torch.Size([batch]))
        self.traces, self.costs, self.reward_kind = traces, costs, reward
        # Every trace's positions stacked into one table: a batch of rows is then a few gathers.
        self.scores = torch.cat([t.scores for t in traces])
        self.on_path = torch.cat([t.on_path for t in traces])
        self.start = torch.tensor([0] + [t.positions for t in traces]).cumsum(0)[:-1]
        self.length = torch.tensor([t.positions for t in traces])
        self.prompt_length = torch.tensor([t.prompt_length for t in traces])
        self.candidate_depth = traces[0].depths
        self.grown_count = torch.tensor([int((self.candidate_depth <= d).sum()) for d in range(max_depth + 1)])
        self.sizes = torch.tensor(sizes)
        self.top_k, self.max_depth, self.fixed_depth = top_k, max_depth, depth
        self.trace_index = torch.zeros(batch, dtype=torch.long)
        self.position = torch.zeros(batch, dtype=torch.long)
        self.depth = torch.ones(batch, dtype=torch.long)
        width = tree_width(top_k, max_depth) + 2
        self.observation_spec = Composite(observation=Unbounded(shape=(batch, width)), shape=(batch,))
        self.action_spec = Categorical(n=len(sizes), shape=(batch,))
        self.reward_spec = Unbounded(shape=(batch, 1))
        self.generator = torch.Generator()
        self._set_seed(seed)

    def _set_seed(self, seed: int | None) -> None:
        self.generator.manual_seed(0 if seed is None else seed)

    def _draw_depths(self, rows: torch.Tensor) -> None:
        if self.fixed_depth is not None:
            self.depth[rows] = self.fixed_depth
        else:
            self.depth[rows] = torch.randint(1, self.max_depth + 1, (int(rows.numel()),), generator=self.generator)

    def _rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The table row of each batch row's position, and its context length."""
        return self.start[self.trace_index] + self.position, self.prompt_length[self.trace_index] + self.position

    def _observe(self) -> torch.Tensor:
        rows, context = self._rows()
        return size_observations(self.scores[rows], self.grown_count[self.depth], self.depth, context, self.top_k,
                                 self.max_depth)

    def _reset(self, tensordict: TensorDict | None = None, **kwargs) -> TensorDict:
        mask = tensordict.get("_reset", None) if tensordict is not None else None
        rows = torch.arange(self.batch_size[0]) if mask is None else mask.reshape(-1).nonzero().squeeze(-1)
        self.trace_index[rows] = torch.randint(len(self.traces), (int(rows.numel()),), generator=self.generator)
        self.position[rows] = 0
        self._draw_depths(rows)
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        return TensorDict(dict(observation=self._observe(), done=done, terminated=done.clone()),
                          batch_size=self.batch_size)

    def _step(self, tensordict: TensorDict) -> TensorDict:
        verify = self.sizes[tensordict["action"].reshape(-1)]
        rows, context = self._rows()
        accepted = accepted_in_rows(self.scores[rows], self.on_path[rows], self.candidate_depth, self.depth, verify)
        draft_s = torch.tensor([self.costs.draft_seconds(int(d), int(c)) for d, c in zip(self.depth, context)])
        verify_s = torch.tensor([self.costs.verify_seconds(int(v), int(c)) for v, c in zip(verify, context)])
        reward = cycle_reward(self.reward_kind, accepted.float(), draft_s, verify_s)
        self.position += accepted + 1
        ended = self.position >= self.length[self.trace_index]
        self.position[ended] = 0  # an ended row is observed at a valid place until it is reset
        self._draw_depths(torch.arange(self.batch_size[0]))
        done = ended[:, None]
        return TensorDict(dict(observation=self._observe(), reward=reward[:, None], done=done,
                               terminated=done.clone()), batch_size=self.batch_size)
