"""Validation by replay: decode held-out traces with given depth and size deciders, priced by the
cost model, and compare with autoregressive decoding priced the same way (one target pass over
the root alone per token, V = 0). Exact in accepted tokens for greedy decoding; the times are the
cost model's. Used to pick the checkpoint a training keeps."""
import torch

from ltd.rl.partners import depth_partner, size_partner
from ltd.rl.policies import Policy
from ltd.rl.trace_table import TraceTable


def replay_speedup(table: TraceTable, depth: int | Policy, verify: int | Policy) -> dict:
    """Walk every answer of `table` from its start, all at once. Returns the mean per-answer
    speed-up over autoregressive (the paper's definition), tau, and the mean and standard deviation
    of the depth and V chosen per cycle (how much the decisions vary across states)."""
    depth_decider, size_decider = depth_partner(depth, table.max_depth, None), size_partner(verify)
    answers = table.length.numel()
    trace = torch.arange(answers)
    position = torch.zeros(answers, dtype=torch.long)
    seconds = torch.zeros(answers, dtype=torch.float64)
    cycles = torch.zeros(answers)
    chosen_depths, chosen_sizes = [], []
    alive = position < table.length
    while alive.any():
        t, p = trace[alive], position[alive]
        rows, context = table.rows(t, p)
        scores = table.scores[rows]
        depths = depth_decider.depths(scores, context)
        sizes = size_decider.sizes(scores, depths, context)
        accepted = table.accepted(rows, depths, sizes)
        draft_s, verify_s = table.seconds(depths, sizes, context, accepted)
        seconds[alive] += (draft_s + verify_s).double()
        cycles[alive] += 1
        position[alive] = p + accepted + 1
        chosen_depths.append(depths)
        chosen_sizes.append(sizes)
        alive = position < table.length
    tokens = table.length.double()  # every position yields one token, accepted or bonus
    speedup = (tokens / seconds) / (tokens / table.autoregressive_seconds)
    depths, sizes = torch.cat(chosen_depths).double(), torch.cat(chosen_sizes).double()
    return dict(speedup=float(speedup.mean()), tau=float(tokens.sum()) / float(cycles.sum()),
                depth=float(depths.mean()), depth_sd=float(depths.std(correction=0)),
                verify=float(sizes.mean()), verify_sd=float(sizes.std(correction=0)))


def best_constant(table: TraceTable, sizes: tuple[int, ...]) -> dict:
    """The best constant tree in replay: every depth up to the traces' with every V a size policy
    may pick (but 0: a tree that verifies nothing is autoregressive decoding with drafting on top).
    What a state-dependent policy has to beat to be worth its name."""
    scored = [replay_speedup(table, depth, verify) for depth in range(1, table.max_depth + 1)
              for verify in sizes if verify > 0]
    return max(scored, key=lambda row: row["speedup"])
