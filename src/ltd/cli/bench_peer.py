"""make bench-peer: ltd against llama.cpp, on the same GGUF files and the same prompts, in one run.

llama.cpp (built once from the source vendored in llama-cpp-python's sdist: ltd.benchmarks.peer)
decodes every turn beside ltd's autoregressive decoding and ltd's methods, as methods of the same
harness: the order rotates across questions and tasks, and the load guard watches them all. Its
speculative decoding drafts with the GGUF of the model's draft LM, once per `n_max`. The table
gives every method's tok/s and its ratio to llama.cpp's autoregressive decoding, each with a 95 %
interval (paired bootstrap over questions), and llama.cpp's batch curve; it is written to
<results>/peer.md and peer.json.

    python -m ltd.cli.bench_peer questions=1 tasks=[gsm8k]
    python -m ltd.cli.bench_peer model=qwen2.5-coder-1.5b   # ltd in fp32 against the same file
"""
from pathlib import Path

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig

from ltd.benchmarks import peer
from ltd.cli.app import launch, set_threads, user_errors
from ltd.config.files import CONFIG_PATH, chosen_tasks
from ltd.config.models import describe_models, draft_lm_settings, load_model, parts_of, provenance
from ltd.config.schema import check_config
from ltd.controllers.methods import methods_there
from ltd.core.atomic import write_file, write_json
from ltd.core.results import ResultPaths
from ltd.core.tasks import questions_by_task
from ltd.decoding.engine import Engine
from ltd.eval.machine_load import LoadGuard
from ltd.eval.runner import AUTOREGRESSIVE, Method, check_lossless, decode_tasks, run_load, warm_up
from ltd.eval.spread import Spread

@hydra.main(config_path=CONFIG_PATH, config_name="bench_peer", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "bench_peer")
        guard = LoadGuard(cfg.max_other_load, cfg.require_quiet)
        threads = set_threads(cfg.threads)
        questions = questions_by_task(chosen_tasks(cfg), cfg.questions)
        draft = draft_lm_settings(cfg) if cfg.drafter.kind == "draft_lm" else None
        model_file, draft_file = peer.gguf_files(cfg.model.source, parts_of(cfg.model), draft)
        tools = peer.tools_in(Path(cfg.llama_cpp_tools)) if cfg.llama_cpp_tools else peer.build(cfg.llama_cpp)
        who = provenance(cfg, threads)
        chosen = HydraConfig.get().runtime.choices["controller"]
        names = [chosen] if cfg.controller is not None else list(cfg.methods)
        ltd_methods = [Method(AUTOREGRESSIVE)] + methods_there(names, cfg, who)
        guard.before_timing()
        target, drafter_model = load_model(cfg)
        engine = Engine(target.decoder, target.stop_token_ids, drafter_model)
        peers = peer.peer_methods(tools, model_file, draft=draft_file, tokenizer=target.tokenizer, threads=threads,
                                  n_max=list(cfg.n_max))
        methods = ltd_methods + peers
        warm_up(engine, target, methods=methods, question=next(iter(questions.values()))[0],
                temperature=cfg.temperature, seed=cfg.seed)
        for method in peers:
            method.runs.clear()  # acceptance over the timed runs only
        per_task = decode_tasks(engine, target, methods=methods, questions=questions, max_new_tokens=cfg.max_new_tokens,
                                temperature=cfg.temperature, seed=cfg.seed, repeats=1, guard=guard)
        curve = peer.batch_curve(tools, model_file, list(cfg.batch_sizes), cfg.batch_context, threads)
        spread = Spread.of(per_task, [m.name for m in methods])
        text, rows = peer.table(spread, methods, curve)
        load = run_load(pd.concat(per_task.values()))
        header = (f"{describe_models(cfg)} against llama.cpp (llama-cpp-python {cfg.llama_cpp}) on "
                  f"{model_file.name}; {cfg.questions} question(s) of {', '.join(questions)}, up to "
                  f"{cfg.max_new_tokens} new tokens per turn, greedy, {who.describe_machine()}")
        verdict = guard.verdict(load)
        report = f"{header}\n\n{text}\n\n- intervals: paired bootstrap over {spread.units()}\n- {verdict}\n"
        print(f"\n{report}")
        md, js = ResultPaths(cfg.results).report("peer.md"), ResultPaths(cfg.results).report("peer.json")
        write_file(md, lambda tmp: tmp.write_text(report))
        write_json(js, {"header": header, "rows": rows, "batch_ms": curve, "load": verdict})
        print(f"written: {md}, {js}")
        check_lossless(per_task)


if __name__ == "__main__":
    launch(main, "bench_peer")
