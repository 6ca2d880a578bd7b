"""The cost model against the real engine: what the replay would have priced each evaluated cycle
at, next to what it took. PPO learns from the cost model's prices, so a size it underprices (or a
depth it overprices) is a choice the policies overrate; this table shows whether they do."""
import pandas as pd
import torch

from ltd.traces.cost_model import CostModel


def priced_cycles(cycles: pd.DataFrame, costs: CostModel) -> list[dict]:
    """One row per method that drafted: its cycles' mean measured and priced draft and verify
    milliseconds, and measured over priced for the whole cycle (1.0: the replay prices it right)."""
    drafted = cycles[(cycles["depth"] > 0) & (cycles["depth"] <= costs.max_depth)]
    if drafted.empty:
        return []
    contexts = torch.tensor(drafted["context_length"].to_numpy(), dtype=torch.float64)
    priced = drafted.assign(
        draft_priced=costs.draft_seconds_batch(torch.tensor(drafted["depth"].to_numpy()), contexts).numpy(),
        verify_priced=costs.verify_seconds_batch(torch.tensor(drafted["verify_size"].to_numpy()), contexts).numpy(),
    )
    rows = []
    for method, group in priced.groupby("method", sort=False):
        ms = lambda column: 1000 * float(group[column].mean())
        measured, predicted = ms("draft_s") + ms("verify_s"), ms("draft_priced") + ms("verify_priced")
        rows.append({"method": method, "cycles": len(group), "draft ms": ms("draft_s"),
                     "draft priced": ms("draft_priced"), "verify ms": ms("verify_s"),
                     "verify priced": ms("verify_priced"), "measured / priced": measured / predicted})
    return rows
