"""The table a job reports over several tasks: each method's speed-up per task and the mean, with
95 % intervals, the autoregressive throughput they rest on, LTD over each baseline (the best static
tree first: the strongest of the tuned tree and the best constant tree), and the load the guard read.
Printed for the terminal and written as markdown and JSON (what the README's numbers come from)."""
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ltd.core.atomic import write_file, write_json
from ltd.core.tables import format_table
from ltd.eval.machine_load import Load
from ltd.eval.report import overall_rows, ratio_rows
from ltd.eval.runner import AUTOREGRESSIVE, run_load

LTD = "ltd"
BEST_CONSTANT = "best-constant"


def static_baselines(names: list[str]) -> list[str]:
    """The static trees LTD has to beat, among the methods `names`: the tuned tree(s) and the best
    constant tree."""
    return [name for name in names if name in (BEST_CONSTANT, "tuned") or name.startswith("tuned-")]


def fmt(value: float, low: float, high: float, unit: str = "") -> str:
    if low != low or high != high:  # NaN: a single question and repeat, nothing to resample
        return f"{value:.2f}{unit} (no interval: one question)"
    return f"{value:.2f}{unit} (95 % {low:.2f}-{high:.2f})"


@dataclass
class Headline:
    tasks: list[str]
    rows: list[dict]  # overall_rows
    ratios: list[dict]  # LTD over each other method, the best static tree first
    best_static: str | None
    load: Load | None

    @classmethod
    def of(cls, per_task: dict[str, pd.DataFrame], method_order: list[str], baselines: list[str]) -> "Headline":
        rows = overall_rows(per_task, method_order)
        speedups = {row["method"]: row["mean speed-up"] for row in rows}
        present = [b for b in baselines if b in speedups]
        best = max(present, key=speedups.get) if present else None
        ratios = []
        if LTD in speedups:
            others = [m for m in method_order if m not in (AUTOREGRESSIVE, LTD, best)]
            ratios = ratio_rows(per_task, method_order, LTD, ([best] if best else []) + others)
        return cls(list(per_task), rows, ratios, best, run_load(pd.concat(per_task.values())))

    @property
    def autoregressive(self) -> dict:
        return next(row for row in self.rows if row["method"] == AUTOREGRESSIVE)

    def lines(self) -> list[str]:
        """What follows the table: the baseline's throughput, what the intervals rest on, LTD's ratios."""
        ar = self.autoregressive
        lines = [f"{AUTOREGRESSIVE}: {fmt(ar['tok/s'], ar['tok/s low'], ar['tok/s high'], ' tok/s')} (mean over tasks); "
                 f"intervals: paired bootstrap over {ar['interval over']}"]
        for r in self.ratios:
            best = " (the best static tree here)" if r["over"] == self.best_static else ""
            lines.append(f"{LTD} / {r['over']}{best}: {fmt(r['ratio'], r['ratio low'], r['ratio high'], 'x')}")
        if LTD in {row["method"] for row in self.rows} and self.best_static is None:
            lines.append(f"{LTD}: no static baseline in this run (tuned, {BEST_CONSTANT}) to measure it against")
        return lines

    def text(self) -> str:
        columns = ["method", *self.tasks, "mean speed-up", "mean tau", "tok/s"]
        return "\n".join([format_table(self.rows, columns), *self.lines()])

    def markdown(self, header: str, load: str) -> str:
        def cell(row: dict, column: str) -> str:
            value, low, high = row[column], row.get(f"{column} low"), row.get(f"{column} high")
            if low is None:
                return f"{value:.2f}" if isinstance(value, float) else str(value)
            return f"{value:.2f} ({low:.2f}-{high:.2f})" if low == low else f"{value:.2f}"

        columns = ["method", *self.tasks, "mean speed-up", "mean tau", "tok/s"]
        table = [f"| {' | '.join(columns)} |", f"|{'---|' * len(columns)}"]
        table += [f"| {' | '.join(cell(row, c) for c in columns)} |" for row in self.rows]
        return "\n".join([header, "", *table, "", *(f"- {line}" for line in [*self.lines(), load]), ""])

    def write(self, header: str, load: str, stems: list[Path]) -> list[Path]:
        """<stem>.md and <stem>.json for each of `stems` (run_dir / "run", ResultPaths.report("run"));
        the markdown files written."""
        written = []
        for stem in stems:
            md, js = stem.with_name(f"{stem.name}.md"), stem.with_name(f"{stem.name}.json")
            write_file(md, lambda tmp: tmp.write_text(self.markdown(header, load)))
            write_json(js, dict(header=header, load=load, tasks=self.tasks, rows=self.rows, ratios=self.ratios,
                                best_static=self.best_static))
            written.append(md)
        return written
