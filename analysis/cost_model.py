# %% [markdown]
# # The cost model: what verifying V tokens and drafting a level cost
#
# `make profile` (run by `make train`) measures one verify pass over 1 + V tokens at several
# context lengths, and each drafting level. Where the verify curve is flat the target is
# bandwidth-bound and extra draft tokens are nearly free; where it rises, every token verified
# has to be paid for by acceptance.

# %% tags=["parameters"]
results = "results"
out = "results/analysis"

# %%
from pathlib import Path

from ltd.analysis import figures
from ltd.analysis.sources import Results

models = Results(results).cost_models()
for name, m in models.items():
    print(f"{name}: {m.model}, {m.drafter}, {m.device}, {m.threads} threads, contexts {m.contexts}")
saved = figures.save(figures.cost_models(models), Path(out) / "figures", "cost_model")
