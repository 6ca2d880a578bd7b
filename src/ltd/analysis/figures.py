"""The paper's figures from ltd's results, one function per figure: each takes the frames the
notebook loaded and returns a matplotlib Figure whose axes carry units and whose caption names the
runs it came from. `save` writes it as PNG and SVG."""
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ltd.analysis.sources import PolicyRun, describe_rows
from ltd.core.atomic import write_file
from ltd.eval.runner import AUTOREGRESSIVE
from ltd.traces.cost_model import CostModel


def save(figure, out: str | Path, name: str) -> list[Path]:
    """<out>/<name>.png and .svg, each written whole."""
    paths = [Path(out) / f"{name}.{suffix}" for suffix in ("png", "svg")]
    for path in paths:
        write_file(path, lambda tmp, f=path.suffix[1:]: figure.savefig(tmp, format=f, dpi=120, bbox_inches="tight"))
    return paths


def caption(figure, text: str) -> None:
    figure.text(0.01, -0.02, text, fontsize=7, color="dimgray", ha="left", va="top", wrap=True)


def cost_models(models: dict[str, CostModel]):
    """Per cost model: the verify pass's time against V at each profiled context (flat, then rising:
    the bandwidth-bound stretch is what a tree spends), and the drafting time per level (level 1:
    the drafter absorbing one token, the bonus of a cycle that accepted nothing)."""
    figure, axes = plt.subplots(len(models), 2, figsize=(10, 3.4 * len(models)), squeeze=False)
    for (name, m), (verify, draft) in zip(models.items(), axes):
        for context, times in zip(m.contexts, m.verify_s):
            verify.plot(m.verify_sizes, [1000 * t for t in times], marker="o", label=f"context {context}")
        verify.set(xlabel="V (draft tokens verified)", ylabel="one verify pass (ms)",
                   title=f"{m.model}, {m.drafter}: verify")
        levels = list(range(1, m.max_depth + 1))
        for context, absorb, expand in zip(m.contexts, m.absorb_s, m.expand_s):
            draft.plot(levels, [1000 * t for t in [absorb[0], *expand]], marker="o", label=f"context {context}")
        draft.set(xlabel="level (1: the drafter absorbs one token)", ylabel="time of the level (ms)",
                  title=f"{m.drafter}: draft, top-k {m.top_k}")
        verify.legend(fontsize=8)
        draft.legend(fontsize=8)
    figure.tight_layout()
    caption(figure, "make profile: " + "; ".join(f"{name} ({m.device}, {m.threads} threads)"
                                                 for name, m in models.items()))
    return figure


