# %% [markdown]
# # Temperature 1 (the paper's Table 5)
#
# Every method at temperature 0 and 1, mean speed-up and tau over the tasks evaluated at each
# (`make eval ARGS="temperature=1 ..."` or `make sweep name=temperature`). At temperature 1 the
# methods sample with speculative sampling, lossless in distribution; LTD's policies are the ones
# trained at temperature 0.

# %% tags=["parameters"]
results = "results"
out = "results/analysis"
experiment = None  # one experiment's rows; None: the temperature sweep's if there are any, else all

# %%
from pathlib import Path

from IPython.display import Markdown, display

from ltd.analysis import paper, tables
from ltd.analysis.sources import GENERALISATION, Results, describe_rows
from ltd.eval.table1 import markdown

store = Results(results).store
rows = store[~store["task"].isin(GENERALISATION) & (store["method"] != "autoregressive")]
chosen = experiment or ("temperature" if (rows["experiment"] == "temperature").any() else None)
if chosen is not None:
    rows = rows[rows["experiment"] == chosen]
print(f"rows of experiment {chosen}" if chosen else "every experiment's rows, the latest per cell")
table = tables.temperature_table(rows)
Path(out).mkdir(parents=True, exist_ok=True)
table.to_csv(Path(out) / "temperature.csv", index=False)
display(Markdown(markdown(table)))
print("from", describe_rows(rows))

# %% [markdown]
# The paper's Table 5 (mean speed-up at temperature 1, LTD and its reference):

# %%
for model, (ltd, reference) in paper.TEMPERATURE_1.items():
    print(f"{model}: LTD {ltd:.2f}x, reference {reference:.2f}x")
