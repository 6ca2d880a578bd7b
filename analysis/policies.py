# %% [markdown]
# # What LTD's policies learned and chose
#
# From `make train`'s evaluation records: the depth and V LTD chose per cycle, and V against the
# drafted tree's score mass; tokens per cycle along one answer for LTD and the tuned static tree.
# From its policy directories: the PPO curves (reward, tau, entropy) of every stage.

# %% tags=["parameters"]
results = "results"
out = "results/analysis"
method = "ltd"  # the method whose choices are shown
reference = "tuned"  # the method beside it along an answer

# %%
from pathlib import Path

from ltd.analysis import figures
from ltd.analysis.sources import Results

source = Results(results)
figures_dir = Path(out) / "figures"
cycles = source.records(source.main_rows(), "cycles")
chose = cycles[cycles["method"] == method] if len(cycles) else cycles
print(f"{len(chose)} cycles of {method} in {cycles['run_dir'].nunique() if len(cycles) else 0} evaluations")

# %% [markdown]
# ## Depth and V per cycle, and one answer against time (per model and drafter)

# %%
for (model, drafter), mine in (chose.groupby(["model", "drafter"]) if len(chose) else []):
    system = cycles[(cycles["model"] == model) & (cycles["drafter"] == drafter)]
    saved = figures.save(figures.policy_choices(system, method), figures_dir, f"policy_choices_{model}-{drafter}")
    saved = figures.save(figures.accepted_per_cycle(system, [method, reference]), figures_dir,
                         f"accepted_per_cycle_{model}-{drafter}")
if not len(chose):
    print(f"no cycles of {method}: make train evaluates it")

# %% [markdown]
# ## PPO curves per stage

# %%
for run in source.policy_runs():
    if run.stages:
        saved = figures.save(figures.ppo_curves(run), figures_dir, f"ppo_{run.name}")
    else:
        print(f"{run.name}: its stages kept no curve (trained before ltd recorded them)")
