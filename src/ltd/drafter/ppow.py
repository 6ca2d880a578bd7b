"""PPOW, the second stage of an EAGLE-3 head's training (arXiv 2605.14978): window-level RL.

From chosen prefixes of the self-distilled answers the head drafts a group of G windows of K
tokens by sampling; each window is rewarded by what the target accepts of it, and the head moves
toward the windows that beat their group (group-relative advantages, PPO's clipped objective),
with a KL penalty toward the target's own next-token distribution. The answers are the target's
own greedy text, so its continuation after any prefix is known without running it.

Indices follow the training-time test (ttt.py): at index t the head has read the target's
features up to t and the tokens up to t+1; its first drafted token guesses token t+2, and the
target's distribution (and greedy choice) for token t+j+2 is stored at position t+j+1.
"""
from dataclasses import dataclass

import torch

from ltd.core.errors import LtdError
from ltd.drafter.loop import batch_plan, collate, optimise, rope_for
from ltd.drafter.ppow_rewards import (accepted_length, first_token_gap, near_miss, target_kl,
                                      token_criticality, window_priority, window_rewards)
from ltd.drafter.ttt import Batch, context_step, draft_targets, layer_step, shift_left
from ltd.models.eagle3 import Eagle3Head


@dataclass
class PPOWSettings:
    """One variant of the second stage (conf/ppow/)."""
    name: str = "full"
    method: str = "ppow"  # ppow, or supervised: the training-time test continued for as many optimizer steps (CST)
    window: int = 10  # K: tokens drafted per window
    group: int = 8  # G: windows drafted from each prefix
    prefixes: int = 16  # prefixes per batch
    windowing: bool = True  # ADAW: the prefixes whose windows have the highest priority; else chosen at random
    proximity: bool = True  # eta for a rejected window whose first token was a near miss
    eta: float = 0.2
    epsilon: float = 1.0  # nats: a near miss is within this log-prob of the target's choice
    clip: float = 0.2
    kl_coeff: float = 0.1  # beta: KL(target || head) over the batch's answer positions
    updates: int = 2  # gradient steps on each rollout
    steps: int = 200  # rollouts (batches)
    lr: float = 3e-5
    batch_tokens: int = 1024
    grad_clip: float = 0.5
    checkpoint_every: int = 20
    seed: int = 0

    @property
    def optimizer_steps(self) -> int:
        return self.steps * self.updates

    def validate(self) -> None:
        if self.method not in ("ppow", "supervised"):
            raise LtdError(f"ppow.method must be ppow or supervised, got {self.method!r}")
        for name in ("window", "group", "prefixes", "updates", "steps", "batch_tokens", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise LtdError(f"ppow.{name} must be >= 1, got {getattr(self, name)}")
        if self.method == "ppow" and self.group < 2:
            raise LtdError("ppow.group must be >= 2: advantages are relative to the group")


@dataclass
class Rollout:
    rows: torch.Tensor  # [M] the batch row of each prefix
    starts: torch.Tensor  # [M] its index
    drafted: torch.Tensor  # [M, G, K] draft-vocabulary ids
    logprobs: torch.Tensor  # [M, G, K] under the head that drafted them
    advantages: torch.Tensor  # [M, G]
    counted: torch.Tensor  # [M, G, K] the tokens the reward depends on: up to the first rejected one
    metrics: dict


def context_pass(head: Eagle3Head, embed: torch.Tensor, batch: Batch, cos, sin):
    """Step 0 over the whole batch: the hidden states [B, T, H], the context's keys and values,
    and the head's next-token log-probs at every index [B, T, V']."""
    hidden, context, _ = context_step(head, embed, features=batch.features, tokens=batch.tokens, cos=cos, sin=sin)
    return hidden, context, head.lm_head(head.norm(hidden)).log_softmax(-1)


def chain_pass(head: Eagle3Head, embed: torch.Tensor, hidden: torch.Tensor, context, rows: torch.Tensor,
               starts: torch.Tensor, window: int, group: int, cos, sin, drafted: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """G windows of K tokens from each prefix (rows, starts), drafted as the engine drafts a chain:
    (ids [M, G, K], their log-probs). Sampled from the head when `drafted` is None, else scored."""
    M, T = rows.numel(), context[0].shape[2]
    h = hidden[rows, starts][:, None].expand(M, group, -1)
    context = (context[0][rows], context[1][rows])
    mask = (torch.arange(T, device=rows.device) <= starts[:, None])[:, None, :]
    tokens, logprobs, chain = [], [], ()
    for j in range(window):
        if j:
            position = starts + j
            embeds = embed[head.draft_to_target(tokens[-1])].float()
            h, kv = layer_step(head, h, embeds=embeds, cos=cos[position][:, None, None],
                               sin=sin[position][:, None, None], context_mask=mask, context=context, chain=chain)
            chain = (*chain, kv)
        logp = head.lm_head(head.norm(h)).log_softmax(-1)
        if drafted is None:
            token = torch.multinomial(logp.exp().flatten(0, 1), 1, generator=generator).view(M, group)
        else:
            token = drafted[..., j]
        tokens.append(token)
        logprobs.append(logp.gather(-1, token[..., None]).squeeze(-1))
    return torch.stack(tokens, -1), torch.stack(logprobs, -1)


def target_view(head: Eagle3Head, batch: Batch):
    """The target's distribution for the token each index guesses first (position t+1), over the
    draft vocabulary: (draft ids, probs) [B, T, k], and where it has mass there."""
    ids, probs, mass = draft_targets(head, batch.top_ids, batch.top_probs)
    return shift_left(ids, 1), shift_left(probs, 1), shift_left(batch.predicts_response, 1, False) & (
        shift_left(mass, 1) > 0)


def valid_starts(batch: Batch, window: int) -> torch.Tensor:
    """[B, T]: whether the window at t lies inside the answer (positions t+1 .. t+window predict answer tokens)."""
    T = batch.tokens.shape[1]
    padded = torch.nn.functional.pad(batch.predicts_response, (0, window + 1), value=False)
    return padded[:, 1:].unfold(1, window, 1)[:, :T].all(-1)


def choose_prefixes(priority: torch.Tensor, count: int, windowing: bool, generator: torch.Generator):
    """(rows, starts) of `count` valid prefixes: the highest priority with windowing, else at random."""
    flat = priority.flatten()
    valid = torch.isfinite(flat).nonzero().squeeze(-1)
    if valid.numel() == 0:
        raise LtdError("no answer in this batch is long enough for a window: lower ppow.window")
    n = min(count, valid.numel())
    if windowing:
        chosen = flat.topk(n).indices
    else:
        chosen = valid[torch.randperm(valid.numel(), generator=generator, device=generator.device)[:n]]
    T = priority.shape[1]
    return chosen // T, chosen % T


@torch.no_grad()
def draw_windows(head: Eagle3Head, embed: torch.Tensor, batch: Batch, view, settings: PPOWSettings, gamma: float,
                 cos, sin, generator: torch.Generator) -> Rollout:
    """Choose the prefixes, draft G windows from each, reward them and compare them within their
    group (`view`: the batch's target_view)."""
    s = settings
    hidden, context, logq = context_pass(head, embed, batch, cos, sin)
    ids, probs, has_target = view
    criticality = token_criticality(probs, logq.gather(-1, ids), head.config.vocab_size) * has_target
    priority = window_priority(criticality, valid_starts(batch, s.window), s.window)
    rows, starts = choose_prefixes(priority, s.prefixes, s.windowing, generator)
    drafted, logprobs = chain_pass(head, embed, hidden=hidden, context=context, rows=rows, starts=starts,
                                   window=s.window, group=s.group, cos=cos, sin=sin, generator=generator)
    positions = starts[:, None] + 1 + torch.arange(s.window, device=starts.device)  # where the target chose each token
    continuation = batch.top_ids[rows[:, None], positions, 0]  # [M, K]: the target's greedy choices
    in_target = head.draft_to_target(drafted)
    accepted = accepted_length(in_target, continuation[:, None])
    first = starts + 1
    gap = first_token_gap(in_target[..., 0], batch.top_ids[rows, first][:, None], batch.top_probs[rows, first][:, None])
    rewards = window_rewards(accepted, gap, gamma=gamma, eta=s.eta, epsilon=s.epsilon, proximity=s.proximity)
    advantages = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)
    counted = torch.arange(s.window, device=accepted.device) <= accepted[..., None]
    metrics = dict(reward=rewards.mean().item(), accepted=accepted.float().mean().item(),
                   near_miss=near_miss(accepted, gap, s.epsilon).float().mean().item(),
                   priority=priority[rows, starts].mean().item())
    return Rollout(rows, starts, drafted=drafted, logprobs=logprobs, advantages=advantages, counted=counted,
                   metrics=metrics)


def ppow_loss(head: Eagle3Head, embed: torch.Tensor, batch: Batch, view, rollout: Rollout, settings: PPOWSettings,
              cos, sin) -> tuple[torch.Tensor, dict]:
    """PPO's clipped objective on the rollout's counted tokens, plus beta * KL(target || head)."""
    s, r = settings, rollout
    hidden, context, logq = context_pass(head, embed, batch, cos, sin)
    _, logprobs = chain_pass(head, embed, hidden=hidden, context=context, rows=r.rows, starts=r.starts, window=s.window,
                             group=s.group, cos=cos, sin=sin, drafted=r.drafted)
    ratio = (logprobs - r.logprobs).exp()
    advantage = r.advantages[..., None]
    surrogate = torch.min(ratio * advantage, ratio.clamp(1 - s.clip, 1 + s.clip) * advantage)
    counted = r.counted.float()
    policy_loss = -(surrogate * counted).sum() / counted.sum()
    ids, probs, has_target = view
    kl = target_kl(probs, logq.gather(-1, ids))[has_target].mean()
    clipped = ((ratio - 1).abs() > s.clip).float()
    return policy_loss + s.kl_coeff * kl, dict(policy_loss=policy_loss.item(), kl=kl.item(),
                                               clip_fraction=((clipped * counted).sum() / counted.sum()).item())


def tune(head: Eagle3Head, embed: torch.Tensor, shards: list[dict], settings: PPOWSettings, gamma: float,
         state_path, log=print, report=lambda row: None) -> list[dict]:
    """PPOW on `head` in place (float32, where `embed` lives); returns the logged rows. Resumes
    from `state_path`. Each rollout draws from its own seeded generator, so a resumed run is the
    uninterrupted one."""
    s = settings
    device = embed.device
    head.to(device, torch.float32)
    plan = batch_plan(shards, s.batch_tokens, s.seed, 1, s.steps)
    cos, sin = rope_for(head, shards, s.window + 1, device)

    def one_step(step: int, optimizer, params) -> dict:
        batch = collate(shards, plan[step]).to(device)
        generator = torch.Generator(device=device).manual_seed(s.seed * 1_000_003 + step)
        view = target_view(head, batch)  # the head's vocabulary is fixed: the same for every update
        rollout = draw_windows(head, embed, batch=batch, view=view, settings=s, gamma=gamma, cos=cos, sin=sin,
                               generator=generator)
        for _ in range(s.updates):
            loss, parts = ppow_loss(head, embed, batch=batch, view=view, rollout=rollout, settings=s, cos=cos, sin=sin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
            optimizer.step()
        return dict(rollout.metrics, **parts)

    def postfix(recent: list[dict]) -> dict:
        mean = lambda key: sum(r[key] for r in recent) / len(recent)
        return dict(reward=f"{mean('reward'):.3f}", accepted=f"{mean('accepted'):.2f}", kl=f"{mean('kl'):.3f}")

    return optimise(head, s.lr, total=len(plan), one_step=one_step, state_path=state_path,
                    checkpoint_every=s.checkpoint_every, desc=f"ppow {s.name}", postfix=postfix, log=log, report=report)
