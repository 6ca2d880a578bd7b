"""The paper's Table 1 from the results store: for each model and method, the speed-up (and tau) on
each task and the mean over tasks. The cells come from the store's rows of one experiment (a sweep's
name), the latest row per (model, task, method); a cell the sweep asked for and the store lacks is
marked missing, never dropped, and a mean over a row with a missing cell is missing too."""
import pandas as pd

MISSING = "missing"
KEYS = ["model", "task", "method"]


def table1(rows: pd.DataFrame, models: list[str], tasks: list[str], methods: list[str]) -> pd.DataFrame:
    """One row per (model, method): `<task>` cells "2.06x (tau 3.41)", then `mean`."""
    latest = rows.sort_values("time").groupby(KEYS).last()
    table = []
    for model in models:
        for method in methods:
            cells, speedups = {}, []
            for task in tasks:
                if (model, task, method) in latest.index:
                    row = latest.loc[(model, task, method)]
                    speedups.append(float(row["speed-up"]))
                    cells[task] = f"{row['speed-up']:.2f}x (tau {row['tau']:.2f})"
                else:
                    cells[task] = MISSING
            mean = f"{sum(speedups) / len(speedups):.2f}x" if len(speedups) == len(tasks) else MISSING
            table.append({"model": model, "method": method, **cells, "mean": mean})
    return pd.DataFrame(table)


def markdown(table: pd.DataFrame) -> str:
    columns = list(table.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)
