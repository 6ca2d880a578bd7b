"""The paper's Table 1 from the results store, the one definition every report uses (make table1,
make analysis): for each model, drafter and method, the speed-up and tau on each task and their
means over the tasks. Each cell is the latest row stored for it. A mean covers the system's tasks
(those a sweep asked for, else those any method of that model and drafter has) and is missing when
the method lacks one of them: a mean over fewer tasks would not compare."""
import math

import pandas as pd

MISSING = "missing"
SYSTEM = ["model", "drafter"]


def latest(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The last row stored for each `keys` (a run repeated replaces the earlier one)."""
    return rows.sort_values("time").groupby(keys, dropna=False).last().reset_index()


def table1(rows: pd.DataFrame, models: list[str] | None = None, tasks: list[str] | None = None,
           methods: list[str] | None = None) -> pd.DataFrame:
    """One row per (model, drafter, method) with `<task> speed-up`, `<task> tau`, `mean speed-up` and
    `mean tau` (NaN where missing). `models`, `tasks`, `methods`: the cells asked for, in order (a
    sweep's; their rows are there even without a stored row); None: those the store has."""
    system = [key for key in SYSTEM if key in rows]
    cells = latest(rows, [*system, "task", "method"]).set_index([*system, "task", "method"])
    all_tasks = tasks or sorted(rows["task"].unique())
    out = []
    for key, group in rows.groupby(system, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        if models is not None and key[0] not in models:
            continue
        own_tasks = tasks or sorted(group["task"].unique())
        for method in methods or list(dict.fromkeys(group["method"])):
            row = dict(zip(system, key), method=method)
            for task in all_tasks:
                found = (*key, task, method) in cells.index
                row[f"{task} speed-up"] = float(cells.loc[(*key, task, method), "speed-up"]) if found else math.nan
                row[f"{task} tau"] = float(cells.loc[(*key, task, method), "tau"]) if found else math.nan
            for value in ("speed-up", "tau"):
                mine = [row[f"{task} {value}"] for task in own_tasks]
                row[f"mean {value}"] = sum(mine) / len(mine) if mine and not any(map(math.isnan, mine)) else math.nan
            out.append(row)
    for model in [m for m in models or [] if m not in rows["model"].values]:  # asked for, never stored
        out += [dict(model=model, method=method) for method in methods or []]
    if models is not None:
        out.sort(key=lambda row: models.index(row["model"]))
    columns = [*system, "method", *(f"{t} {v}" for t in all_tasks for v in ("speed-up", "tau")), "mean speed-up",
               "mean tau"]
    return pd.DataFrame(out, columns=columns)


def sweep_cells(table: pd.DataFrame) -> pd.DataFrame:
    """make table1's layout of `table1`: one row per model and method, `<task>` cells "2.06x (tau 3.41)"
    and `mean` "2.06x", a cell without a row `missing`."""
    tasks = [c.removesuffix(" speed-up") for c in table if c.endswith(" speed-up") and c != "mean speed-up"]
    shown = lambda value, text: MISSING if pd.isna(value) else text
    return pd.DataFrame([
        {"model": row["model"], "method": row["method"],
         **{t: shown(row[f"{t} speed-up"], f"{row[f'{t} speed-up']:.2f}x (tau {row[f'{t} tau']:.2f})") for t in tasks},
         "mean": shown(row["mean speed-up"], f"{row['mean speed-up']:.2f}x")}
        for _, row in table.iterrows()], columns=["model", "method", *tasks, "mean"])


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
