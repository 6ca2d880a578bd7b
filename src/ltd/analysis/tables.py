"""The paper's tables from the results store: numbers in DataFrames (for CSV and for checks), and
markdown with the best cell of each column in bold. A cell the store has no row for is left empty,
never filled in."""
import pandas as pd

from ltd.analysis import paper
from ltd.core.errors import LtdError
from ltd.eval.runner import AUTOREGRESSIVE
from ltd.eval.table1 import SYSTEM, latest


def table1_markdown(table: pd.DataFrame) -> str:
    """Per system, cells `speed-up x / tau`, the fastest method of each column in bold."""
    parts = []
    for (model, drafter), group in table.groupby(SYSTEM, dropna=False):
        columns = [c.removesuffix(" speed-up") for c in group if c.endswith(" speed-up")]
        lines = [f"**{model}** (drafter {drafter})", "", "| method | " + " | ".join(columns) + " |",
                 "|---|" + "---|" * len(columns)]
        best = {c: group[f"{c} speed-up"].max() for c in columns}
        for _, row in group.iterrows():
            cells = []
            for c in columns:
                speedup, tau = row[f"{c} speed-up"], row[f"{c} tau"]
                if pd.isna(speedup):
                    cells.append("")
                    continue
                text = f"{speedup:.2f}x / {tau:.2f}"
                cells.append(f"**{text}**" if speedup == best[c] and row["method"] != AUTOREGRESSIVE else text)
            lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def ablation_means(rows: pd.DataFrame) -> pd.DataFrame:
    """LTD's mean speed-up and tau over tasks for each (system, reward, component) of the ablation rows."""
    ltd = latest(rows[rows["method"] == "ltd"], [*SYSTEM, "reward", "component", "task"])
    return (ltd.groupby([*SYSTEM, "reward", "component"], dropna=False)
            .agg(tasks=("task", "nunique"), speedup=("speed-up", "mean"), tau=("tau", "mean")).reset_index()
            .rename(columns={"speedup": "mean speed-up", "tau": "mean tau"}))


def reward_ablation(means: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 2 layout: one row per reward, ours beside the paper's (Vicuna-13B)."""
    out = []
    for reward, (speedup, tau) in paper.REWARDS.items():
        ours = means[means["reward"] == reward]
        for _, row in (ours.iterrows() if len(ours) else [(None, {})]):
            out.append({"reward": reward, "model": row.get("model"), "component": row.get("component"),
                        "mean speed-up": row.get("mean speed-up"), "mean tau": row.get("mean tau"),
                        "paper speed-up": speedup, "paper tau": tau})
    return pd.DataFrame(out)


def component_ablation(means: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 4 layout: one row per component, ours beside the paper's (Vicuna-13B)."""
    out = []
    for component, speedup in paper.COMPONENTS.items():
        ours = means[means["component"] == component]
        for _, row in (ours.iterrows() if len(ours) else [(None, {})]):
            out.append({"component": component, "model": row.get("model"), "reward": row.get("reward"),
                        "mean speed-up": row.get("mean speed-up"), "paper speed-up": speedup})
    return pd.DataFrame(out)


def temperature_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean speed-up and tau over tasks per (system, method) at each temperature stored."""
    cells = latest(rows, [*SYSTEM, "temperature", "task", "method"])
    means = (cells.groupby([*SYSTEM, "method", "temperature"], dropna=False)
             .agg(tasks=("task", "nunique"), speedup=("speed-up", "mean"), tau=("tau", "mean")).reset_index())
    return means.pivot_table(index=[*SYSTEM, "method"], columns="temperature", values=["speedup", "tau", "tasks"],
                             dropna=False).reset_index()


def subject_speedups(questions: pd.DataFrame, method: str, reference: str) -> pd.DataFrame:
    """Per MMLU subject (a question's category): each method's speed-up (mean per-question
    throughput over the autoregressive one) and `method`'s over `reference`."""
    mean = questions.groupby(["category", "method"])["throughput"].mean().unstack("method")
    if missing := [m for m in (method, reference, AUTOREGRESSIVE) if m not in mean]:
        raise LtdError(f"no MMLU questions of {', '.join(missing)} (evaluated: {', '.join(mean.columns)}): "
                       f"make analysis ARGS=\"reference=<one of them>\"")
    table = pd.DataFrame({
        method: mean[method] / mean[AUTOREGRESSIVE],
        reference: mean[reference] / mean[AUTOREGRESSIVE],
        "questions": questions[questions["method"] == method].groupby("category").size(),
    })
    table[f"{method} / {reference}"] = table[method] / table[reference]
    return table.sort_values(f"{method} / {reference}", ascending=False)
