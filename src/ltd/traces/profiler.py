"""Measuring the cost model: the real target and drafter, timed as the engine runs them.

At each context length the target reads a random prompt (and the drafter its features); then,
per repeat, the target verifies 1 + V tokens for every V, and the drafter absorbs two accepted
tokens (the root expansion) and grows an EAGLE tree level by level with top-k fed nodes. Medians
over the repeats, after one warm-up round.
"""
import statistics

import torch

from ltd.decoding.engine import Clock
from ltd.decoding.tree import DraftTree
from ltd.errors import LtdError
from ltd.models.proposals import check_top_k
from ltd.traces.cost_model import CostModel


def check_profile(contexts: list[int], verify_sizes: list[int], top_k: int, max_depth: int, repeats: int,
                  max_positions: int, model_name: str) -> int:
    """One LtdError line for settings no profile can be measured with; else the positions it needs."""
    if not contexts or not verify_sizes or min(contexts) < 2 or min(verify_sizes) < 0 or max_depth < 1 or repeats < 1:
        raise LtdError("profile contexts must be >= 2, verify sizes >= 0 (0: the root alone), max_depth and repeats "
                       ">= 1")
    capacity = max(contexts) + max(max(verify_sizes) + 1, 2 * (repeats + 1) + top_k * max_depth) + 1
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


def profile_costs(target, drafter, contexts: list[int], verify_sizes: list[int], top_k: int, max_depth: int,
                  repeats: int, progress=None) -> dict:
    """The measured fields of a CostModel (see there)."""
    decoder = target.decoder
    device, vocab = decoder.device, decoder.spec.vocab_size
    contexts, verify_sizes = sorted(contexts), sorted(verify_sizes)
    capacity = check_profile(contexts, verify_sizes, top_k, max_depth, repeats, decoder.max_positions, target.name)
    check_top_k(drafter, top_k)
    clock = Clock(device)
    generator = torch.Generator().manual_seed(0)
    random_tokens = lambda n: torch.randint(vocab, (n,), generator=generator).to(device)
    verify_s, update_s, expand_s = [], [], []
    for context in contexts:
        prompt = random_tokens(context)
        decoder.reset(capacity)
        _, features = decoder(prompt, feature_layers=drafter.feature_layers, last_only=True)
        drafter.reset(capacity)
        drafter.update(torch.cat((prompt, random_tokens(1))), features, top_k)
        verify = {v: [] for v in verify_sizes}
        update, levels = [], [[] for _ in range(max_depth - 1)]
        for _ in range(repeats + 1):
            for v in verify_sizes:  # the root and v draft tokens
                verify[v].append(timed_pass(decoder, context, v + 1, generator, clock, drafter.feature_layers))
            accepted = features[-2:] if features is not None else None
            tree = DraftTree(top_k, device)
            start = clock()
            tree.add_root(*drafter.update(random_tokens(2), accepted, top_k))
            update.append(clock() - start)
            for level in range(max_depth - 1):
                start = clock()
                tree.grow(drafter)
                levels[level].append(clock() - start)
            drafter.rollback()
            if progress is not None:
                progress()
        median = lambda times: statistics.median(times[1:])  # the first round warms up
        verify_s.append([median(verify[v]) for v in verify_sizes])
        update_s.append(median(update))
        expand_s.append([median(level) for level in levels])
    return dict(contexts=contexts, verify_sizes=verify_sizes, verify_s=verify_s, update_s=update_s,
                expand_s=expand_s)


def measure_cost_model(target, drafter, drafter_name: str, threads: int, contexts: list[int],
                       verify_sizes: list[int], top_k: int, max_depth: int, repeats: int,
                       progress=None) -> CostModel:
    measured = profile_costs(target, drafter, contexts, verify_sizes, top_k, max_depth, repeats, progress)
    return CostModel(model=target.name, drafter=drafter_name, device=str(target.decoder.device), threads=threads,
                     top_k=top_k, **measured)
