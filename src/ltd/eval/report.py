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


def overall_rows(summaries: dict[str, dict]) -> list[dict]:
    """One row per method: its speed-up on each task and the mean over tasks (the paper's Table 1)."""
    methods = [row["method"] for row in next(iter(summaries.values()))["methods"]]
    rows = []
    for method in methods:
        per_task = {task: next(r for r in s["methods"] if r["method"] == method) for task, s in summaries.items()}
        row = {"method": method, **{task: r["speed-up"] for task, r in per_task.items()}}
        row["mean speed-up"] = sum(r["speed-up"] for r in per_task.values()) / len(per_task)
        row["mean tau"] = sum(r["tau"] for r in per_task.values()) / len(per_task)
        row["policy share"] = sum(r["policy share"] for r in per_task.values()) / len(per_task)
        row["lossless"] = all(r["lossless"] is not False for r in per_task.values())
        rows.append(row)
    return rows