def speedup_vs_tau(rows: pd.DataFrame):
    """Every task of every method, one panel per model and drafter: tau against speed-up. A method
    that accepts more is not always faster: the paper's point that time, not acceptance, is what
    to optimise."""
    rows = rows[rows["method"] != AUTOREGRESSIVE]
    systems = list(rows.groupby(["model", "drafter"], dropna=False))
    colours = dict(zip(sorted(rows["method"].unique()), plt.get_cmap("tab20").colors))
    markers = dict(zip(sorted(rows["task"].unique()), "osD^v<>p*h"))
    columns = min(2, len(systems))
    rows_of_panels = -(-len(systems) // columns)
    figure, axes = plt.subplots(rows_of_panels, columns, figsize=(7 * columns, 4.8 * rows_of_panels), squeeze=False)
    for ax in axes.flat[len(systems):]:
        ax.set_visible(False)
    for ax, ((model, drafter), group) in zip(axes.flat, systems):
        for (method, task), g in group.groupby(["method", "task"]):
            ax.scatter(g["tau"], g["speed-up"], color=colours[method], marker=markers[task], alpha=0.85)
        ax.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
        ax.set(xlabel="tau (tokens per cycle: accepted + the bonus)", ylabel="speed-up over autoregressive (x)",
               title=f"{model}, drafter {drafter}")
        shown = sorted(group["method"].unique())
        ax.legend([plt.Line2D([], [], color=colours[m], marker="o", linestyle="") for m in shown], shown,
                  fontsize=7, loc="best")
    figure.suptitle("speed-up against acceptance length (markers: " +
                    ", ".join(f"{m} {t}" for t, m in markers.items()) + ")", fontsize=10)
    figure.tight_layout()
    caption(figure, describe_rows(rows))
    return figure


def policy_choices(cycles: pd.DataFrame, method: str = "ltd"):
    """What `method` chose: the depth drafted and V verified per cycle, and V against the drafted
    tree's score mass (the drafter's own estimate of the tokens the whole tree would get accepted)."""
    mine = cycles[cycles["method"] == method]
    figure, (depth, size, mass) = plt.subplots(1, 3, figsize=(13, 3.6))
    depth.hist(mine["depth"], bins=range(int(mine["depth"].min()), int(mine["depth"].max()) + 2), align="left",
               rwidth=0.8)
    depth.set(xlabel="depth drafted (levels)", ylabel="cycles", title=f"{method}: depth per cycle")
    size.hist(mine["verify_size"], bins=20)
    size.set(xlabel="V (draft tokens verified)", ylabel="cycles", title=f"{method}: V per cycle")
    recorded = mine.dropna(subset=["tree_mass"]) if "tree_mass" in mine else mine.iloc[:0]
    if len(recorded):
        mass.scatter(recorded["tree_mass"], recorded["verify_size"], s=6, alpha=0.4)
    else:
        mass.text(0.5, 0.5, "no score mass in these records\n(evaluated before ltd kept it)", ha="center",
                  va="center", transform=mass.transAxes, color="dimgray")
    mass.set(xlabel="tree score mass (sum of path probabilities)", ylabel="V (draft tokens verified)",
             title="V against the tree's score mass")
    figure.tight_layout()
    caption(figure, f"{len(mine)} cycles; " + describe_rows(mine))
    return figure


CURVES = [("reward_per_step", "reward per step (tokens/s)"), ("tau", "tau in the rollouts"),
          ("entropy", "policy entropy (nats)")]


def ppo_curves(run: PolicyRun):
    """Reward, tau and entropy over PPO batches, one line per stage of the schedule."""
    figure, axes = plt.subplots(1, len(CURVES), figsize=(13, 3.4))
    for ax, (key, label) in zip(axes, CURVES):
        for stage, curve in run.stages.items():
            if key in curve:
                ax.plot(curve["batch"], curve[key], label=stage)
        ax.set(xlabel="PPO batch", ylabel=label)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"{run.name}: reward {run.reward}, component {run.component}")
    figure.tight_layout()
    caption(figure, f"<results>/policies/{run.name}/<stage>.json")
    return figure


def accepted_per_cycle(cycles: pd.DataFrame, methods: list[str]):
    """One answer (the one the first method took most cycles over in these records) by each method:
    tokens per cycle along it, and tokens against the seconds spent drafting and verifying, where
    the method that accepts more per cycle need not finish first."""
    answers = ["run_dir", "task", "question_id", "turn"]
    longest = cycles[cycles["method"] == methods[0]].groupby(answers).size().idxmax()
    one = cycles[(cycles[answers] == pd.Series(longest, index=answers)).all(axis=1)]
    first = one.iloc[0]
    figure, (per_cycle, over_time) = plt.subplots(1, 2, figsize=(13, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    for method in methods:
        m = one[one["method"] == method]
        if len(m):
            made = m["accepted"] + 1
            per_cycle.step(made.cumsum().shift(fill_value=0), made, where="post",
                           label=f"{method} (tau {made.mean():.2f})")
            seconds = (m["draft_s"] + m["verify_s"] + m["policy_s"]).cumsum()
            over_time.plot(seconds, made.cumsum(), label=method)
    per_cycle.set(xlabel="position in the answer (tokens)", ylabel="tokens per cycle (accepted + bonus)",
                  title=f"{first['model']}, {first['task']} question {first['question_id']}")
    over_time.set(xlabel="seconds drafting, verifying and deciding", ylabel="tokens of the answer",
                  title="the same answer against time")
    per_cycle.legend(fontsize=8)
    over_time.legend(fontsize=8)
    figure.tight_layout()
    caption(figure, describe_rows(one))
    return figure


def subject_speedups(table: pd.DataFrame, method: str, reference: str, source: str):
    """Per MMLU subject, `method`'s speed-up over `reference`'s, sorted; above 1: `method` ahead.
    `source`: the run's description, for the caption."""
    column = f"{method} / {reference}"
    figure, ax = plt.subplots(figsize=(12, 4))
    colours = ["tab:green" if v > 1 else "tab:red" for v in table[column]]
    ax.bar(range(len(table)), table[column], color=colours)
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xticks(range(len(table)), table.index, rotation=90, fontsize=6)
    ahead = int((table[column] > 1).sum())
    ax.set(ylabel=f"speed-up of {method} / {reference}",
           title=f"MMLU: {method} ahead of {reference} on {ahead} of {len(table)} subjects")
    figure.tight_layout()
    caption(figure, f"{int(table['questions'].sum())} questions; {source}")
    return figure
