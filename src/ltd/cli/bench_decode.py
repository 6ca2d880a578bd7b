"""make bench-decode: how fast is the decoder, against transformers, against itself and against
the memory bandwidth of this machine.

Prints tables and writes results/bench-decode.json: tokens/s of transformers' generate(), of our
autoregressive decoder and of the static tree, interleaved per prompt (warm-up first, medians over
repeats); the median time to verify V tokens at a ~200-token context; the drafter's step against
the target's; and the target's step against its bandwidth bound (the bytes of weights a token
streams / this machine's copy bandwidth, each round timing a step and a copy back to back).
"""
import statistics
import time

import hydra
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from ltd.atomic import write_json
from ltd.schema import check_config
from ltd.cli.app import launch, set_threads, user_errors
from ltd.config_files import CONFIG_PATH
from ltd.configured_models import eagle3_weights, load_model
from ltd.controllers.methods import build_controller
from ltd.decoding.engine import Clock, Engine
from ltd.errors import LtdError
from ltd.eval.report import format_table
from ltd.fingerprints import describe_machine, machine
from ltd.eval.tasks import load_questions


def hf_generate(model, prompt: list[int], new_tokens: int, clock: Clock) -> float:
    """Seconds for transformers' greedy generate() to produce exactly `new_tokens` tokens."""
    ids = torch.tensor([prompt], device=model.device)
    start = clock()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    seconds = clock() - start
    assert out.shape[1] == len(prompt) + new_tokens
    return seconds


def prefill(decoder, context: int, room: int, generator: torch.Generator) -> None:
    """An empty cache for `context + room` positions, `context` of them filled with random tokens."""
    decoder.reset(context + room)
    decoder(torch.randint(decoder.spec.vocab_size, (context,), generator=generator, device=decoder.device),
            last_only=True)


def timed_pass(decoder, context: int, size: int, generator: torch.Generator, clock: Clock) -> float:
    """Seconds of one target pass over `size` chained random tokens after the prefilled prefix."""
    tokens = torch.randint(decoder.spec.vocab_size, (size,), generator=generator, device=decoder.device)
    mask = torch.tril(torch.ones(size, size, dtype=torch.bool, device=decoder.device))
    positions = torch.arange(context, context + size, device=decoder.device)
    decoder.cache.length = context
    start = clock()
    decoder(tokens, positions=positions, tree_mask=mask)
    return clock() - start


