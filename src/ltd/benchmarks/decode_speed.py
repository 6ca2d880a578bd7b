"""How fast the decoder is, against transformers, against itself and against the memory bandwidth of
this machine (make bench-decode): tokens/s of transformers' generate(), of the autoregressive decoder
and of a static tree, interleaved per prompt (warm-up first, medians over repeats); the time to verify
V tokens; the drafter's step against the target's; the target's step against its bandwidth bound (the
bytes of weights a token streams / the copy bandwidth, a step and a copy timed back to back)."""
import statistics
from collections.abc import Callable

import torch

from ltd.core.tables import format_table
from ltd.decoding.engine import Clock, Engine
from ltd.kernels.build import dot_products_per_second
from ltd.traces.profiler import timed_pass


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
    decoder(torch.randint(decoder.spec.vocab_size, (context,), generator=generator).to(decoder.device),
            last_only=True)


def step_and_bandwidth(decoder, context: int, rounds: int, clock: Clock) -> tuple[float, float, float]:
    """One target step (a token after a `context`-token prefix) and one copy of a buffer far larger
    than the caches (GB/s counting bytes read and written, the STREAM convention), back to back in
    each round: this machine's speed drifts by a fifth within minutes (other tenants), and a step
    and a bandwidth measured minutes apart compare that drift, not the kernel. Returns the median
    step (ms), the median bandwidth and the median over rounds of bound / step, where the bound is
    the weights a token streams at that round's bandwidth."""
    generator = torch.Generator().manual_seed(0)
    source = torch.ones(2**29 // 4, device=decoder.device)  # the memory the weights stream from
    destination = torch.empty_like(source)
    prefill(decoder, context, 1, generator)
    steps, bandwidths = [], []
    for _ in range(rounds + 1):  # the first round warms up
        steps.append(timed_pass(decoder, context, 1, generator, clock))
        start = clock()
        destination.copy_(source)
        bandwidths.append(2 * source.numel() * 4 / (clock() - start) / 1e9)
    weight_gb = decoder.weight_bytes() / 1e9
    ratios = [weight_gb / gb_s / step for step, gb_s in zip(steps[1:], bandwidths[1:])]
    return 1000 * statistics.median(steps[1:]), statistics.median(bandwidths[1:]), statistics.median(ratios)


def draft_step_milliseconds(drafter, context: int, vocab: int, top_k: int, repeats: int, device: torch.device,
                            clock: Clock) -> float:
    """Median time for the drafter to absorb one accepted token after a `context`-token prefix and
    propose its children (a draft LM's step; an EAGLE-3 head reads random target features here).
    `device`: where the target, and so the drafter's inputs, live."""
    generator = torch.Generator().manual_seed(0)
    fc = drafter.head.fc if hasattr(drafter, "head") else None
    tokens = lambda n: torch.randint(vocab, (n,), generator=generator).to(device)
    features = lambda n: torch.randn(n, fc.in_features, generator=generator).to(device, fc.weight.dtype) if fc else None
    drafter.reset(context + 8)
    drafter.update(tokens(context), features(context - 1), top_k)
    before, times = drafter.context, []
    for _ in range(repeats + 1):
        new_token, new_features = tokens(1), features(1)
        start = clock()
        drafter.update(new_token, new_features, top_k)
        times.append(clock() - start)
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


def interleaved_tok_s(methods: dict[str, Callable[[list[int]], float]], prompts: list[list[int]], new_tokens: int,
                      repeats: int, done: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Tokens/s of each method (a callable returning the seconds it took on a prompt): a warm-up on
    a short prompt, then every prompt `repeats` times, the method going first rotating; medians."""
    for method in methods.values():
        method(prompts[0][:32])
    seconds = {name: [] for name in methods}
    names = list(methods)
    for r in range(repeats):
        for i, prompt in enumerate(prompts):
            shift = (r + i) % len(names)
            for name in names[shift:] + names[:shift]:
                seconds[name].append(methods[name](prompt))
                done()
    return {name: new_tokens / statistics.median(s) for name, s in seconds.items()}


def measure(target, drafter, hf_model, controller, prompts: list[list[int]], new_tokens: int, repeats: int,
            verify_sizes: list[int], context: int, done: Callable[[], None] = lambda: None) -> dict:
    """Every number of make bench-decode (`done` is called after each timed decode). `hf_model`: None
    for a quantised target (transformers would run another model)."""
    engine = Engine(target.decoder, (), drafter)  # no stop tokens: every method makes `new_tokens`
    clock = engine.clock
    methods = {
        "ar": lambda p: engine.generate_autoregressive(p, new_tokens).seconds,
        "spec": lambda p: engine.generate(p, controller, new_tokens).seconds,
    }
    if hf_model is not None:
        methods["hf_generate"] = lambda p: hf_generate(hf_model, p, new_tokens, clock)
    tok_s = interleaved_tok_s(methods, prompts, new_tokens, repeats, done)
    verify_ms = verify_milliseconds(target.decoder, verify_sizes, context, repeats, clock)
    rounds = 4 * repeats + 5
    step_ms, bandwidth, of_bound = step_and_bandwidth(target.decoder, context, rounds, clock)
    draft_ms = draft_step_milliseconds(drafter, context, vocab=drafter.vocab_size, top_k=controller.top_k,
                                       repeats=2 * repeats + 3, device=target.decoder.device, clock=clock)
    weight_gb = target.decoder.weight_bytes() / 1e9
    # The arithmetic floor is the kernel's: on blocks, its dot-product instructions at their peak.
    peak = dot_products_per_second() if target.decoder.quantize in ("gguf", "q4_k") else None
    return {
        "hf_generate_tok_s": tok_s.get("hf_generate"), "ar_tok_s": tok_s["ar"], "spec_tok_s": tok_s["spec"],
        "spec_tau": engine.generate(prompts[0], controller, new_tokens).acceptance_length,
        "ar_over_hf": tok_s["ar"] / tok_s["hf_generate"] if hf_model is not None else None,
        "verify_context": context, "verify_ms": verify_ms,
        "verify_16_over_1": verify_ms[16] / verify_ms[1] if {1, 16} <= set(verify_ms) else None,
        "target_step_ms": step_ms, "draft_step_ms": draft_ms, "draft_over_target": draft_ms / step_ms,
        "weight_gb_per_token": weight_gb, "copy_bandwidth_gb_s": bandwidth,
        "bandwidth_bound_ms": 1000 * weight_gb / bandwidth, "of_bandwidth_bound": of_bound, "bound_rounds": rounds,
        "multiply_adds_per_token": target.decoder.multiply_adds(), "dot_products_per_s": peak,
    }


def report(r: dict, machine: str) -> str:
    """The tables make bench-decode prints from `measure`'s numbers (and the run's, in `r`)."""
    tree, verify_ms, context = r["tree"], r["verify_ms"], r["verify_context"]
    smallest = min(verify_ms)
    hf = r["hf_generate_tok_s"]
    speeds = [{"method": "ltd autoregressive", "tok/s": r["ar_tok_s"], "vs generate()": r["ar_over_hf"]},
              {"method": f"ltd static tree (tau {r['spec_tau']:.2f})", "tok/s": r["spec_tok_s"],
               "vs generate()": r["spec_tok_s"] / hf if hf else None}]
    if hf:
        speeds.insert(0, {"method": "transformers generate()", "tok/s": hf, "vs generate()": 1.0})
    speeds = [{key: value for key, value in row.items() if value is not None} for row in speeds]
    peak = r.get("dot_products_per_s")
    floor_ms = (lambda v: 1000 * v * r["multiply_adds_per_token"] / peak) if peak else None
    curve = [{"V": v, "ms": ms, f"x V={smallest}": ms / verify_ms[smallest],
              **({"arithmetic floor ms": floor_ms(v)} if floor_ms else {})} for v, ms in verify_ms.items()]
    floor = [] if not floor_ms else [
        f"arithmetic floor: the kernel's dot products do {peak / 1e9:.0f} G multiply-adds/s here (all threads, "
        f"operands in registers) and a token's matrices cost {r['multiply_adds_per_token'] / 1e9:.2f} G: V tokens "
        f"take at least V x {floor_ms(1):.1f} ms, however the weights are streamed"]
    return "\n".join([
        f"\n{r['model']} ({r['precision']}), {r['prompts']} prompts x {r['repeats']} repeats, "
        f"{r['max_new_tokens']} new tokens, {machine}, "
        f"static tree {tree['depth']}/{tree['top_k']}/{tree['verify']} with drafter {r['drafter']}",
        format_table(speeds, ["method", "tok/s", "vs generate()"]),
        f"\nverify V tokens at a {context}-token context",
        format_table(curve, ["V", "ms", f"x V={smallest}"] + (["arithmetic floor ms"] if floor_ms else [])),
        *floor,
        f"\none step at a {context}-token context: target {r['target_step_ms']:.1f} ms, drafter "
        f"{r['draft_step_ms']:.1f} ms ({r['draft_over_target']:.2f} of the target's)",
        f"the target streams {r['weight_gb_per_token']:.2f} GB of weights a token; copy bandwidth "
        f"{r['copy_bandwidth_gb_s']:.1f} GB/s: bound {r['bandwidth_bound_ms']:.1f} ms a step, reached at "
        f"{r['of_bandwidth_bound']:.0%} (median over {r['bound_rounds']} rounds of a step and a copy back to back)",
        f"\nmodel and drafter loaded in {r['load_s']:.2f} s (transformers' lazy imports included)",
    ])
