"""What a cycle is worth to a policy (conf/reward/ chooses one): the paper trains on throughput; the ablations
swap in acceptance length or time cost; tokens_saved is ltd's own.

    throughput    (accepted + 1) / (draft seconds + verify seconds)
    acceptance    accepted + 1
    time_cost     -(draft seconds + verify seconds)
    tokens_saved  accepted + 1 - rate * (draft seconds + verify seconds) / step seconds

An episode is one cycle, so PPO maximises the mean reward per cycle. For throughput that is the mean of
the cycles' own tokens/s, which counts a long cycle as much as a short one; decoding's speed is total
tokens / total time. tokens_saved prices a cycle's time in tokens at `rate` times the autoregressive
speed (step seconds: the target's pass over the root alone at the cycle's context, by the cost model).
Its mean is E[tokens] - rate * E[time / step], positive when a policy decodes faster than `rate` x
autoregressive (exactly so where the step does not change with the context; Dinkelbach's
transform): a level is worth drafting when what it is expected to add beats what its time would
have made at that speed. At the best constant tree's speed-up (what
make train sets when the rate is null) the policy earns only what beats that tree.
"""
from dataclasses import dataclass

import torch

from ltd.core.errors import LtdError

REWARDS = ("throughput", "acceptance", "time_cost", "tokens_saved")


@dataclass(frozen=True)
class Reward:
    kind: str = "throughput"
    rate: float | None = None  # tokens_saved: the speed-up over autoregressive decoding its time is priced at

    def __post_init__(self):
        if self.kind not in REWARDS:
            raise LtdError(f"unknown reward {self.kind!r}; choose from: {', '.join(REWARDS)}")
        if self.rate is not None and (isinstance(self.rate, bool) or not isinstance(self.rate, (int, float))
                                      or not self.rate > 0):
            raise LtdError(f"reward rate must be a number > 0 or null, got {self.rate!r}")

    @property
    def prices_steps(self) -> bool:
        """Whether the reward reads an autoregressive step's time (from the cost model)."""
        return self.kind == "tokens_saved"

    def key(self) -> str | dict:
        """What trained policies depend on: the kind, and the rate where it counts."""
        return {"kind": self.kind, "rate": self.rate} if self.prices_steps else self.kind

    def __call__(self, accepted: torch.Tensor, draft_s: torch.Tensor, verify_s: torch.Tensor,
                 step_s: torch.Tensor | None = None) -> torch.Tensor:
        """The reward of cycles that accepted `accepted` draft tokens in these times; `step_s`: an
        autoregressive step at their contexts, for a reward that `prices_steps`."""
        if self.kind == "throughput":
            return (accepted + 1) / (draft_s + verify_s)
        if self.kind == "acceptance":
            return (accepted + 1).to(draft_s.dtype)
        if self.kind == "time_cost":
            return -(draft_s + verify_s)
        if self.rate is None:
            raise LtdError("reward tokens_saved has no rate: give reward.rate, or train with make train, which sets it")
        return (accepted + 1) - self.rate * (draft_s + verify_s) / step_s.to(draft_s.dtype)
