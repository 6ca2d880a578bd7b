"""The main job: decode questions of a task with autoregressive decoding and with the methods (by
default the model's tuned static tree and LTD, each once it exists), interleaved on the same
decoder, check that the outputs match, and print the speed-up table.

    python -m ltd.cli.decode questions=5 task=gsm8k
    python -m ltd.cli.decode methods=[tuned,svip]
    python -m ltd.cli.decode controller=eagle3_default controller.depth=4   # one controller, its settings changed
"""
import hydra
from hydra.core.hydra_config import HydraConfig
from tqdm import tqdm

from ltd.cli.app import launch, set_threads, user_errors
from ltd.config_files import CONFIG_PATH
from ltd.configured_models import identities, load_model
from ltd.controllers.methods import compared_methods
from ltd.decoding.engine import Engine
from ltd.eval.report import format_table
from ltd.eval.runner import compare
from ltd.eval.tasks import load_questions
from ltd.fingerprints import describe_machine, machine
from ltd.schema import check_config


@hydra.main(config_path=CONFIG_PATH, config_name="decode", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "decode")
        threads = set_threads(cfg.threads)
        questions = load_questions(cfg.task.path, cfg.questions, cfg.task.per_category)
        model, drafter, here = *identities(cfg), machine(threads, cfg.model.device)
        methods = compared_methods(cfg, HydraConfig.get().runtime.choices["controller"], model, drafter, here)
        target, drafter = load_model(cfg)
        engine = Engine(target.decoder, target.stop_token_ids, drafter)
        warm_up = target.encode_chat([{"role": "user", "content": questions[0].turns[0]}])
        for method in methods:
            method.generate(engine, warm_up[:64], 16, cfg.temperature, cfg.seed)
        with tqdm(total=len(questions), desc=cfg.task.name, unit="question") as bar:
            summary = compare(engine, target, methods, questions, cfg.max_new_tokens, cfg.temperature, cfg.seed,
                              bar.update)
        print(f"\n{target.name} with drafter {cfg.drafter.kind} on {cfg.task.name}: {len(questions)} questions, up to "
              f"{cfg.max_new_tokens} new tokens per turn, temperature {cfg.temperature}, {describe_machine(here)}")
        print(format_table(summary, ["method", "tokens", "seconds", "tok/s", "speed-up", "tau"]))
        for method in methods[1:]:
            c = method.controller
            shape = f" (depth {c.depth}, top-k {c.top_k}, V {c.verify})" if c.kind == "static" else ""
            print(f"{method.name}: {c.kind}{shape}")
        if cfg.temperature == 0:
            print(f"lossless (identical greedy outputs): {all(row['lossless'] for row in summary)}")


if __name__ == "__main__":
    launch(main, "decode")
