"""The main job: decode questions of a task autoregressively and speculatively, interleaved on the
same decoder, check that the outputs match, and print the speed-up table.

    python -m ltd.cli.decode questions=5 task=gsm8k controller.depth=4
    python -m ltd.cli.decode controller=svip
    python -m ltd.cli.decode controller=ltd     # the policies make train trained for this model and drafter
"""
import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from tqdm import tqdm

from ltd.cli.app import (CONFIG_PATH, build_controller, check_tuned_methods, identities, launch, load_model,
                         set_threads, user_errors)
from ltd.cli.schema import check_config
from ltd.decoding.engine import Engine
from ltd.eval.report import format_table
from ltd.eval.runner import AUTOREGRESSIVE, Method, run_question, summarise
from ltd.eval.tasks import load_questions
from ltd.fingerprints import describe_machine, machine


@hydra.main(config_path=CONFIG_PATH, config_name="decode", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "decode")
        threads = set_threads(cfg.threads)
        questions = load_questions(cfg.task.path, cfg.questions, cfg.task.per_category)
        model, drafter, here = *identities(cfg), machine(threads, cfg.model.device)
        controller = build_controller(OmegaConf.to_container(cfg.controller, resolve=True), cfg, (model, drafter))
        check_tuned_methods([HydraConfig.get().runtime.choices["controller"]], cfg, model, drafter, here)
        target, drafter = load_model(cfg)
        methods = [Method(AUTOREGRESSIVE), Method(cfg.controller.kind, controller)]
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
              f"per turn, temperature {cfg.temperature}, {describe_machine(here)}; controller: {controller}")
        print(format_table(summary, ["method", "tokens", "seconds", "tok/s", "speed-up", "tau"]))
        if cfg.temperature == 0:
            print(f"lossless (identical greedy outputs): {all(row['lossless'] for row in summary)}")


if __name__ == "__main__":
    launch(main, "decode")
