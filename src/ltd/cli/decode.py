"""The main job: decode the first questions of each task (by default one of each of the five
evaluation tasks) with autoregressive decoding and with the methods (by default the model's tuned
static tree and LTD, each once it exists), interleaved on the same decoder, check that the outputs
match, and print the speed-up table: per task and the mean over tasks.

    python -m ltd.cli.decode questions=5 tasks=[gsm8k]
    python -m ltd.cli.decode methods=[tuned,svip]
    python -m ltd.cli.decode controller=eagle3_default controller.depth=4   # one controller, its settings changed
"""
import hydra
from hydra.core.hydra_config import HydraConfig
from tqdm import tqdm

from ltd.cli.app import launch, set_threads, user_errors
from ltd.config_files import CONFIG_PATH, chosen_tasks
from ltd.configured_models import identities, load_model
from ltd.controllers.methods import compared_methods
from ltd.decoding.engine import Engine
from ltd.decoding.reference import what_lossless_means
from ltd.eval.report import format_table, overall_rows
from ltd.eval.runner import AUTOREGRESSIVE, compare
from ltd.eval.tasks import load_questions
from ltd.fingerprints import describe_machine, machine
from ltd.schema import check_config


@hydra.main(config_path=CONFIG_PATH, config_name="decode", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "decode")
        threads = set_threads(cfg.threads)
        tasks = chosen_tasks(cfg)
        questions = {task.name: load_questions(task.path, cfg.questions, task.per_category) for task in tasks}
        model, drafter, here = *identities(cfg), machine(threads, cfg.model.device)
        methods = compared_methods(cfg, HydraConfig.get().runtime.choices["controller"], model, drafter, here)
        target, drafter = load_model(cfg)
        engine = Engine(target.decoder, target.stop_token_ids, drafter)
        warm_up = target.encode_chat([{"role": "user", "content": questions[tasks[0].name][0].turns[0]}])
        for method in methods:
            method.generate(engine, warm_up[:64], 16, cfg.temperature, cfg.seed)
        per_task = {}
        with tqdm(total=sum(map(len, questions.values())), unit="question") as bar:
            for task in tasks:
                bar.set_description(task.name)
                per_task[task.name] = compare(engine, target, methods, questions[task.name], cfg.max_new_tokens,
                                              cfg.temperature, cfg.seed, bar.update)
        speed = sum(rows[0]["tok/s"] for rows in per_task.values()) / len(tasks)
        print(f"\n{target.name} with drafter {cfg.drafter.kind}: {cfg.questions} question(s) of each task, up to "
              f"{cfg.max_new_tokens} new tokens per turn, temperature {cfg.temperature}, {describe_machine(here)}; "
              f"{AUTOREGRESSIVE} {speed:.2f} tok/s")
        rows = overall_rows(per_task)
        print(format_table(rows, ["method", *per_task, "mean speed-up", "mean tau"]))
        for method in methods[1:]:
            c = method.controller
            shape = f" (depth {c.depth}, top-k {c.top_k}, V {c.verify})" if c.kind == "static" else ""
            print(f"{method.name}: {c.kind}{shape}")
        if cfg.temperature == 0:
            print(f"lossless ({what_lossless_means(target.decoder.dtype)}): {all(row['lossless'] for row in rows)}")


if __name__ == "__main__":
    launch(main, "decode")
