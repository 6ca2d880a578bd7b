"""The main job: decode the first questions of each task (by default two of each of the five
evaluation tasks) with autoregressive decoding and with the methods (by default the model's tuned
static tree, make train's best constant tree and LTD, each once it exists), interleaved on the same
decoder with the order rotating across questions and tasks, check that the outputs match, and
print the speed-up table: per task and the mean over tasks, each with its 95 % interval, the
autoregressive tok/s behind them, LTD over the best static tree, and what else ran on the machine
meanwhile. The table is also written to <results>/run.md (and run.json), and to the run directory.

    python -m ltd.cli.decode questions=5 tasks=[gsm8k]
    python -m ltd.cli.decode methods=[tuned,svip]
    python -m ltd.cli.decode controller=eagle3_default controller.depth=4   # one controller, its settings changed
    python -m ltd.cli.decode questions=1 repeats=3        # one question each, decoded three times: the interval over repeats
    python -m ltd.cli.decode require_quiet=true           # refuse to time on a busy machine

Exits 1, naming the method, task and question, when an output is not the target's own.
"""
import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig

from ltd.cli.app import launch, run_directory, set_threads, user_errors
from ltd.config.files import CONFIG_PATH, chosen_tasks
from ltd.config.models import describe_models, load_model, provenance
from ltd.config.schema import check_config
from ltd.controllers.methods import compared_methods
from ltd.core.atomic import write_file
from ltd.core.results import ResultPaths
from ltd.core.tasks import questions_by_task
from ltd.decoding.engine import Engine
from ltd.decoding.reference import what_lossless_means
from ltd.eval.headline import Headline, static_baselines
from ltd.eval.machine_load import LoadGuard
from ltd.eval.runner import check_lossless, decode_tasks, warm_up


@hydra.main(config_path=CONFIG_PATH, config_name="decode", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "decode")
        guard = LoadGuard(cfg.max_other_load, cfg.require_quiet)
        threads = set_threads(cfg.threads)
        questions = questions_by_task(chosen_tasks(cfg), cfg.questions)
        who = provenance(cfg, threads)
        methods = compared_methods(cfg, HydraConfig.get().runtime.choices["controller"], who)
        run_dir = run_directory("a make run")
        guard.before_timing()
        target, drafter = load_model(cfg)
        engine = Engine(target.decoder, target.stop_token_ids, drafter)
        warm_up(engine, target, methods=methods, question=next(iter(questions.values()))[0],
                temperature=cfg.temperature, seed=cfg.seed)
        per_task = decode_tasks(engine, target, methods=methods, questions=questions, max_new_tokens=cfg.max_new_tokens,
                                temperature=cfg.temperature, seed=cfg.seed, repeats=cfg.repeats, guard=guard)
        headline = Headline.of(per_task, [m.name for m in methods], static_baselines([m.name for m in methods]))
        header = (f"{describe_models(cfg)}; {cfg.questions} question(s) of each task"
                  f"{f' decoded {cfg.repeats} times' if cfg.repeats > 1 else ''}, up to {cfg.max_new_tokens} new "
                  f"tokens per turn, temperature {cfg.temperature}, {who.describe_machine()}")
        print(f"\n{header}")
        print(headline.text())
        for method in methods[1:]:
            c = method.controller
            shape = f" (depth {c.depth}, top-k {c.top_k}, V {c.verify})" if c.kind == "static" else ""
            print(f"{method.name}: {c.kind}{shape}")
        print(guard.verdict(headline.load))
        if cfg.temperature == 0:
            print(f"lossless ({what_lossless_means(target.decoder.dtype)}): "
                  f"{all(row['lossless'] for row in headline.rows)}")
        written = headline.write(header, guard.verdict(headline.load),
                                 [run_dir / "run", ResultPaths(cfg.results).report("run")])
        questions_file = run_dir / "questions.parquet"
        rows = pd.concat([rows.assign(task=task) for task, rows in per_task.items()])
        write_file(questions_file, lambda tmp: rows.to_parquet(tmp, index=False))
        print(f"table in {', '.join(map(str, written))}; each question's rows in {questions_file}")
        check_lossless(per_task)


if __name__ == "__main__":
    launch(main, "decode")
