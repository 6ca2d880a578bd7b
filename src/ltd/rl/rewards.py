"""What a cycle is worth to a policy (conf/reward/ chooses one): the paper trains on throughput; the ablations
swap in acceptance length or time cost.

    throughput   (accepted + 1) / (draft seconds + verify seconds)
    acceptance   accepted + 1
    time_cost    -(draft seconds + verify seconds)
"""
import torch

from ltd.core.errors import LtdError

REWARDS = ("throughput", "acceptance", "time_cost")


def check_reward(kind: str) -> None:
    if kind not in REWARDS:
        raise LtdError(f"unknown reward {kind!r}; choose from: {', '.join(REWARDS)}")


def cycle_reward(kind: str, accepted: torch.Tensor, draft_s: torch.Tensor, verify_s: torch.Tensor) -> torch.Tensor:
    check_reward(kind)
    if kind == "throughput":
        return (accepted + 1) / (draft_s + verify_s)
    if kind == "acceptance":
        return (accepted + 1).to(draft_s.dtype)
    return -(draft_s + verify_s)  # time_cost
