# %% [markdown]
# # Ablations: the reward (the paper's Table 2) and the components (its Table 4)
#
# LTD retrained with one change (`make ablation reward=...`, `make ablation component=...`, or the
# sweeps `ablation_rewards` and `ablation_components`), each evaluated against autoregressive
# decoding. Ours: mean over the tasks each run evaluated; the paper's: Vicuna-13B on an A100.

# %% tags=["parameters"]
results = "results"
out = "results/analysis"

# %%
from pathlib import Path

from IPython.display import Markdown, display

from ltd.analysis import tables
from ltd.analysis.sources import ABLATIONS, Results, describe_rows
from ltd.eval.table1 import markdown

store = Results(results).store
rows = store[store["experiment"].isin(ABLATIONS)]
means = tables.ablation_means(rows)
Path(out).mkdir(parents=True, exist_ok=True)
means.to_csv(Path(out) / "ablations.csv", index=False)
print("from", describe_rows(rows))

# %% [markdown]
# ## Reward signal (paper: size policy only; acceptance over-proposes, time cost under-proposes)

# %%
display(Markdown(markdown(tables.reward_ablation(means))))

# %% [markdown]
# ## Components (paper: EAGLE-3's default tree 4.11x)

# %%
display(Markdown(markdown(tables.component_ablation(means))))
