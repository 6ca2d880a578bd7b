"""make bench-decode: how fast is the decoder, against transformers, against itself and against
the memory bandwidth of this machine (what it measures: ltd.benchmarks.decode_speed). Prints tables
and writes <results>/bench-decode.json.
"""
import time

import hydra
from omegaconf import OmegaConf
from tqdm import tqdm

from ltd.benchmarks import decode_speed
from ltd.cli.app import launch, set_threads, user_errors
from ltd.config.files import CONFIG_PATH
from ltd.config.models import PRECISION, eagle3_weights, load_model
from ltd.config.schema import check_config
from ltd.controllers.methods import build_controller
from ltd.core.atomic import write_json
from ltd.core.errors import LtdError
from ltd.core.fingerprints import describe_machine, machine
from ltd.core.results import ResultPaths
from ltd.core.tasks import load_questions


@hydra.main(config_path=CONFIG_PATH, config_name="bench_decode", version_base=None)
def main(cfg) -> None:
    from transformers import AutoModelForCausalLM

    with user_errors():
        cfg = check_config(cfg, "bench_decode")
        if min(cfg.verify_sizes, default=0) < 1:
            raise LtdError(f"verify_sizes must be whole numbers >= 1 (draft tokens verified), got "
                           f"{list(cfg.verify_sizes)}")
        threads = set_threads(cfg.threads)
        controller = build_controller(OmegaConf.to_container(cfg.controller, resolve=True))
        questions = load_questions(cfg.task.path, cfg.prompts)
        start = time.perf_counter()
        target, drafter = load_model(cfg)
        load_s = time.perf_counter() - start
        prompts = [target.encode_chat([{"role": "user", "content": q.turns[0]}]) for q in questions]
        hf_model = None  # a quantised target is not the model transformers would run
        if not cfg.model.quantize:
            hf_model = AutoModelForCausalLM.from_pretrained(target.hf_path, dtype=target.decoder.dtype)
            hf_model = hf_model.to(target.decoder.device).eval()
        with tqdm(total=cfg.repeats * len(prompts) * (3 if hf_model else 2), desc="decode", unit="run") as bar:
            measured = decode_speed.measure(target, drafter, hf_model=hf_model, controller=controller, prompts=prompts,
                                            new_tokens=cfg.max_new_tokens, repeats=cfg.repeats,
                                            verify_sizes=list(cfg.verify_sizes), context=cfg.verify_context,
                                            done=bar.update)
        here, c = machine(threads, cfg.model.device), cfg.controller
        untrained = cfg.drafter.kind == "eagle3" and not eagle3_weights(cfg)
        result = {"model": target.name, "precision": PRECISION.get(cfg.model.quantize, cfg.model.dtype),
                  "drafter": cfg.drafter.kind + (" (untrained)" if untrained else ""),
                  "tree": {"depth": c.depth, "top_k": c.top_k, "verify": c.verify}, "prompts": len(prompts),
                  "max_new_tokens": cfg.max_new_tokens, "repeats": cfg.repeats, **measured, "threads": threads,
                  "load_s": load_s, "machine": dict(here, device=str(target.decoder.device))}
        output = cfg.output or ResultPaths(cfg.results).report("bench-decode.json")
        write_json(output, result)
        print(decode_speed.report(result, describe_machine(here)))
        print(f"written: {output}")


if __name__ == "__main__":
    launch(main, "bench_decode")
