"""Plain-text tables for the terminal, and the table over tasks (the paper's Table 1 layout)."""
import math

import pandas as pd

from ltd.eval.runner import AUTOREGRESSIVE, summarise
from ltd.eval.spread import Spread


def format_table(rows: list[dict], columns: list[str]) -> str:
    """`columns` of `rows`, aligned; a value with `<column> low` and `<column> high` beside it in its
    row is shown with its interval: `1.84 (1.71-1.97)`."""
    cells = [[format_cell(row.get(c, ""), row.get(f"{c} low"), row.get(f"{c} high")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def format_cell(value, low=None, high=None) -> str:
    if isinstance(value, float) and low is not None and high is not None:
        if math.isnan(low) or math.isnan(high):
            return f"{value:.2f} (n/a)"
        return f"{value:.2f} ({low:.2f}-{high:.2f})"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def overall_rows(per_task: dict[str, pd.DataFrame], method_order: list[str]) -> list[dict]:
    """One row per method from each task's question rows: its speed-up on each task and the mean
    over tasks (the paper's Table 1), each with its 95 % interval (ltd.eval.spread), its mean
    throughput over tasks with its interval, and the questions behind them."""
    spread = Spread.of(per_task, method_order)
    summaries = {task: {row["method"]: row for row in summarise(rows, method_order)} for task, rows in per_task.items()}
    rows = []
    for method in method_order:
        mine = {task: s[method] for task, s in summaries.items()}
        row = {"method": method}
        for task in per_task:
            row[task], row[f"{task} low"], row[f"{task} high"] = spread.ratio(task, method, AUTOREGRESSIVE)
        row["mean speed-up"], row["mean speed-up low"], row["mean speed-up high"] = spread.ratio(
            None, method, AUTOREGRESSIVE)
        row["tok/s"], row["tok/s low"], row["tok/s high"] = spread.throughput(None, method)
        flags = [r["lossless"] for r in mine.values()]  # None: sampled, lossless in distribution only
        row.update({"mean tau": sum(r["tau"] for r in mine.values()) / len(mine),
                    "policy share": sum(r["policy share"] for r in mine.values()) / len(mine),
                    "questions": sum(r["questions"] for r in mine.values()), "interval over": spread.units(),
                    "lossless": None if None in flags else all(flags)})
        rows.append(row)
    return rows


def ratio_rows(per_task: dict[str, pd.DataFrame], method_order: list[str], method: str,
               baselines: list[str]) -> list[dict]:
    """`method`'s mean speed-up over each of `baselines`' (a ratio of the means over tasks), with its
    95 % interval from the same paired resamples."""
    spread = Spread.of(per_task, method_order)
    rows = []
    for baseline in baselines:
        value, low, high = spread.relative(None, method, baseline, AUTOREGRESSIVE)
        rows.append({"method": method, "over": baseline, "ratio": value, "ratio low": low, "ratio high": high,
                     "interval over": spread.units()})
    return rows
