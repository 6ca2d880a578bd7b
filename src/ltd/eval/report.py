"""Plain-text tables for the terminal."""


def format_table(rows: list[dict], columns: list[str]) -> str:
    cells = [[format_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def format_cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def overall_rows(per_task: dict[str, list[dict]]) -> list[dict]:
    """One row per method from each task's summary rows: its speed-up on each task and the mean
    over tasks (the paper's Table 1)."""
    methods = [row["method"] for row in next(iter(per_task.values()))]
    rows = []
    for method in methods:
        mine = {task: next(r for r in task_rows if r["method"] == method) for task, task_rows in per_task.items()}
        mean = lambda column: sum(r[column] for r in mine.values()) / len(mine)
        flags = [r["lossless"] for r in mine.values()]  # None: sampled, lossless in distribution only
        rows.append({"method": method, **{task: r["speed-up"] for task, r in mine.items()},
                     "mean speed-up": mean("speed-up"), "mean tau": mean("tau"), "policy share": mean("policy share"),
                     "lossless": None if None in flags else all(flags)})
    return rows
