# %% [markdown]
# # MMLU: does LTD generalise across 57 subjects?
#
# LTD's policies (trained on other tasks' traces; `ltd-humaneval`: on HumanEval's alone, as the paper)
# against the tuned static tree on MMLU's subjects, a question each (`make eval ARGS="task=mmlu
# task.per_category=1 max_new_tokens=64 methods=[autoregressive,tuned,ltd-humaneval]"`).
# The paper: LTD ahead of EAGLE-3 on 54 of 57 subjects, +5 % on average.

# %% tags=["parameters"]
results = "results"
out = "results/analysis"
method = "ltd"
reference = "tuned"

# %%
from pathlib import Path

from IPython.display import Markdown, display

from ltd.analysis import figures, tables
from ltd.analysis.sources import Results, describe_rows
from ltd.eval.table1 import markdown

source = Results(results)
mmlu = source.store[(source.store["task"] == "mmlu") & (source.store["method"] == method)]
latest = mmlu.sort_values("time")["run_dir"].iloc[-1]  # the latest MMLU evaluation of the method
rows = source.store[source.store["run_dir"] == latest]
print(f"{latest}: {rows['model'].iloc[0]}, drafter {rows['drafter'].iloc[0]}, {rows['machine'].iloc[0]}")
questions = source.records(rows, "questions")
table = tables.subject_speedups(questions, method, reference)
Path(out).mkdir(parents=True, exist_ok=True)
table.to_csv(Path(out) / "mmlu.csv")
ahead = int((table[f"{method} / {reference}"] > 1).sum())
print(f"{method} ahead of {reference} on {ahead} of {len(table)} subjects; "
      f"mean ratio {table[f'{method} / {reference}'].mean():.3f}")
display(Markdown(markdown(table.reset_index(), digits=3)))

# %%
figure = figures.subject_speedups(table, method, reference, describe_rows(rows))
saved = figures.save(figure, Path(out) / "figures", "mmlu_subjects")
