"""The cost model: what one draft-and-verify cycle costs on this machine, measured by `make profile`.

A cycle's draft time is the drafter absorbing the tokens the previous cycle accepted (which yields
the root expansion) plus one expansion per further level; its verify time is one target pass over
the root and V draft tokens; its overhead is the engine's time around those passes (selecting the
verified nodes, the drafter's rollback, acceptance, the target's cache, bookkeeping). All grow with
the context. Times were measured at a few context lengths and sizes; in between they are
interpolated linearly, and beyond the last point extrapolated from the last two, so a replay
environment can price any (depth, V, context).

The accounting is shifted by one cycle: a cycle that accepts L draft tokens makes the next one
absorb L + 1 (them and the bonus token), and that absorption is priced on the cycle that accepted
them: draft price = absorb(L + 1) + the expansions of levels 2..depth. A replay knows L once the
cycle is verified, not what the next cycle will be. Over an answer the prices sum to what the
engine spends but for its two ends: the engine's first cycle absorbs the prompt (the drafter's
prefill, priced by neither, as the target's is not), and the last cycle's absorption is priced
though the engine, its answer over, never makes it.

The overhead is a term of its own, per cycle and per V: choosing V nodes, their mask and
positions, acceptance and the caches' rollback grow with V (measured on the 1.5B's blocks: ~0 at V
1, 3-5 ms from V 6; one figure for every V had priced shallow cycles 4 % over, deep ones 1 %). The
replay environments count it with the verify time (ltd.rl.trace_table). An autoregressive step is
one target pass over the root alone (`verify_seconds(0, ...)`, `step_seconds_batch`): it has no
tree to pay overhead for.
"""
import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ltd.core.artefacts import Artefact, read_or_drop
from ltd.core.atomic import write_json
from ltd.core.errors import LtdError
from ltd.core.fingerprints import digest
from ltd.core.results import ResultPaths
from ltd.kernels.build import AMX_ROWS, sources_digest

COST_MODEL = 3  # format: a change to what a profile measures makes earlier ones stale


def cost_model_key(model: dict, drafter: dict, machine: dict, top_k: int) -> dict:
    """What a profile's times depend on: the model and drafter with their weights, the machine
    (threads included), ltd's kernels (their sources, and the rows from which panels run on AMX: a
    faster kernel changes every cost) and the width of the tree drafted. Contexts, sizes and depth
    measured only say how much of the table there is (make train checks it covers what it
    prices)."""
    kernels = {"sources": sources_digest(), "amx_rows": AMX_ROWS}
    return {"artefact": "cost model", "format": COST_MODEL, "model": model, "drafter": drafter, "machine": machine,
            "kernels": kernels, "top_k": top_k}


def cost_model_file(results: str | Path, key: dict) -> Artefact:
    """results/profiles/<model>-<drafter>-<digest of the key>.json"""
    name = f"{key['model']['name']}-{key['drafter']['kind']}-{digest(key, 10)}.json"
    return Artefact(ResultPaths(results).profile(name), key, "cost model")


