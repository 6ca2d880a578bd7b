"""The paper's Table 1 from the results store: for each model and method, the speed-up (and tau) on
each task and the mean over tasks. The cells come from the store's rows of one experiment (a sweep's
name), the latest row per (model, task, method); a cell the sweep asked for and the store lacks is
marked missing, never dropped, and a mean over a row with a missing cell is missing too."""
import pandas as pd

MISSING = "missing"
KEYS = ["model", "task", "method"]


def latest(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The last row stored for each `keys` (a run repeated replaces the earlier one)."""
    return rows.sort_values("time").groupby(keys, dropna=False).last().reset_index()


def table1(rows: pd.DataFrame, models: list[str], tasks: list[str], methods: list[str]) -> pd.DataFrame:
    """One row per (model, method): `<task>` cells "2.06x (tau 3.41)", then `mean`."""
    latest_rows = latest(rows, KEYS).set_index(KEYS)
    table = []
    for model in models:
        for method in methods:
            cells, speedups = {}, []
            for task in tasks:
                if (model, task, method) in latest_rows.index:
                    row = latest_rows.loc[(model, task, method)]
                    speedups.append(float(row["speed-up"]))
                    cells[task] = f"{row['speed-up']:.2f}x (tau {row['tau']:.2f})"
                else:
                    cells[task] = MISSING
            mean = f"{sum(speedups) / len(speedups):.2f}x" if len(speedups) == len(tasks) else MISSING
            table.append({"model": model, "method": method, **cells, "mean": mean})
    return pd.DataFrame(table)


def markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """A markdown table: numbers rounded to `digits`, empty cells empty, a column of several levels
    (a pivot's) named by its levels."""
    def text(value) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return ""
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    columns = [" ".join(str(p) for p in c if str(p)) if isinstance(c, tuple) else str(c) for c in table.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(text(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)
