"""Every position of a set of recorded traces, stacked into one table, so that a replay
environment serves a batch of positions with a few gathers: observations, what a (depth, V)
choice accepts there, and what it costs by the cost model."""
import functools

import torch

from ltd.core.errors import LtdError
from ltd.traces.cost_model import CostModel
from ltd.traces.trace import Trace, accepted_in_rows


class TraceTable:
    def __init__(self, traces: list[Trace], costs: CostModel):
        if not traces or any(t.positions == 0 for t in traces):
            raise LtdError("a replay environment needs traces with at least one position each")
        if len({(t.top_k, t.scores.shape[1]) for t in traces}) > 1:
            raise LtdError("the traces were recorded with different trees (top_k or depth): record them again")
        self.top_k, self.max_depth = traces[0].top_k, int(traces[0].depths.max())
        if costs.max_depth < self.max_depth:
            raise LtdError(f"the cost model covers {costs.max_depth} levels, the traces {self.max_depth}: "
                           f"make profile with max_depth={self.max_depth}")
        self.costs = costs
        self.scores = torch.cat([t.scores for t in traces])
        self.on_path = torch.cat([t.on_path for t in traces])
        self.candidate_depth = traces[0].depths
        self.length = torch.tensor([t.positions for t in traces])
        self.start = torch.cat((torch.zeros(1, dtype=torch.long), self.length.cumsum(0)[:-1]))
        self.prompt_length = torch.tensor([t.prompt_length for t in traces])

    @property
    def positions(self) -> int:
        return self.scores.shape[0]

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` positions drawn uniformly over every position: (trace index, position in it)."""
        row = torch.randint(self.positions, (n,), generator=generator)
        trace = torch.searchsorted(self.start, row, right=True) - 1
        return trace, row - self.start[trace]

    def rows(self, trace: torch.Tensor, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Table rows of (trace, position) pairs, and the context length the target has there."""
        return self.start[trace] + position, self.prompt_length[trace] + position

    def accepted(self, rows: torch.Tensor, depth: torch.Tensor, verify: torch.Tensor) -> torch.Tensor:
        return accepted_in_rows(self.scores[rows], self.on_path[rows], self.candidate_depth, depth, verify)

    @functools.cached_property
    def autoregressive_seconds(self) -> torch.Tensor:
        """[answers] each answer's seconds decoded one target pass per token (the root alone, V = 0),
        by the cost model: what replayed speed-ups are measured against."""
        contexts = torch.cat([self.prompt_length[a] + torch.arange(int(n)) for a, n in enumerate(self.length)])
        owner = torch.repeat_interleave(torch.arange(self.length.numel()), self.length)
        step_s = self.costs.step_seconds_batch(contexts)
        return torch.zeros(self.length.numel(), dtype=torch.float64).index_add_(0, owner, step_s)

    def seconds(self, depth: torch.Tensor, verify: torch.Tensor, context: torch.Tensor,
                accepted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(draft, verify) seconds by the cost model, float32, of cycles that accept `accepted` draft
        tokens: drafting includes absorbing them (the cost model's shifted accounting), verifying
        the cycle's overhead."""
        verify_s = self.costs.verify_and_overhead_seconds_batch(verify, context)
        return self.costs.draft_seconds_batch(depth, context, accepted).float(), verify_s.float()
