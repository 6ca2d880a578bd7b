"""Plain-text tables for the terminal: aligned columns, a value shown with its interval."""
import math


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
