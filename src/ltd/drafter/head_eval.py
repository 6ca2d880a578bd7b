"""How well a head drafts for its target: tau and acceptance at each depth of the chain, measured
with the real engine (greedy) on prompts it was not trained on."""
import copy

from ltd.decoding.controller import StaticTree
from ltd.decoding.engine import Engine
from ltd.models.eagle3 import Eagle3Drafter, Eagle3Head


def acceptance_by_depth(accepted: list[int], depth: int) -> list[float]:
    """P(the draft token at depth d is accepted | the one above it was), d = 1..depth."""
    reached = [sum(a >= d for a in accepted) for d in range(depth + 1)]
    return [reached[d] / reached[d - 1] if reached[d - 1] else 0.0 for d in range(1, depth + 1)]


def evaluate_head(target, head: Eagle3Head, prompts: list[list[int]], max_new_tokens: int,
                  tree: StaticTree) -> dict:
    """`head` is left as it is: the drafter runs a copy, moved to the target's device and dtype."""
    decoder = target.decoder
    drafter = Eagle3Drafter(copy.deepcopy(head), decoder.embed, decoder.spec.num_layers, decoder.max_positions)
    engine = Engine(decoder, target.stop_token_ids, drafter)
    accepted = []
    for prompt in prompts:
        accepted += [c.accepted for c in engine.generate(prompt, tree, max_new_tokens).cycles]
    return dict(
        tau=sum(a + 1 for a in accepted) / len(accepted),
        acceptance_by_depth=acceptance_by_depth(accepted, tree.depth),
        cycles=len(accepted),
        prompts=len(prompts),
        tree=dict(depth=tree.depth, top_k=tree.top_k, verify=tree.verify),
    )
