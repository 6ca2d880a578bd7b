"""Re-SpS in replay: windows of `persistence` cycles walked over recorded traces and priced by the
cost model, exact in accepted tokens for greedy decoding (as LTD's replay is), and thousands of
windows a second where the online environment does one in three seconds.

A tree of top-k 2 is not a part of one of top-k 3 (each level keeps the k best nodes of the one
before), so the same answers are recorded once per top-k of the grid; the traces also hold the
target's hidden state at every position, which is what the policy reads.
"""
import torch
from tensordict import TensorDict

from ltd.core.errors import LtdError
from ltd.rl.env_base import PolicyEnv, step_output
from ltd.rl.policies import Policy
from ltd.rl.resps.actions import Shape, normalised_state
from ltd.rl.trace_table import TraceTable
from ltd.traces.cost_model import CostModel
from ltd.traces.trace import Trace


class ShapeTables:
    """One TraceTable per top-k over the same answers, the grid as tensors, and the states."""

    def __init__(self, by_top_k: dict[int, list[Trace]], costs: CostModel, grid: tuple[Shape, ...]):
        missing = sorted({s.top_k for s in grid} - set(by_top_k))
        if missing:
            raise LtdError(f"the grid has top-k {missing} but no traces were recorded with it")
        self.tables = {k: TraceTable(traces, costs) for k, traces in sorted(by_top_k.items())}
        first = next(iter(self.tables.values()))
        for k, table in self.tables.items():
            if not torch.equal(table.length, first.length) or not torch.equal(table.prompt_length, first.prompt_length):
                raise LtdError("the traces of each top-k must hold the same answers: record them again")
            if table.max_depth < max(s.depth for s in grid):
                raise LtdError(f"the traces of top-k {k} go {table.max_depth} levels deep, the grid "
                               f"{max(s.depth for s in grid)}: record them again")
        states = by_top_k[first.top_k]
        if any(t.states is None for t in states):
            raise LtdError("Re-SpS's replay needs traces recorded with the target's states (make record states=true)")
        self.states = normalised_state(torch.cat([t.states for t in states]))
        self.length = first.length
        self.first, self.grid = first, grid
        self.verify, self.depth, self.top_k = (torch.tensor([getattr(s, name) for s in grid])
                                               for name in ("verify", "depth", "top_k"))

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.first.draw(n, generator)

    def observe(self, trace: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        return self.states[self.first.rows(trace, position.clamp(max=self.length[trace] - 1))[0]]

    def cycle(self, trace: torch.Tensor, position: torch.Tensor, action: torch.Tensor):
        """One cycle of the shapes `action` at (trace, position): accepted draft tokens and seconds."""
        rows, context = self.first.rows(trace, position)
        verify, depth, top_k = self.verify[action], self.depth[action], self.top_k[action]
        accepted = torch.zeros_like(rows)
        for k, table in self.tables.items():
            mine = top_k == k
            if mine.any():
                accepted[mine] = table.accepted(rows[mine], depth[mine], verify[mine])
        draft_s, verify_s = self.first.seconds(depth, verify, context, accepted)
        return accepted, draft_s + verify_s



class ReSpSReplayEnv(PolicyEnv):
    """A batch of rows, each walking an answer; a step holds one shape `persistence` cycles (fewer
    where the answer ends) and is rewarded with their mean tokens per second. Each window is an
    episode, as online; a reset continues the answer, and draws a new (answer, position) once it
    has ended or a new batch begins (so a resumed training collects what an uninterrupted one would)."""

    def __init__(self, tables: ShapeTables, persistence: int, batch: int = 64, seed: int = 0):
        if persistence < 1:
            raise LtdError(f"resps persistence must be a whole number of cycles >= 1, got {persistence}")
        self.tables, self.persistence = tables, persistence
        self.trace_index = torch.zeros(batch, dtype=torch.long)
        self.position = torch.full((batch,), -1, dtype=torch.long)
        super().__init__(batch, tables.states.shape[1], tables.verify.numel(), "throughput", seed)

    def _set_seed(self, seed: int | None) -> None:
        super()._set_seed(seed)
        self.position.fill_(-1)  # every row draws anew

    def _reset(self, tensordict: TensorDict | None = None, **kwargs) -> TensorDict:
        rows = self.rows_to_reset(tensordict)
        stale = rows[(self.position[rows] < 0) | (self.position[rows] >= self.tables.length[self.trace_index[rows]])]
        self.trace_index[stale], self.position[stale] = self.tables.draw(int(stale.numel()), self.generator)
        return step_output(self.batch_size[0], self.tables.observe(self.trace_index, self.position),
                           torch.zeros(self.batch_size, dtype=torch.bool))

    def _step(self, tensordict: TensorDict) -> TensorDict:
        action = tensordict["action"].reshape(-1)
        batch = self.batch_size[0]
        speed, cycles, accepted_sum = torch.zeros(batch), torch.zeros(batch), torch.zeros(batch)
        for _ in range(self.persistence):
            alive = (self.position < self.tables.length[self.trace_index]).nonzero().squeeze(-1)
            if alive.numel() == 0:
                break
            accepted, seconds = self.tables.cycle(self.trace_index[alive], self.position[alive], action[alive])
            speed[alive] += (accepted + 1).float() / seconds
            cycles[alive] += 1
            accepted_sum[alive] += accepted.float()
            self.position[alive] += accepted + 1
        observation = self.tables.observe(self.trace_index, self.position)
        # The window's cycles for the trainer's curves: its shape and mean accepted tokens.
        ended = (torch.ones(batch, dtype=torch.bool), self.tables.depth[action], self.tables.verify[action],
                 (accepted_sum / cycles).round().long())
        return step_output(batch, observation, torch.ones(batch, dtype=torch.bool), speed / cycles, ended)


@torch.no_grad()
def resps_replay_speedup(tables: ShapeTables, policy: Policy | int, persistence: int) -> dict:
    """Walk every answer from its start, all at once, with the policy's most likely shape (or the
    shape index `policy`) chosen every `persistence` cycles. Returns the mean per-answer speed-up
    over autoregressive decoding priced the same way (the paper's definition), tau, and how many
    distinct shapes were chosen."""
    answers = tables.length.numel()
    trace, position = torch.arange(answers), torch.zeros(answers, dtype=torch.long)
    seconds, cycles = torch.zeros(answers, dtype=torch.float64), torch.zeros(answers)
    action, chosen = torch.zeros(answers, dtype=torch.long), set()
    alive = position < tables.length
    while alive.any():
        t, p = trace[alive], position[alive]
        due = cycles[alive] % persistence == 0
        if due.any():
            pick = (policy(tables.observe(t[due], p[due])).argmax(-1) if isinstance(policy, Policy)
                    else torch.full((int(due.sum()),), policy))
            action[alive.nonzero().squeeze(-1)[due]] = pick
            chosen.update(pick.tolist())
        accepted, step_s = tables.cycle(t, p, action[alive])
        seconds[alive] += step_s.double()
        cycles[alive] += 1
        position[alive] = p + accepted + 1
        alive = position < tables.length
    tokens = tables.length.double()
    speedup = (tokens / seconds) / (tokens / tables.first.autoregressive_seconds)
    return dict(speedup=float(speedup.mean()), tau=float(tokens.sum()) / float(cycles.sum()), shapes=len(chosen))


def best_constant_shape(tables: ShapeTables) -> tuple[int, dict]:
    """The grid's best shape held throughout, in replay: what a state-dependent policy must beat."""
    scored = [(a, resps_replay_speedup(tables, a, 1)) for a in range(tables.verify.numel())]
    return max(scored, key=lambda pair: pair[1]["speedup"])
