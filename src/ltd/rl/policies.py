"""The two policies: small MLPs from an observation to action logits, saved with what they were
trained for, and run greedily (argmax) wherever they are a fixed part of the decoding: in the
engine, and as the frozen partner of the policy being trained.

Depth policy: actions 0 = stop drafting, 1 = draft one more level. Size policy: action i = verify
`sizes[i]` draft tokens. Hidden layers as the paper: depth actor [1024], size actor [1024, 256].
Re-SpS's policy (role "resps", ltd.controllers.resps): action i = the whole tree shape `grid[i]`
(V, depth, top-k), read from the target's normalised hidden state (`state_width` wide).
"""
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ltd.core.atomic import write_file
from ltd.core.errors import LtdError, reason
from ltd.decoding.tree import DraftTree
from ltd.rl.observations import (depth_observation, depth_observations, depth_width, latest_level, size_observation,
                                 size_observations, size_width)

STOP, CONTINUE = 0, 1
TRAINED_BY = {"depth": "make train", "size": "make train", "resps": "make resps"}


@dataclass(frozen=True)
class PolicySpec:
    role: str  # "depth" or "size"
    top_k: int
    max_depth: int
    hidden: tuple[int, ...]
    sizes: tuple[int, ...] = ()  # the size policy's choices of V
    state_width: int = 0  # resps: the target's hidden size
    grid: tuple[tuple[int, int, int], ...] = ()  # resps: each action's (V, depth, top-k)

    def __post_init__(self):
        if self.role not in ("depth", "size", "resps"):
            raise LtdError(f"a policy's role is depth, size or resps, not {self.role!r}")
        if self.role == "size" and (not self.sizes or min(self.sizes) < 0):
            raise LtdError(f"the size policy needs a list of sizes >= 0, got {list(self.sizes)}")
        if self.role == "resps" and (not self.grid or self.state_width < 1):
            raise LtdError("the resps policy needs a grid of tree shapes and the width of the state it reads")

    @property
    def observation_width(self) -> int:
        if self.role == "resps":
            return self.state_width
        return depth_width(self.top_k) if self.role == "depth" else size_width(self.top_k, self.max_depth)

    @property
    def actions(self) -> int:
        return {"depth": 2, "size": len(self.sizes), "resps": len(self.grid)}[self.role]


def mlp(inputs: int, hidden: tuple[int, ...], outputs: int) -> nn.Sequential:
    layers, width = [], inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.Tanh()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, outputs))


class Policy(nn.Module):
    def __init__(self, spec: PolicySpec):
        super().__init__()
        self.spec = spec
        self.net = mlp(spec.observation_width, spec.hidden, spec.actions)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.net(observation)

    @torch.no_grad()
    def act(self, observation: torch.Tensor) -> torch.Tensor:
        """The greedy action of each row ([B, width] -> [B])."""
        return self.net(observation).argmax(-1)

    @torch.no_grad()
    def act_on_prefix(self, observation: torch.Tensor, used: int) -> int:
        """The greedy action for one observation ([width]) that is zero between entry `used` and its
        last two (a size observation of a tree that is not full): the first layer reads only the
        weights of the other entries, the same logits for a fraction of the memory traffic, which
        keeps the policy's time per cycle small beside the draft and verify passes. For a frozen
        policy: the first layer's transposed weights are kept from the first call on."""
        width = observation.numel()
        if used >= width - 2:
            return int(self.act(observation[None])[0])
        if getattr(self, "_first_rows", None) is None:
            self._first_rows = self.net[0].weight.t().contiguous()  # [width, hidden]: one row per entry
        rows = self._first_rows
        hidden = self.net[0].bias + observation[:used] @ rows[:used] + observation[-2:] @ rows[-2:]
        return int(self.net[1:](hidden).argmax())

    def save(self, path: str | Path) -> None:
        state = dict(spec=asdict(self.spec), weights=self.net.state_dict())
        write_file(path, lambda tmp: torch.save(state, tmp))

    @classmethod
    def load(cls, path: str | Path, role: str | None = None) -> "Policy":
        path = Path(path)
        if not path.is_file():
            raise LtdError(f"no policy at {path}: {TRAINED_BY.get(role, 'make train')} trains one")
        try:
            state = torch.load(path, weights_only=True)
            spec = state["spec"]
            policy = cls(PolicySpec(**{**spec, "hidden": tuple(spec["hidden"]), "sizes": tuple(spec["sizes"]),
                                       "grid": tuple(map(tuple, spec.get("grid", ())))}))
            policy.net.load_state_dict(state["weights"])
        except (RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as error:
            raise LtdError(f"cannot read policy {path}: {reason(error)}") from None
        if role is not None and policy.spec.role != role:
            raise LtdError(f"{path} is a {policy.spec.role} policy, not a {role} policy")
        return policy.eval()


def policy_depths(policy: Policy, scores: torch.Tensor, context_length: torch.Tensor) -> torch.Tensor:
    """[B] the depth the depth policy drafts to on each full-tree row ([B, N] scores): it is asked
    after every level from the first and stops at its first STOP, or at max_depth."""
    spec = policy.spec
    B, levels = scores.shape[0], spec.max_depth - 1
    if levels == 0:
        return torch.ones(B, dtype=torch.long)
    depth = torch.arange(1, levels + 1).repeat(B)
    latest = latest_level(scores.repeat_interleave(levels, 0), depth, spec.top_k)
    observations = depth_observations(latest, depth, context_length.repeat_interleave(levels), spec.top_k,
                                      spec.max_depth)
    stops = policy.act(observations).reshape(B, levels) == STOP
    first_stop = torch.where(stops.any(1), stops.float().argmax(1) + 1, spec.max_depth)
    return first_stop.long()


def policy_sizes(policy: Policy, scores: torch.Tensor, depth: torch.Tensor, context_length: torch.Tensor) -> torch.Tensor:
    """[B] the V the size policy picks for each row's tree of `depth` levels."""
    spec = policy.spec
    observations = size_observations(scores, depth, context_length, spec.top_k, spec.max_depth)
    return torch.tensor(spec.sizes)[policy.act(observations)]


def keeps_drafting(policy: Policy, tree: DraftTree, context_length: int) -> bool:
    """The depth policy's greedy decision on the engine's live tree, after its latest expansion."""
    return int(policy.act(depth_observation(tree, context_length, policy.spec.max_depth)[None])[0]) != STOP


def size_for(policy: Policy, tree: DraftTree, context_length: int) -> int:
    """The size policy's greedy V for the engine's live tree."""
    observation = size_observation(tree, context_length, policy.spec.max_depth)
    return policy.spec.sizes[policy.act_on_prefix(observation, tree.count)]
