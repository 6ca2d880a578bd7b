"""The main job: decode questions of a task autoregressively and speculatively, interleaved on the
same decoder, check that the outputs match, and print the speed-up table.

    python -m ltd.cli.decode questions=5 task=gsm8k controller.depth=4
    python -m ltd.cli.decode controller=svip
"""
import hydra
import pandas as pd
from tqdm import tqdm

from ltd.cli.app import CONFIG_PATH, build_controller, launch, load_model, set_threads, user_errors
from ltd.cli.schema import check_config
from ltd.decoding.engine import Engine
from ltd.eval.report import format_table
from ltd.eval.runner import AUTOREGRESSIVE, Method, run_question, summarise
from ltd.eval.tasks import load_questions


@hydra.main(config_path=CONFIG_PATH, config_name="decode", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "decode")
        threads = set_threads(cfg.threads)
        target, drafter = load_model(cfg)
        methods = [Method(AUTOREGRESSIVE), Method(cfg.controller.kind, build_controller(cfg.controller))]
        questions = load_questions(cfg.task.path, cfg.questions, cfg.task.per_category)
        engine = Engine(target.decoder, target.stop_token_ids, drafter)
        warm_up = target.encode_chat([{"role": "user", "content": questions[0].turns[0]}])
        for method in methods:
            method.generate(engine, warm_up[:64], 16, cfg.temperature, cfg.seed)

        rows = []
        for number, question in enumerate(tqdm(questions, desc=f"{cfg.task.name}", unit="question")):
            rows += run_question(engine, target, methods, question, number, cfg.max_new_tokens, cfg.temperature,
                                 cfg.seed)[1]
        summary = summarise(pd.DataFrame(rows), [m.name for m in methods])
        controller = ", ".join(f"{key} {value}" for key, value in cfg.controller.items())
        print(f"\n{target.name} on {cfg.task.name}: {len(questions)} questions, up to {cfg.max_new_tokens} new tokens "
              f"per turn, temperature {cfg.temperature}, {threads} threads; controller: {controller}")
        print(format_table(summary, ["method", "tokens", "seconds", "tok/s", "speed-up", "tau"]))
        if cfg.temperature == 0:
            print(f"lossless (identical greedy outputs): {all(row['lossless'] for row in summary)}")


if __name__ == "__main__":
    launch(main)
