"""Validation by replay: decode held-out traces with given depth and size deciders, priced by the
cost model, and compare with autoregressive decoding priced the same way (one target pass over
the root alone per token, V = 0). Exact in accepted tokens for greedy decoding; the times are the
cost model's. Used to pick the checkpoint a training keeps."""
import torch

from ltd.rl.policies import Policy, policy_depths, policy_sizes
from ltd.rl.trace_table import TraceTable


def replay_speedup(table: TraceTable, depth: int | Policy, verify: int | Policy) -> dict:
    """Walk every answer of `table` from its start, all at once. Returns the mean per-answer
    speed-up over autoregressive (the paper's definition), tau, and the mean depth and V chosen."""
    answers = table.length.numel()
    trace = torch.arange(answers)
    position = torch.zeros(answers, dtype=torch.long)
    seconds = torch.zeros(answers, dtype=torch.float64)
    cycles = torch.zeros(answers)
    depth_sum = verify_sum = 0.0
    alive = position < table.length
    while alive.any():
        t, p = trace[alive], position[alive]
        rows, context = table.rows(t, p)
        scores = table.scores[rows]
        depths = policy_depths(depth, scores, context) if isinstance(depth, Policy) else torch.full_like(t, depth)
        sizes = (policy_sizes(verify, scores, depths, context) if isinstance(verify, Policy)
                 else torch.full_like(t, verify))
        accepted = table.accepted(rows, depths, sizes)
        draft_s, verify_s = table.seconds(depths, sizes, context)
        seconds[alive] += (draft_s + verify_s).double()
        cycles[alive] += 1
        position[alive] = p + accepted + 1
        depth_sum += float(depths.sum())
        verify_sum += float(sizes.sum())
        alive = position < table.length
    tokens = table.length.double()  # every position yields one token, accepted or bonus
    contexts = torch.cat([table.prompt_length[a] + torch.arange(int(table.length[a])) for a in range(answers)])
    owner = torch.repeat_interleave(torch.arange(answers), table.length)
    step_s = table.costs.verify_seconds_batch(torch.zeros_like(contexts), contexts)
    ar_seconds = torch.zeros(answers, dtype=torch.float64).index_add_(0, owner, step_s)
    speedup = (tokens / seconds) / (tokens / ar_seconds)
    total_cycles = float(cycles.sum())
    return dict(speedup=float(speedup.mean()), tau=float(tokens.sum()) / total_cycles,
                depth=depth_sum / total_cycles, verify=verify_sum / total_cycles)
