"""Whether a greedy output is the target's own: equal to autoregressive decoding token for token or,
in half precision, differing first where the target's two candidates tie within its rounding.

In float32 a verify pass over a tree and a one-token step give the same argmax: their logits differ
in the last bits. In bfloat16 they need not. Matrix kernels sum in another order for a block of rows
than for one row (seen on the CPU for an inner size of 1536 from 16 rows on; GPUs choose kernels by
shape), and real models' bfloat16 logits often tie outright. SmolLM2-135M in bfloat16 on the CPU:
over 200 greedy tokens, one-token steps and 61-token blocks disagreed on 3 argmaxes, their logits
apart by up to 3.5 % of the largest. Greedy decoding in bfloat16 is then a family of sequences that
part at ties, and speculative decoding may follow another member of it: a difference is a bug only
where the target was not at a tie.
"""
import torch

# How close (relative to the largest logit) two logits must be to count as tied: twice the spread
# measured above for bfloat16; float16 carries three more bits.
TIE = {torch.float32: 0.0, torch.bfloat16: 2**-4, torch.float16: 2**-7}


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first index where `a` and `b` differ; None when one is a prefix of the other."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


@torch.inference_mode()
def matches_reference(target, prompt: list[int], reference: list[int], tokens: list[int]) -> bool:
    """Whether greedy `tokens` are the target's output for `prompt`, `reference` being autoregressive
    decoding's: equal, or (in half precision) first differing at a tie of the target's logits there,
    recomputed from the shared prefix. `target` is the Decoder; its cache is reset."""
    if tokens == reference:
        return True
    tolerance, at = TIE.get(target.dtype, 0.0), first_difference(tokens, reference)
    if not tolerance or at is None:
        return False
    target.reset(target.cache.capacity)  # the buffer decoding allocated, not a new one
    logits, _ = target(torch.tensor(prompt + reference[:at], device=target.device), last_only=True)
    logits = logits[-1].float()
    return bool((logits[tokens[at]] - logits[reference[at]]).abs() <= tolerance * logits.abs().max())


def what_lossless_means(dtype: torch.dtype, temperature: float = 0.0) -> str:
    """The words the tables put beside `lossless`."""
    if temperature > 0:
        return "sampled, so outputs are not compared (speculative sampling keeps the target's distribution)"
    if not TIE.get(dtype):
        return "greedy outputs identical"
    return f"greedy outputs identical, or parting only at ties of the {str(dtype).removeprefix('torch.')} target's logits"
