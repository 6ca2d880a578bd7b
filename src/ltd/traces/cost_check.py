"""The cost model against the real engine: what the replay would have priced each evaluated cycle
at, next to what it took. PPO learns from the cost model's prices, so a size it underprices (or a
depth it overprices) is a choice the policies overrate; this table shows whether they do.

Each cycle is priced as the replay prices it: its drafting with the tokens it accepted (which the
engine absorbs at the start of the next cycle, see ltd.traces.cost_model), its verification with
the cycle's overhead (which the engine spends partly in each of its two times). So the draft and
verify columns shift a little time between them: the ratio over whole cycles is the one to read.
A turn's first cycle is left out: its drafting absorbs the prompt (the drafter's prefill, 80-330 ms
on the 1.5B's pair), which the replay prices no more than the target's prefill."""
import pandas as pd
import torch

from ltd.traces.cost_model import CostModel


def priced_cycles(cycles: pd.DataFrame, costs: CostModel) -> list[dict]:
    """One row per method that drafted: its cycles' mean measured and priced draft and verify
    milliseconds, and measured over priced for the whole cycle (1.0: the replay prices it right)."""
    drafted = cycles[(cycles["depth"] > 0) & (cycles["depth"] <= costs.max_depth) & (cycles["cycle"] > 0)]
    if drafted.empty:
        return []
    contexts = torch.tensor(drafted["context_length"].to_numpy(), dtype=torch.float64)
    values = lambda name: torch.tensor(drafted[name].to_numpy())
    verify = costs.verify_and_overhead_seconds_batch(values("verify_size"), contexts)
    priced = drafted.assign(
        draft_priced=costs.draft_seconds_batch(values("depth"), contexts, values("accepted")).numpy(),
        verify_priced=verify.numpy(),
    )
    rows = []
    for method, group in priced.groupby("method", sort=False):
        ms = lambda column: 1000 * float(group[column].mean())
        measured, predicted = ms("draft_s") + ms("verify_s"), ms("draft_priced") + ms("verify_priced")
        rows.append({"method": method, "cycles": len(group), "draft ms": ms("draft_s"),
                     "draft priced": ms("draft_priced"), "verify ms": ms("verify_s"),
                     "verify priced": ms("verify_priced"), "measured / priced": measured / predicted})
    return rows


def price_drift(rows: list[dict], replayed: tuple[str, ...], tolerance: float = 0.05) -> str | None:
    """What the cycles of the `replayed` methods took against their price, when one is off by more
    than `tolerance`; else None. Only methods whose trees the replay holds (the traces' top-k: LTD,
    the best constant tree) say whether the profile still fits: wider trees draft slower than priced
    whatever the profile. The machine's speed moves between hours and days (docs/measuring.md): a
    profile measured on a faster hour prices every cycle low, and deep trees lower than shallow ones."""
    ratios = [row["measured / priced"] for row in rows if row["method"] in replayed]
    if not ratios or max(abs(r - 1) for r in ratios) <= tolerance:
        return None
    low, high = min(ratios), max(ratios)
    return f"the evaluated cycles took {low:.2f}x" + (f"-{high:.2f}x" if high - low >= 0.005 else "") + " their price"
