"""Measuring the cost model: the real target and drafter, timed as the engine runs them.

At each context length the engine first decodes a random prompt of that length in cycles of a few
fixed shapes (`cycle_shapes`), each cycle timed whole. Then, per repeat, the target verifies 1 + V
tokens for every V after that prompt, and the drafter absorbs n tokens for every n from 1 to
max_depth + 1 (the root expansion), each cut back to the prompt, and grows an EAGLE tree level by
level with top-k fed nodes. Medians over the repeats, after one warm-up round (of cycles too).
Then each timed cycle's overhead is its time less what the table prices its passes at (the tokens
it absorbed, its expansions, its verification, at its context), and the overhead at a context is a
line in V through the medians of each V's cycles.
"""
import statistics
from dataclasses import replace

import torch

from ltd.core.errors import LtdError
from ltd.decoding.engine import Clock, Engine, SpeculativeRun
from ltd.decoding.tree import DraftTree, tree_capacity
from ltd.models.proposals import check_top_k
from ltd.traces.cost_model import CostModel

Timed = tuple[int, int, int, int, float]  # an engine cycle: context, tokens absorbed, depth, V, seconds


def cycle_shapes(verify_sizes: list[int], top_k: int, max_depth: int) -> list[tuple[int, int]]:
    """(depth, V) of the engine cycles timed for the overhead: each profiled V > 0 (as much of it as
    the deepest tree holds), drafted by the shallowest tree that holds it."""
    shapes = []
    for size in sorted(v for v in verify_sizes if v > 0):
        depth = next((d for d in range(1, max_depth + 1) if tree_capacity(d, top_k) >= size), max_depth)
        shapes.append((depth, min(size, tree_capacity(depth, top_k))))
    return shapes


def check_profile(contexts: list[int], verify_sizes: list[int], top_k: int, max_depth: int, repeats: int,
                  max_positions: int, model_name: str) -> int:
    """One LtdError line for settings no profile can be measured with; else the positions it needs."""
    if not contexts or not verify_sizes or min(contexts) < 2 or min(verify_sizes) < 0 or max_depth < 1 or repeats < 1:
        raise LtdError("profile contexts must be >= 2, verify sizes >= 0 (0: the root alone), max_depth and repeats "
                       ">= 1")
    # After the prompt: what the timed cycles accept, then a verification, or the most tokens absorbed
    # and a whole tree's fed nodes.
    accepted = (repeats + 1) * sum(depth + 1 for depth, _ in cycle_shapes(verify_sizes, top_k, max_depth))
    capacity = max(contexts) + accepted + max(max(verify_sizes) + 1, max_depth + 1 + top_k * max_depth) + 1
    if capacity > max_positions:
        raise LtdError(f"profiling needs {capacity} positions; {model_name} has {max_positions}: use shorter "
                       f"contexts or fewer verify tokens")
    return capacity


def timed_pass(decoder, context: int, size: int, generator: torch.Generator, clock: Clock,
               feature_layers: tuple[int, ...] = ()) -> float:
    """Seconds of one target pass over `size` chained random tokens after the `context` tokens
    already in its cache (cut back to them first), as a verification of that many tokens costs."""
    tokens = torch.randint(decoder.spec.vocab_size, (size,), generator=generator).to(decoder.device)
    mask = torch.tril(torch.ones(size, size, dtype=torch.bool, device=decoder.device))
    positions = torch.arange(context, context + size, device=decoder.device)
    decoder.cache.length = context
    start = clock()
    decoder(tokens, positions=positions, tree_mask=mask, feature_layers=feature_layers)
    return clock() - start


def engine_cycles(engine: Engine, prompt: list[int], shapes: list[tuple[int, int]], top_k: int, rounds: int,
                  clock: Clock) -> tuple[list[Timed], torch.Tensor | None]:
    """Greedy cycles of every shape in turn for `rounds` rounds on `prompt`, each timed whole; the
    first round warms up (its first cycle absorbs the prompt, the drafter's prefill). Returns the
    timed cycles, and the target's features of the last accepted tokens (what an EAGLE-3 drafter
    absorbs; None for a drafter that reads tokens only)."""
    run = SpeculativeRun(engine, prompt, top_k, engine.capacity)
    timed = []
    for r in range(rounds):
        for depth, size in shapes:
            context, absorbed = run.context, run.new_context.numel()
            start = clock()
            tree = run.draft_root()
            for _ in range(depth - 1):
                run.expand(tree)
            cycle = run.verify(tree, size)
            seconds = clock() - start
            if r > 0:
                timed.append((context, absorbed, cycle.depth, cycle.verify_size, seconds))
    return timed, run.features


