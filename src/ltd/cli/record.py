"""make record: greedy answers to a task's questions and, at every position, the drafter's full
expansion, one file per turn; a run again skips the turns already recorded.

    python -m ltd.cli.record questions=20 max_new_tokens=256
"""
from pathlib import Path

import hydra
from tqdm import tqdm

from ltd.cli.app import CONFIG_PATH, launch, load_model, set_threads, user_errors
from ltd.cli.schema import check_config
from ltd.decoding.engine import Engine
from ltd.eval.tasks import load_questions
from ltd.traces.record import Trace, record_answer


@hydra.main(config_path=CONFIG_PATH, config_name="record", version_base=None)
def main(cfg) -> None:
    with user_errors():
        cfg = check_config(cfg, "record")
        threads = set_threads(cfg.threads)
        questions = load_questions(cfg.task.path, cfg.questions, cfg.task.per_category)
        output = Path(cfg.output or f"results/traces/{cfg.model.name}-{cfg.drafter.kind}-{cfg.task.name}")
        target, drafter = load_model(cfg)
        engine = Engine(target.decoder, target.stop_token_ids, drafter)
        recorded = reused = 0
        for question in tqdm(questions, desc=f"record {cfg.task.name}", unit="question"):
            messages = []
            for turn, text in enumerate(question.turns):
                messages.append({"role": "user", "content": text})
                path = output / f"{question.id}-{turn}.safetensors"
                if path.exists():  # recorded by an earlier run: its answer continues the conversation
                    answer = Trace.load(path).answer.tolist()
                    reused += 1
                else:
                    prompt = target.encode_chat(messages)
                    answer = engine.generate_autoregressive(prompt, cfg.max_new_tokens).tokens
                    record_answer(target, drafter, prompt, answer, cfg.top_k, cfg.max_depth).save(path)
                    recorded += 1
                messages.append({"role": "assistant",
                                 "content": target.tokenizer.decode(answer, skip_special_tokens=True)})
        files = sorted(output.glob("*.safetensors"))
        positions = sum(Trace.load(f).positions for f in files)
        size = sum(f.stat().st_size for f in files)
        print(f"\n{target.name} with drafter {cfg.drafter.kind} on {cfg.task.name}, {threads} threads: {recorded} turns "
              f"recorded, {reused} already there; {len(files)} traces, {positions} positions, {size / 2**20:.1f} MiB "
              f"in {output} (top-k {cfg.top_k}, depth {cfg.max_depth})")


if __name__ == "__main__":
    launch(main)
