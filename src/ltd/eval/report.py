"""The table over tasks (the paper's Table 1 layout) and the ratio rows of the terminal's reports."""
import pandas as pd

from ltd.eval.runner import AUTOREGRESSIVE, summarise
from ltd.eval.spread import Spread


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
