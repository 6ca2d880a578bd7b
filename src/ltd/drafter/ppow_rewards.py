"""PPOW's rewards and window priority, on windows of K drafted tokens (arXiv 2605.14978).

- Cost-aware speed-up reward: k / (k * gamma + 1) for a window whose first k tokens the target
  accepts, gamma the drafter's step over the target's, from the measured cost model.
- Proximity reward: eta * 1[delta < epsilon] for a window the target rejects at once (k = 0),
  delta the target's log-prob gap between its own choice and the drafted token. ltd measures the
  gap at the first token: past it the window lies off the target's path, where pricing it would
  take a target pass per window (the paper's cumulative gap).
- Window priority (ADAW): the mean over the window's positions of the target's confidence
  1 - H(P)/log|V| times KL(P || Q), P the target's next-token distribution and Q the drafter's.
"""
import math

import torch


def accepted_length(drafted: torch.Tensor, continuation: torch.Tensor) -> torch.Tensor:
    """[...] the number of leading drafted tokens equal to the target's own continuation ([..., K] each)."""
    return (drafted == continuation).long().cumprod(-1).sum(-1)


def speedup_reward(accepted: torch.Tensor, gamma: float) -> torch.Tensor:
    """k / (k gamma + 1): accepted tokens per unit of time, a window's draft steps counted."""
    k = accepted.float()
    return k / (k * gamma + 1)


def first_token_gap(drafted: torch.Tensor, top_ids: torch.Tensor, top_probs: torch.Tensor) -> torch.Tensor:
    """log P(the target's choice) - log P(the drafted token) under the target's stored top-k
    distribution ([..., K] ids and probs, [...] drafted ids); inf where the drafted token lies
    outside the stored top-k."""
    hit = top_ids == drafted.unsqueeze(-1)
    drafted_prob = torch.where(hit, top_probs, 0.0).sum(-1)
    gap = top_probs[..., 0].log() - drafted_prob.clamp(min=1e-30).log()
    return torch.where(hit.any(-1), gap, math.inf)


def near_miss(accepted: torch.Tensor, gap: torch.Tensor, epsilon: float) -> torch.Tensor:
    """A window rejected at once whose first token was within `epsilon` nats of the target's choice."""
    return (accepted == 0) & (gap < epsilon)


def window_rewards(accepted: torch.Tensor, gap: torch.Tensor, gamma: float, eta: float, epsilon: float,
                   proximity: bool) -> torch.Tensor:
    """The speed-up reward, plus (with `proximity`) eta for a near miss."""
    reward = speedup_reward(accepted, gamma)
    if proximity:
        reward = reward + eta * near_miss(accepted, gap, epsilon).float()
    return reward


def target_kl(target_probs: torch.Tensor, draft_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) per position: `target_probs` [..., n] the target's distribution (its top tokens,
    renormalised), `draft_logprobs` [..., n] the drafter's log-probs of the same tokens."""
    p = target_probs.float()
    return (p * (p.clamp(min=1e-30).log() - draft_logprobs.float())).sum(-1)


def token_criticality(target_probs: torch.Tensor, draft_logprobs: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """v = (1 - H(P)/log|V|) * KL(P || Q) per position (as target_kl takes them), |V| the target's vocabulary."""
    p = target_probs.float()
    entropy = -(p * p.clamp(min=1e-30).log()).sum(-1)
    return (1 - entropy / math.log(vocab_size)) * target_kl(p, draft_logprobs)


def window_priority(criticality: torch.Tensor, valid: torch.Tensor, window: int) -> torch.Tensor:
    """[B, T]: the mean criticality over positions t .. t+window-1 of each row; -inf where the
    window is not `valid` there (it runs past the response)."""
    padded = torch.nn.functional.pad(criticality.float(), (0, window - 1))
    means = padded.unfold(-1, window, 1).mean(-1)
    return means.masked_fill(~valid, -math.inf)