def table_row(decoder, drafter, context: int, features: torch.Tensor | None, verify_sizes: list[int], top_k: int,
              max_depth: int, repeats: int, generator: torch.Generator, clock: Clock, progress=None) -> dict:
    """Medians of the verify, absorb and expansion times after the `context` tokens both models hold."""
    device, vocab = decoder.device, decoder.spec.vocab_size
    absorbed = {n: (torch.randint(vocab, (n,), generator=generator).to(device),
                    None if features is None else features[-1:].expand(n, -1).contiguous())
                for n in range(1, max_depth + 2)}
    verify, absorb = {v: [] for v in verify_sizes}, {n: [] for n in absorbed}
    levels = [[] for _ in range(max_depth - 1)]
    for _ in range(repeats + 1):
        for v in verify_sizes:  # the root and v draft tokens
            verify[v].append(timed_pass(decoder, context, size=v + 1, generator=generator, clock=clock,
                                        feature_layers=drafter.feature_layers))
        for n, (tokens, n_features) in absorbed.items():
            drafter.context = context  # both drafters roll back to their context: this drops the last absorption
            drafter.rollback()
            tree = DraftTree(top_k, device)
            start = clock()
            tree.add_root(*drafter.update(tokens, n_features, top_k))
            absorb[n].append(clock() - start)
        for level in range(max_depth - 1):
            start = clock()
            tree.grow(drafter)
            levels[level].append(clock() - start)
        drafter.rollback()
        if progress is not None:
            progress()
    median = lambda times: statistics.median(times[1:])  # the first round warms up
    return dict(verify_s=[median(verify[v]) for v in verify_sizes], absorb_s=[median(absorb[n]) for n in absorb],
                expand_s=[median(level) for level in levels])


def profile_costs(target, drafter, contexts: list[int], verify_sizes: list[int], top_k: int, max_depth: int,
                  repeats: int, progress=None) -> tuple[dict, list[list[Timed]]]:
    """The measured tables of a CostModel (see there) but its overhead, and the engine cycles timed
    at each context that give the overhead (`cycle_overheads`)."""
    decoder = target.decoder
    contexts, verify_sizes = sorted(contexts), sorted(verify_sizes)
    capacity = check_profile(contexts, verify_sizes, top_k=top_k, max_depth=max_depth, repeats=repeats,
                             max_positions=decoder.max_positions, model_name=target.name)
    check_top_k(drafter, top_k)
    engine = Engine(decoder, (), drafter, capacity)
    shapes = cycle_shapes(verify_sizes, top_k, max_depth)
    generator = torch.Generator().manual_seed(0)
    tables, cycles = dict(contexts=contexts, verify_sizes=verify_sizes, verify_s=[], absorb_s=[], expand_s=[]), []
    for context in contexts:
        prompt = torch.randint(decoder.spec.vocab_size, (context,), generator=generator).tolist()
        timed, features = engine_cycles(engine, prompt, shapes=shapes, top_k=top_k, rounds=repeats + 1,
                                        clock=engine.clock)
        cycles.append(timed)
        row = table_row(decoder, drafter, context=context, features=features, verify_sizes=verify_sizes, top_k=top_k,
                        max_depth=max_depth, repeats=repeats, generator=generator, clock=engine.clock,
                        progress=progress)
        for name, times in row.items():
            tables[name].append(times)
    return tables, cycles


def cycle_overheads(costs: CostModel, cycles: list[list[Timed]]) -> list[list[float]]:
    """Per profiled context, the overhead of each V: a line a + b V fitted (least squares) to the
    medians, per V verified, of the cycles' times less what `costs` (its overhead not yet known)
    prices their passes at; never below 0, and none at V 0 (an autoregressive step: all a profile
    of V 0 alone times). Each median is within a millisecond or two of the truth, and so is the
    line's value only through all of them."""
    overheads = []
    for timed in cycles:
        if not timed:  # only V 0 profiled: no tree, no overhead
            overheads.append([0.0] * len(costs.verify_sizes))
            continue
        context, absorbed, depth, size, seconds = (torch.tensor(column, dtype=torch.float64 if i == 4 else None)
                                                   for i, column in enumerate(zip(*timed)))
        priced = costs.draft_seconds_batch(depth, context, absorbed - 1) + costs.verify_seconds_batch(size, context)
        residual = seconds - priced
        sizes = sorted(set(size.tolist()))
        medians = torch.tensor([statistics.median(residual[size == v].tolist()) for v in sizes], dtype=torch.float64)
        if len(sizes) == 1:
            a, b = float(medians[0]), 0.0
        else:
            x = torch.tensor(sizes, dtype=torch.float64)
            design = torch.stack((torch.ones_like(x), x), 1)
            a, b = torch.linalg.lstsq(design, medians[:, None]).solution[:, 0].tolist()
        overheads.append([0.0 if v == 0 else max(0.0, a + b * v) for v in costs.verify_sizes])
    return overheads


def measure_cost_model(target, drafter, drafter_name: str, threads: int, contexts: list[int],
                       verify_sizes: list[int], top_k: int, max_depth: int, repeats: int,
                       progress=None) -> CostModel:
    tables, cycles = profile_costs(target, drafter, contexts=contexts, verify_sizes=verify_sizes, top_k=top_k,
                                   max_depth=max_depth, repeats=repeats, progress=progress)
    passes = CostModel(model=target.name, drafter=drafter_name, device=str(target.decoder.device), threads=threads,
                       top_k=top_k, overhead_s=[[0.0] * len(v) for v in tables["verify_s"]], **tables)
    return replace(passes, overhead_s=cycle_overheads(passes, cycles))
