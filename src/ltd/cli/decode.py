"""The main job: decode questions of a task with autoregressive decoding and with the methods (by
default the model's tuned static tree and LTD, each once it exists), interleaved on the same
decoder, check that the outputs match, and print the speed-up table.

    python -m ltd.cli.decode questions=5 task=gsm8k
    python -m ltd.cli.decode methods=[tuned,svip]
    python -m ltd.cli.decode controller=eagle3_default controller.depth=4   # one controller, its settings changed
"""
import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from tqdm import tqdm

from ltd.artefacts import note
from ltd.cli.app import launch, set_threads, user_errors
from ltd.config_files import CONFIG_PATH
from ltd.configured_models import identities, load_model
from ltd.controllers.methods import build_controller, build_methods, check_tuned_methods
from ltd.decoding.engine import Engine
from ltd.errors import LtdError
from ltd.eval.report import format_table
from ltd.eval.runner import AUTOREGRESSIVE, Method, run_question, summarise
from ltd.eval.tasks import load_questions
from ltd.fingerprints import describe_machine, machine
from ltd.schema import check_config


def compared_methods(cfg, model: dict, drafter: dict, here: dict) -> list[Method]:
    """Autoregressive decoding and the controller= given, or else every method of `methods` that
    is there (a tuned tree found, policies trained for this model and drafter); the others are
    left out with a note."""
    if cfg.controller is not None:
        choice = HydraConfig.get().runtime.choices["controller"]
        check_tuned_methods([choice], cfg, model, drafter, here)
        controller = build_controller(OmegaConf.to_container(cfg.controller, resolve=True), cfg, (model, drafter))
        return [Method(AUTOREGRESSIVE), Method(choice, controller)]
    methods = [Method(AUTOREGRESSIVE)]
    for name in cfg.methods:
        try:
            methods += build_methods([name], cfg, (model, drafter))
        except LtdError as error:
            note(f"{name} left out: {error}")
            continue
        check_tuned_methods([name], cfg, model, drafter, here)
    if len(methods) == 1:
        raise LtdError("nothing to compare with autoregressive decoding: name methods=[...] or controller=")
    return methods


@hydra.main(config_path=CONFIG_PATH, config_name="decode", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "decode")
        threads = set_threads(cfg.threads)
        questions = load_questions(cfg.task.path, cfg.questions, cfg.task.per_category)
        model, drafter, here = *identities(cfg), machine(threads, cfg.model.device)
        methods = compared_methods(cfg, model, drafter, here)
        target, drafter = load_model(cfg)
        engine = Engine(target.decoder, target.stop_token_ids, drafter)
        warm_up = target.encode_chat([{"role": "user", "content": questions[0].turns[0]}])
        for method in methods:
            method.generate(engine, warm_up[:64], 16, cfg.temperature, cfg.seed)

        rows = []
        for number, question in enumerate(tqdm(questions, desc=f"{cfg.task.name}", unit="question")):
            rows += run_question(engine, target, methods, question, number, cfg.max_new_tokens, cfg.temperature,
                                 cfg.seed)[1]
        summary = summarise(pd.DataFrame(rows), [m.name for m in methods])
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