def step_and_bandwidth(decoder, context: int, rounds: int, clock: Clock) -> tuple[float, float, float]:
    """One target step (a token after a `context`-token prefix) and one copy of a buffer far larger
    than the caches (GB/s counting bytes read and written, the STREAM convention), back to back in
    each round: this machine's speed drifts by a fifth within minutes (other tenants), and a step
    and a bandwidth measured minutes apart compare that drift, not the kernel. Returns the median
    step (ms), the median bandwidth and the median over rounds of bound / step, where the bound is
    the weights a token streams at that round's bandwidth."""
    generator = torch.Generator().manual_seed(0)
    source = torch.ones(2**29 // 4)
    destination = torch.empty_like(source)
    prefill(decoder, context, 1, generator)
    steps, bandwidths = [], []
    for _ in range(rounds + 1):  # the first round warms up
        steps.append(timed_pass(decoder, context, 1, generator, clock))
        start = time.perf_counter()
        destination.copy_(source)
        bandwidths.append(2 * source.numel() * 4 / (time.perf_counter() - start) / 1e9)
    weight_gb = decoder.weight_bytes() / 1e9
    ratios = [weight_gb / gb_s / step for step, gb_s in zip(steps[1:], bandwidths[1:])]
    return 1000 * statistics.median(steps[1:]), statistics.median(bandwidths[1:]), statistics.median(ratios)


def draft_step_milliseconds(drafter, context: int, vocab: int, top_k: int, repeats: int) -> float:
    """Median time for the drafter to absorb one accepted token after a `context`-token prefix and
    propose its children (a draft LM's step; an EAGLE-3 head reads random target features here)."""
    generator = torch.Generator().manual_seed(0)
    width = drafter.head.fc.in_features if hasattr(drafter, "head") else 0
    features = lambda n: torch.randn(n, width, generator=generator) if width else None
    drafter.reset(context + 8)
    drafter.update(torch.randint(vocab, (context,), generator=generator), features(context - 1), top_k)
    before, times = drafter.context, []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        drafter.update(torch.randint(vocab, (1,), generator=generator), features(1), top_k)
        times.append(time.perf_counter() - start)
        drafter.context = before
        drafter.rollback()
    return 1000 * statistics.median(times[1:])


def verify_milliseconds(decoder, sizes: list[int], context: int, repeats: int, clock: Clock) -> dict[int, float]:
    """Median time of one target pass over V tree tokens after a `context`-token prefix."""
    generator = torch.Generator().manual_seed(0)
    prefill(decoder, context, max(sizes), generator)
    times = {v: [] for v in sizes}
    for _ in range(repeats + 1):  # the first round warms up
        for v in sizes:
            times[v].append(timed_pass(decoder, context, v, generator, clock))
    return {v: 1000 * statistics.median(t[1:]) for v, t in times.items()}


@hydra.main(config_path=CONFIG_PATH, config_name="bench_decode", version_base=None)
def main(cfg) -> None:
    from transformers import AutoModelForCausalLM

    with user_errors():
        cfg = check_config(cfg, "bench_decode")
        if min(cfg.verify_sizes, default=0) < 1:
            raise LtdError(f"verify_sizes must be whole numbers >= 1 (draft tokens verified), got "
                           f"{list(cfg.verify_sizes)}")
        threads = set_threads(cfg.threads)
        controller = build_controller(OmegaConf.to_container(cfg.controller, resolve=True), cfg)
        questions = load_questions(cfg.task.path, cfg.prompts)
        start = time.perf_counter()
        target, drafter = load_model(cfg)
        load_s = time.perf_counter() - start
        prompts = [target.encode_chat([{"role": "user", "content": q.turns[0]}]) for q in questions]
        hf_model = AutoModelForCausalLM.from_pretrained(target.hf_path, dtype=target.decoder.dtype)
        hf_model = hf_model.to(target.decoder.device).eval()
        engine = Engine(target.decoder, (), drafter)  # no stop tokens: every method makes n tokens
        clock, n = engine.clock, cfg.max_new_tokens
        methods = {
            "hf_generate": lambda p: hf_generate(hf_model, p, n, clock),
            "ar": lambda p: engine.generate_autoregressive(p, n).seconds,
            "spec": lambda p: engine.generate(p, controller, n).seconds,
        }
        for method in methods.values():  # warm-up
            method(prompts[0][:32])
        seconds = {name: [] for name in methods}
        with tqdm(total=cfg.repeats * len(prompts) * len(methods), desc="decode", unit="run") as bar:
            for r in range(cfg.repeats):
                for i, prompt in enumerate(prompts):
                    names = list(methods)
                    shift = (r + i) % len(names)  # rotate who goes first
                    for name in names[shift:] + names[:shift]:
                        seconds[name].append(methods[name](prompt))
                        bar.update()
        tok_s = {name: n / statistics.median(s) for name, s in seconds.items()}
        tau = engine.generate(prompts[0], controller, n).acceptance_length
        c = cfg.controller
        verify_ms = verify_milliseconds(target.decoder, list(cfg.verify_sizes), cfg.verify_context, cfg.repeats,
                                        clock)
        step_ms, bandwidth, of_bound = step_and_bandwidth(target.decoder, cfg.verify_context, 4 * cfg.repeats + 5,
                                                          clock)
        draft_ms = draft_step_milliseconds(drafter, cfg.verify_context, drafter.vocab_size, cfg.controller.top_k,
                                           2 * cfg.repeats + 3)
        weight_gb = target.decoder.weight_bytes() / 1e9
        bound_ms = 1000 * weight_gb / bandwidth
        here = machine(threads, cfg.model.device)

        result = {
            "model": target.name,
            "drafter": cfg.drafter.kind + (" (untrained)" if cfg.drafter.kind == "eagle3" and not eagle3_weights(cfg)
                                           else ""),
            "tree": {"depth": c.depth, "top_k": c.top_k, "verify": c.verify},
            "prompts": len(prompts), "max_new_tokens": n, "repeats": cfg.repeats,
            "hf_generate_tok_s": tok_s["hf_generate"],
            "ar_tok_s": tok_s["ar"],
            "spec_tok_s": tok_s["spec"],
            "spec_tau": tau,
            "ar_over_hf": tok_s["ar"] / tok_s["hf_generate"],
            "verify_ms": verify_ms,
            "verify_16_over_1": verify_ms[16] / verify_ms[1] if {1, 16} <= set(verify_ms) else None,
            "target_step_ms": step_ms, "draft_step_ms": draft_ms, "draft_over_target": draft_ms / step_ms,
            "weight_gb_per_token": weight_gb, "copy_bandwidth_gb_s": bandwidth, "bandwidth_bound_ms": bound_ms,
            "of_bandwidth_bound": of_bound,
            "threads": threads,
            "load_s": load_s,
            "machine": dict(here, device=str(target.decoder.device)),
        }
        write_json(cfg.output, result)

        print(f"\n{target.name}, {len(prompts)} prompts x {cfg.repeats} repeats, {n} new tokens, "
              f"{describe_machine(here)}, static tree {c.depth}/{c.top_k}/{c.verify} with drafter {result['drafter']}")
        rows = [{"method": "transformers generate()", "tok/s": tok_s["hf_generate"], "vs generate()": 1.0},
                {"method": "ltd autoregressive", "tok/s": tok_s["ar"], "vs generate()": result["ar_over_hf"]},
                {"method": f"ltd static tree (tau {tau:.2f})", "tok/s": tok_s["spec"],
                 "vs generate()": tok_s["spec"] / tok_s["hf_generate"]}]
        print(format_table(rows, ["method", "tok/s", "vs generate()"]))
        base = verify_ms[min(verify_ms)]
        print(f"\nverify V tokens at a {cfg.verify_context}-token context")
        print(format_table([{"V": v, "ms": ms, f"x V={min(verify_ms)}": ms / base} for v, ms in verify_ms.items()],
                           ["V", "ms", f"x V={min(verify_ms)}"]))
        print(f"\none step at a {cfg.verify_context}-token context: target {step_ms:.1f} ms, drafter {draft_ms:.1f} ms "
              f"({draft_ms / step_ms:.2f} of the target's)")
        print(f"the target streams {weight_gb:.2f} GB of weights a token; copy bandwidth {bandwidth:.1f} GB/s: bound "
              f"{bound_ms:.1f} ms a step, reached at {of_bound:.0%} (median over {4 * cfg.repeats + 5} rounds of a "
              f"step and a copy back to back)")
        print(f"\nmodel and drafter loaded in {load_s:.2f} s (transformers' lazy imports included)")
        print(f"written: {cfg.output}")


if __name__ == "__main__":
    launch(main, "bench_decode")
