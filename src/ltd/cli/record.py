"""make record: greedy answers to a task's last questions (evaluation reads the first) and, at every
position, the drafter's full expansion, one file per turn; a run again skips the turns already recorded.

    python -m ltd.cli.record questions=20 max_new_tokens=256

The traces go to results/traces/<model>-<drafter>-<task>-<digest>/, the digest of their key (the
model and drafter with their weights, the task's questions, max_new_tokens, top_k, max_depth): other
settings or another drafter record into another directory, never onto these. `states=true` also keeps
the target's hidden state at every position (what Re-SpS's policy reads), in half precision.
"""
from pathlib import Path

import hydra
from tqdm import tqdm

from ltd.cli.app import launch, set_threads, user_errors
from ltd.config.files import CONFIG_PATH
from ltd.config.models import identities, load_model
from ltd.config.schema import check_config
from ltd.core.artefacts import Artefact
from ltd.core.tasks import load_questions, task_identity
from ltd.traces.trace import Trace
from ltd.traces.trace_sets import record_questions, traces_directory, traces_key


@hydra.main(config_path=CONFIG_PATH, config_name="record", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "record")
        threads = set_threads(cfg.threads)
        questions = load_questions(cfg.task.path, cfg.questions, cfg.task.per_category, from_end=True)
        key = traces_key(*identities(cfg), task_identity(cfg.task), cfg.max_new_tokens, cfg.top_k, cfg.max_depth,
                         cfg.states)
        traces = (Artefact(cfg.output, key, "traces", directory=True) if cfg.output
                  else traces_directory(Path(cfg.results), key))
        target, drafter = load_model(cfg)
        traces.open(owned=("*.safetensors",))
        with tqdm(total=len(questions), desc=f"record {cfg.task.name}", unit="question") as bar:
            paths, recorded = record_questions(target, drafter, questions=questions, directory=traces.path,
                                               max_new_tokens=cfg.max_new_tokens, top_k=cfg.top_k,
                                               max_depth=cfg.max_depth, progress=bar.update, states=cfg.states)
        reused = len(paths) - recorded
        files = sorted(traces.path.glob("*.safetensors"))
        positions = sum(Trace.load(f).positions for f in files)
        size = sum(f.stat().st_size for f in files)
        print(f"\n{target.name} with drafter {cfg.drafter.kind} on {cfg.task.name}, {threads} threads: {recorded} "
              f"turns recorded, {reused} already there; {len(files)} traces, {positions} positions, "
              f"{size / 2**20:.1f} MiB in {traces.path} (top-k {cfg.top_k}, depth {cfg.max_depth})")


if __name__ == "__main__":
    launch(main, "record")
