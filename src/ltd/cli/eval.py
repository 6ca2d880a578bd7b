"""make eval: decode a task's questions with every method in `methods`, interleaved per question,
check each against the autoregressive output, print the summary table and write the records.

    python -m ltd.cli.eval task=gsm8k questions=10 methods=[autoregressive,eagle3_default,ddd]
    python -m ltd.cli.eval resume=outputs/eval/2026-11-29_17-32-49-3fa2c1   # go on after a kill
    python -m ltd.cli.eval --config-dir sweeps --config-name cpu_table1     # a sweep (make sweep name=cpu_table1)

Every run appends its rows (one per method) to <results>/store.jsonl, with its experiment and overrides:
throughput and speed-up each with its 95 % interval (a paired bootstrap over questions, or over
repeats for one question: repeats=N), and the load the guard read while timing (max_other_load,
require_quiet=true refuses a busy run). Exits 1, naming the method and question, when an output is
not the target's own.

A resumed evaluation must be the same evaluation: same model and weights, drafter, machine, task,
methods and settings (its key.json says which); it decodes the questions not yet finished.
"""

import hydra
from omegaconf import OmegaConf

from ltd.cli.app import launch, run_directory, set_threads, user_errors
from ltd.config.files import CONFIG_PATH
from ltd.config.models import describe_models, load_model, provenance
from ltd.config.schema import check_config
from ltd.controllers.methods import build_methods, check_tuned_methods, method_identity, methods_there, read_methods
from ltd.core.errors import LtdError
from ltd.core.results import ResultPaths
from ltd.core.tables import format_table
from ltd.core.tasks import load_questions, task_identity
from ltd.core.tracking import Tracker
from ltd.decoding.engine import Engine
from ltd.decoding.reference import what_lossless_means
from ltd.eval.machine_load import LoadGuard
from ltd.eval.runner import SUMMARY_SHOWN, check_lossless, check_methods, run_load
from ltd.eval.store import append_rows, stamped
from ltd.jobs.eval import EvalSettings, evaluate_tracked, open_records
from ltd.jobs.sweeps import finished_before, in_sweep, job_overrides

EVALUATION = 3  # format of the records: a change makes earlier runs impossible to resume


@hydra.main(config_path=CONFIG_PATH, config_name="eval", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "eval")
        if cfg.resume is not None and in_sweep():
            raise LtdError("resume= goes on with one run directory: not with -m (a sweep resumes by itself)")
        logger = OmegaConf.to_object(cfg.logger)
        logger.validate()
        guard = LoadGuard(cfg.max_other_load, cfg.require_quiet)
        threads = set_threads(cfg.threads)
        questions = load_questions(cfg.task.path, cfg.questions, cfg.task.per_category)
        who = provenance(cfg, threads)
        if cfg.skip_missing:
            methods = methods_there(list(cfg.methods), cfg, who)
        else:
            methods = build_methods(list(cfg.methods), cfg, who)
            check_tuned_methods(list(cfg.methods), cfg, who)
        check_methods(methods)
        names = [m.name for m in methods]
        key = {"artefact": "evaluation", "format": EVALUATION, **who.parts(),
               "task": task_identity(cfg.task), "methods": [method_identity(name, cfg) for name in names],
               "questions": cfg.questions, "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
               "seed": cfg.seed, "warmup_tokens": cfg.warmup_tokens,
               **({"repeats": cfg.repeats} if cfg.repeats > 1 else {})}
        records = open_records(run_directory("an evaluation"), key, names, cfg.resume is not None or in_sweep(),
                               or_new=in_sweep(), repeats=cfg.repeats)
        run_dir, store = records.directory, ResultPaths(cfg.results).store
        if finished_before(cfg.results, run_dir):
            return
        target, drafter = load_model(cfg)
        engine = Engine(target.decoder, target.stop_token_ids, drafter)
        tracker = Tracker(logger, run_dir, job_type="eval",
                          name=f"eval-{cfg.model.name}-{cfg.task.name}-{run_dir.name}",
                          group=cfg.experiment, tags=[cfg.model.name, cfg.drafter.kind, cfg.task.name, *names],
                          config=OmegaConf.to_container(cfg, resolve=True))
        read_methods(tracker, names, cfg)  # what each method decodes with: the evaluation's inputs (lineage)
        run = dict(model=cfg.model.name, drafter=cfg.drafter.kind, task=cfg.task.name, threads=threads,
                   machine=who.describe_machine(), max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
        settings = EvalSettings(cfg.max_new_tokens, cfg.temperature, seed=cfg.seed, warmup_tokens=cfg.warmup_tokens,
                                repeats=cfg.repeats, guard=guard)
        summary = evaluate_tracked(engine, target, methods=methods, questions=questions, settings=settings,
                                   records=records, run=run, tracker=tracker, task=cfg.task.name)
        c = cfg
        print(f"\n{describe_models(cfg)} on {c.task.name}: {len(questions)} questions, up to {c.max_new_tokens} new "
              f"tokens per turn, temperature {c.temperature}, {who.describe_machine()}")
        print(format_table(summary["methods"], SUMMARY_SHOWN))
        verdict = guard.verdict(run_load(records.frames()[1]))
        print(f"intervals: 95 %, paired bootstrap over {summary['methods'][0]['interval over']}; {verdict}")
        append_rows(store, stamped(summary["methods"], run_dir, experiment=cfg.experiment,
                                   overrides=" ".join(job_overrides()), **run))
        print(f"harness overhead {run['harness_overhead']:.2%} of {run['loop_seconds']:.0f} s; lossless: "
              f"{what_lossless_means(target.decoder.dtype, cfg.temperature)}; records in {run_dir}, rows appended "
              f"to {store}")
        check_lossless({cfg.task.name: records.frames()[1]})


if __name__ == "__main__":
    launch(main, "eval")
