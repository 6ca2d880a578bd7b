"""The cost model: what one draft-and-verify cycle costs on this machine, measured by `make profile`.

A cycle's draft time is the drafter absorbing the accepted tokens (which yields the root
expansion) plus one expansion per further level; its verify time is one target pass over the
root and V draft tokens. Both grow with the context. Times were measured at a few context lengths
and sizes; in between they are interpolated linearly, and beyond the last point extrapolated from
the last two, so a replay environment can price any (depth, V, context).
"""
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ltd.artefacts import Artefact, read_or_drop
from ltd.atomic import write_json
from ltd.errors import LtdError
from ltd.fingerprints import digest

COST_MODEL = 1  # format: a change to what a profile measures makes earlier ones stale


def cost_model_key(model: dict, drafter: dict, machine: dict, top_k: int) -> dict:
    """What a profile's times depend on: the model and drafter with their weights, the machine
    (threads included) and the width of the tree drafted. Contexts, sizes and depth measured only
    say how much of the table there is (make train checks it covers what it prices)."""
    return {"artefact": "cost model", "format": COST_MODEL, "model": model, "drafter": drafter, "machine": machine,
            "top_k": top_k}


def cost_model_file(results: str | Path, key: dict) -> Artefact:
    """results/profiles/<model>-<drafter>-<digest of the key>.json"""
    name = f"{key['model']['name']}-{key['drafter']['kind']}-{digest(key, 10)}.json"
    return Artefact(Path(results) / "profiles" / name, key, "cost model")


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
    update_s: list[float]  # [context]: the drafter absorbs an accepted token and its bonus
    expand_s: list[list[float]]  # [context][level - 2]: expansion of level 2, 3, ... (top_k fed nodes)

    def __post_init__(self):
        if sorted(self.contexts) != list(self.contexts) or sorted(self.verify_sizes) != list(self.verify_sizes):
            raise LtdError("cost model contexts and verify sizes must be ascending")

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

    def verify_seconds_batch(self, sizes: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """[B] float64 seconds of verifying sizes[b] draft tokens at contexts[b] (what replay
        environments price a batch with)."""
        table = torch.tensor(self.verify_s, dtype=torch.float64)  # [contexts, sizes]
        xs = torch.tensor(self.verify_sizes, dtype=torch.float64)
        if len(xs) == 1:
            per_context = table[:, :1].expand(-1, sizes.numel())
        else:
            i = torch.searchsorted(xs, sizes.double(), right=True).clamp(1, len(xs) - 1)
            x0, x1 = xs[i - 1], xs[i]
            per_context = table[:, i - 1] + (table[:, i] - table[:, i - 1]) * (sizes - x0) / (x1 - x0)
        return self._along_contexts(per_context.clamp(min=0), contexts)

    def draft_seconds_batch(self, depths: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """[B] float64 seconds of drafting depths[b] levels (the root expansion included) at contexts[b]."""
        if int(depths.min()) < 1 or int(depths.max()) > self.max_depth:
            raise LtdError(f"the cost model covers depths 1 to {self.max_depth}, not {int(depths.max())}")
        update = torch.tensor(self.update_s, dtype=torch.float64)[:, None]
        levels = torch.tensor(self.expand_s, dtype=torch.float64).cumsum(1)
        cumulative = torch.cat((update, update + levels), dim=1)  # [contexts, depth]: drafting 1..max_depth levels
        return self._along_contexts(cumulative[:, depths - 1], contexts)

    def verify_seconds(self, size: int, context: int) -> float:
        return float(self.verify_seconds_batch(torch.tensor([size]), torch.tensor([context]))[0])

    def draft_seconds(self, depth: int, context: int) -> float:
        """Seconds to draft a tree of `depth` levels (the root expansion included)."""
        return float(self.draft_seconds_batch(torch.tensor([depth]), torch.tensor([context]))[0])

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