@dataclass
class CostModel:
    model: str
    drafter: str
    device: str
    threads: int
    top_k: int
    contexts: list[int]  # ascending
    verify_sizes: list[int]  # V, ascending (the root token comes on top)
    verify_s: list[list[float]]  # [context][V]: one target pass over 1 + V tokens
    # [context][n - 1]: the drafter absorbs n tokens (n = 1..max_depth + 1: a cycle accepts up to its
    # depth, plus the bonus token), which yields the root expansion
    absorb_s: list[list[float]]
    expand_s: list[list[float]]  # [context][level - 2]: expansion of level 2, 3, ... (top_k fed nodes)
    # [context][V]: the engine's time per cycle verifying V outside the target's and drafter's passes (0 at V 0)
    overhead_s: list[list[float]]

    def __post_init__(self):
        if sorted(self.contexts) != list(self.contexts) or sorted(self.verify_sizes) != list(self.verify_sizes):
            raise LtdError("cost model contexts and verify sizes must be ascending")
        if any(len(row) != len(self.verify_sizes) for row in self.verify_s + self.overhead_s):
            raise LtdError("cost model verify and overhead rows need a time for every verify size")

    @property
    def max_depth(self) -> int:
        return 1 + len(self.expand_s[0])

    def _along_contexts(self, per_context: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """[B] from [len(contexts), B] values measured at each profiled context, at each row's context."""
        xs = torch.tensor(self.contexts, dtype=torch.float64)
        if len(xs) == 1:
            return per_context[0].clamp(min=0)
        i = torch.searchsorted(xs, contexts.double(), right=True).clamp(1, len(xs) - 1)
        rows = torch.arange(per_context.shape[1])
        x0, x1, y0, y1 = xs[i - 1], xs[i], per_context[i - 1, rows], per_context[i, rows]
        return (y0 + (y1 - y0) * (contexts - x0) / (x1 - x0)).clamp(min=0)

    def _along_sizes(self, table: list[list[float]] | torch.Tensor, sizes: torch.Tensor,
                     contexts: torch.Tensor) -> torch.Tensor:
        """[B] float64 values of a [context][V] table at sizes[b] and contexts[b], interpolated."""
        table = torch.as_tensor(table, dtype=torch.float64)
        xs = torch.tensor(self.verify_sizes, dtype=torch.float64)
        if len(xs) == 1:
            per_context = table[:, :1].expand(-1, sizes.numel())
        else:
            i = torch.searchsorted(xs, sizes.double(), right=True).clamp(1, len(xs) - 1)
            x0, x1 = xs[i - 1], xs[i]
            per_context = table[:, i - 1] + (table[:, i] - table[:, i - 1]) * (sizes - x0) / (x1 - x0)
        return self._along_contexts(per_context.clamp(min=0), contexts)

    def verify_seconds_batch(self, sizes: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """[B] float64 seconds of verifying sizes[b] draft tokens at contexts[b] (what replay
        environments price a batch with)."""
        return self._along_sizes(self.verify_s, sizes, contexts)

    def verify_and_overhead_seconds_batch(self, sizes: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """[B] float64 seconds of verifying sizes[b] at contexts[b] with the cycle's overhead (what the
        replay counts as a cycle's verify time): one interpolation of the two tables summed."""
        return self._along_sizes(self._verify_and_overhead_s, sizes, contexts)

    @functools.cached_property
    def _verify_and_overhead_s(self) -> torch.Tensor:
        """The two [context][V] tables summed, once: the replay prices every env step with it."""
        return torch.tensor(self.verify_s, dtype=torch.float64) + torch.tensor(self.overhead_s, dtype=torch.float64)

    def step_seconds_batch(self, contexts: torch.Tensor) -> torch.Tensor:
        """[B] float64 seconds of an autoregressive step at contexts[b]: the root alone (V = 0)."""
        return self.verify_seconds_batch(torch.zeros_like(contexts), contexts)

    def draft_seconds_batch(self, depths: torch.Tensor, contexts: torch.Tensor,
                            accepted: torch.Tensor) -> torch.Tensor:
        """[B] float64 seconds of drafting depths[b] levels at contexts[b] in a cycle that accepts
        accepted[b] draft tokens: the drafter absorbing accepted[b] + 1 tokens (priced here, see the
        module's docstring; past the measured counts, as the most measured) and the expansions of
        levels 2..depths[b]."""
        if int(depths.min()) < 1 or int(depths.max()) > self.max_depth:
            raise LtdError(f"the cost model covers depths 1 to {self.max_depth}, not {int(depths.max())}")
        if int(accepted.min()) < 0:
            raise LtdError(f"a cycle accepts 0 or more draft tokens, not {int(accepted.min())}")
        absorb = torch.tensor(self.absorb_s, dtype=torch.float64)  # [contexts, tokens]
        levels = torch.tensor(self.expand_s, dtype=torch.float64).cumsum(1)
        further = torch.cat((torch.zeros(len(self.contexts), 1, dtype=torch.float64), levels), dim=1)
        tokens = (accepted.long() + 1).clamp(max=absorb.shape[1])
        return self._along_contexts(absorb[:, tokens - 1] + further[:, depths - 1], contexts)

    def verify_seconds(self, size: int, context: int) -> float:
        return float(self.verify_seconds_batch(torch.tensor([size]), torch.tensor([context]))[0])

    def draft_seconds(self, depth: int, context: int, accepted: int) -> float:
        """Seconds to draft a tree of `depth` levels in a cycle accepting `accepted` draft tokens."""
        return float(self.draft_seconds_batch(torch.tensor([depth]), torch.tensor([context]),
                                              torch.tensor([accepted]))[0])

    def overhead_seconds(self, size: int, context: int) -> float:
        """Seconds a cycle verifying `size` spends at `context` outside the target's and drafter's passes."""
        return float(self._along_sizes(self.overhead_s, torch.tensor([size]), torch.tensor([context]))[0])

    def save(self, path: str | Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> "CostModel":
        path = Path(path)
        if not path.is_file():
            raise LtdError(f"no cost model at {path}: make profile measures one")
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as error:
            raise LtdError(f"{path} is not a cost model ({error})") from None


def saved_cost_model(file: Artefact) -> CostModel | None:
    """The cost model `file` holds when it was measured under its key; None when it is missing,
    stale, or damaged (then dropped, with a note)."""
    return read_or_drop(file.path, CostModel.load, "measuring it again") if file.fresh else None
