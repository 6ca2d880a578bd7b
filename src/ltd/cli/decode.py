"""The main job: decode questions of a task autoregressively and speculatively, interleaved on the
same decoder, check that the outputs match, and print the speed-up table.

    python -m ltd.cli.decode questions=5 task=gsm8k controller.depth=4
"""
import statistics

import hydra
import torch
from tqdm import tqdm

from ltd.cli.app import CONFIG_PATH, build_controller, launch, load_model, set_threads, user_errors
from ltd.decoding.engine import Engine
from ltd.eval.report import format_table
from ltd.eval.tasks import load_questions


@hydra.main(config_path=CONFIG_PATH, config_name="decode", version_base=None)
def main(cfg) -> None:
    with user_errors():
        threads = set_threads(cfg.threads)
        target, drafter = load_model(cfg)
        controller = build_controller(cfg.controller)
        questions = load_questions(cfg.task.path, cfg.questions)
        engine = Engine(target.decoder, target.stop_token_ids, drafter)
        methods = {
            "autoregressive": lambda prompt, g: engine.generate_autoregressive(
                prompt, cfg.max_new_tokens, cfg.temperature, g),
            "static tree": lambda prompt, g: engine.generate(
                prompt, controller, cfg.max_new_tokens, cfg.temperature, g),
        }
        warm_up = target.encode_chat([{"role": "user", "content": questions[0].turns[0]}])
        for method in methods.values():
            method(warm_up[:64], None)

        totals = {name: dict(tokens=0, seconds=0.0, throughputs=[], cycles=0, accepted=0) for name in methods}
        lossless = True
        for number, question in enumerate(tqdm(questions, desc=f"{cfg.task.name}", unit="question")):
            order = list(methods) if number % 2 == 0 else list(reversed(methods))  # A B, B A: drift hits both
            messages, per_question = [], {name: [0, 0.0] for name in methods}
            for turn in question.turns:
                messages.append({"role": "user", "content": turn})
                prompt = target.encode_chat(messages)
                outputs = {}
                for name in order:
                    generator = torch.Generator().manual_seed(cfg.seed)
                    out = outputs[name] = methods[name](prompt, generator)
                    per_question[name][0] += len(out.tokens)
                    per_question[name][1] += out.seconds
                    totals[name]["cycles"] += len(out.cycles)
                    totals[name]["accepted"] += sum(c.accepted + 1 for c in out.cycles)
                lossless &= outputs["autoregressive"].tokens == outputs["static tree"].tokens
                answer = target.tokenizer.decode(outputs["autoregressive"].tokens, skip_special_tokens=True)
                messages.append({"role": "assistant", "content": answer})
            for name, (tokens, seconds) in per_question.items():
                totals[name]["tokens"] += tokens
                totals[name]["seconds"] += seconds
                totals[name]["throughputs"].append(tokens / seconds)

        baseline = statistics.mean(totals["autoregressive"]["throughputs"])
        rows = []
        for name, t in totals.items():
            mean_throughput = statistics.mean(t["throughputs"])
            rows.append({
                "method": name, "tokens": t["tokens"], "seconds": t["seconds"], "tok/s": mean_throughput,
                "speed-up": mean_throughput / baseline, "tau": t["accepted"] / max(1, t["cycles"]),
            })
        c = cfg.controller
        print(f"\n{target.name} on {cfg.task.name}: {len(questions)} questions, up to {cfg.max_new_tokens} new tokens "
              f"per turn, temperature {cfg.temperature}, {threads} threads; static tree depth {c.depth}, "
              f"top-k {c.top_k}, V {c.verify}")
        print(format_table(rows, ["method", "tokens", "seconds", "tok/s", "speed-up", "tau"]))
        if cfg.temperature == 0:
            print(f"lossless (identical greedy outputs): {lossless}")


if __name__ == "__main__":
    launch(main)
