# %% [markdown]
# # Table 1: speed-up and tau per model, task and method
#
# The paper's Table 1 from the results store: for every model and drafter, each method's speed-up
# over autoregressive decoding (mean per-question throughput ratio) and tau (tokens per cycle) on each
# task, greedy; the fastest method of each column in bold. The latest row of each cell counts. Then
# the paper's point that LTD optimises time, not acceptance: speed-up against tau for every cell.

# %% tags=["parameters"]
results = "results"  # the results directory (store.jsonl, profiles/, policies/)
out = "results/analysis"  # where tables and figures go
experiment = None  # one experiment's rows (a sweep's name; "default": make train and make eval); None: all

# %%
from pathlib import Path

from IPython.display import Markdown, display

from ltd.analysis import figures, tables
from ltd.analysis.sources import Results, describe_rows
from ltd.eval.table1 import latest, table1

source = Results(results)
rows = source.main_rows(experiment)
table = table1(rows)
Path(out).mkdir(parents=True, exist_ok=True)
table.to_csv(Path(out) / "table1.csv", index=False)
display(Markdown(tables.table1_markdown(table)))
print("from", describe_rows(rows))

# %% [markdown]
# ## Speed-up against tau
# Each point is one task of one method; a method above another at lower tau is faster while
# accepting less.

# %%
saved = figures.save(figures.speedup_vs_tau(latest(rows, ["model", "drafter", "task", "method"])),
                     Path(out) / "figures", "speedup_vs_tau")
