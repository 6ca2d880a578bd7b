"""The training loop of an EAGLE-3 head over teacher-forced shards: AdamW, warm-up then cosine
decay, periodic checkpoints, resume after a crash or Ctrl-C where the last checkpoint stood."""
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ltd.core.artefacts import damaged
from ltd.core.atomic import write_file
from ltd.drafter.ttt import Batch, ttt_loss
from ltd.models.decoder import rope_tables
from ltd.models.eagle3 import Eagle3Head


@dataclass
class TrainSettings:
    ttt_steps: int = 5  # unrolled steps of the training-time test
    epochs: int = 2
    lr: float = 1e-3
    warmup: float = 0.03  # share of the steps
    batch_tokens: int = 1024
    grad_clip: float = 0.5
    checkpoint_every: int = 50  # optimizer steps
    seed: int = 0


def batches_of(shards: list[dict], batch_tokens: int, seed: int) -> list[list[tuple[int, int]]]:
    """(shard, sequence) pairs grouped into batches of similar lengths, in a seeded order."""
    items = [(s, i, int(sh["offsets"][i + 1] - sh["offsets"][i]))
             for s, sh in enumerate(shards) for i in range(len(sh["offsets"]) - 1)]
    rng = random.Random(seed)
    rng.shuffle(items)
    batches = []
    for start in range(0, len(items), 256):  # sort within windows: little padding, still shuffled
        window = sorted(items[start : start + 256], key=lambda item: item[2])
        batch, width = [], 0
        for s, i, n in window:
            if batch and max(width, n) * (len(batch) + 1) > batch_tokens:
                batches.append(batch)
                batch, width = [], 0
            batch.append((s, i))
            width = max(width, n)
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches


def collate(shards: list[dict], members: list[tuple[int, int]]) -> Batch:
    spans = [(shards[s], int(shards[s]["offsets"][i]), int(shards[s]["offsets"][i + 1])) for s, i in members]
    width = max(end - start for _, start, end in spans)

    def stack(key, dtype, fill=0):
        first = spans[0][0][key]
        out = torch.full((len(spans), width, *first.shape[1:]), fill, dtype=dtype)
        for row, (shard, start, end) in enumerate(spans):
            out[row, : end - start] = shard[key][start:end].to(dtype)
        return out

    return Batch(stack("features", torch.float32), stack("tokens", torch.long), stack("top_ids", torch.long),
                 stack("top_probs", torch.float32), stack("predicts_response", torch.bool, False))


def learning_rate(step: int, total: int, settings: TrainSettings) -> float:
    warmup = max(1, int(settings.warmup * total))
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * progress))


def resume(head: Eagle3Head, params: list[torch.Tensor], lr: float,
           state_path: Path) -> tuple[torch.optim.Optimizer, int, list[dict]]:
    """The optimizer, step and history to go on with: from `state_path` when it holds a run
    (`head` takes its weights), else fresh (a damaged file is named and set aside)."""
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    if not state_path.exists():
        return optimizer, 0, []
    initial_state = {k: v.clone() for k, v in head.state_dict().items()}
    try:
        # Saved from wherever it trained; the optimizer's moments follow its parameters' device.
        state = torch.load(state_path, map_location=params[0].device, weights_only=True)
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        return optimizer, state["step"], state["history"]
    except Exception as error:  # torch.load fails in many ways on a cut file; all mean the same here
        damaged(state_path, error, "training from the start")
        head.load_state_dict(initial_state)
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0), 0, []


def optimise(head: Eagle3Head, lr: float, total: int, one_step, state_path: Path, checkpoint_every: int,
             desc: str, postfix, log=print, report=lambda row: None) -> list[dict]:
    """Run `one_step(step, optimizer, params) -> row` until `total` steps, with a progress bar
    (`postfix(recent rows)`), a checkpoint every `checkpoint_every` steps and on Ctrl-C; resumes
    from `state_path` if it holds a run. Each row gains its step and seconds, then goes to
    `report`. Returns the rows."""
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer, step, history = resume(head, params, lr, state_path)
    if step:
        log(f"resuming {desc} at step {step} of {total}")

    def checkpoint():
        state = dict(head=head.state_dict(), optimizer=optimizer.state_dict(), step=step, history=history)
        write_file(state_path, lambda tmp: torch.save(state, tmp))

    head.train()
    bar = tqdm(total=total, initial=step, desc=desc, unit="step", mininterval=1.0)
    try:
        while step < total:
            start = time.perf_counter()
            row = one_step(step, optimizer, params)
            step += 1
            history.append(dict(step=step, **row, seconds=time.perf_counter() - start))
            report(history[-1])
            bar.set_postfix(postfix(history[-20:]))
            bar.update()
            if step % checkpoint_every == 0:
                checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        bar.close()
        log(f"interrupted: saved at step {step}; run again to resume")
        raise
    bar.close()
    checkpoint()
    head.eval()
    return history


def train(head: Eagle3Head, embed: torch.Tensor, shards: list[dict], settings: TrainSettings,
          state_path: Path, log=print, steps: int | None = None) -> list[dict]:
    """Train `head` in place; returns the logged rows. Resumes from `state_path` if it exists.
    `steps`: that many optimizer steps instead of `settings.epochs` passes over the shards.

    The head trains where the target's `embed` lives, and stays there. Its weights are float32
    whatever the target's dtype (bfloat16 master weights would lose the small updates late in the
    schedule); the shards' float16 features and probabilities are read as float32."""
    torch.manual_seed(settings.seed)
    device = embed.device
    head.to(device, torch.float32)
    plan = batch_plan(shards, settings.batch_tokens, settings.seed, settings.epochs, steps)
    cos, sin = rope_for(head, shards, settings.ttt_steps + 1, device)

    def one_step(step: int, optimizer, params) -> dict:
        batch = collate(shards, plan[step]).to(device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, len(plan), settings)
        loss, agreement = ttt_loss(head, embed, batch=batch, steps=settings.ttt_steps, cos=cos, sin=sin)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        return dict(loss=loss.item(), agreement=agreement, tokens=int(batch.predicts_response.sum()))

    def postfix(recent: list[dict]) -> dict:
        return dict(loss=f"{sum(r['loss'] for r in recent) / len(recent):.3f}",
                    top1=f"{sum(r['agreement'][0] for r in recent if r['agreement']) / len(recent):.2f}",
                    tok_s=f"{sum(r['tokens'] for r in recent) / sum(r['seconds'] for r in recent):.0f}")

    return optimise(head, settings.lr, total=len(plan), one_step=one_step, state_path=state_path,
                    checkpoint_every=settings.checkpoint_every, desc="train drafter", postfix=postfix, log=log)


def batch_plan(shards: list[dict], batch_tokens: int, seed: int, epochs: int, steps: int | None = None) -> list:
    """The batches of `epochs` passes over the shards, each pass in its own seeded order; with
    `steps`, exactly that many (passes repeat as needed)."""
    plan, epoch = [], 0
    while len(plan) < steps if steps is not None else epoch < epochs:
        plan += batches_of(shards, batch_tokens, seed + epoch)
        epoch += 1
    return plan if steps is None else plan[:steps]


def rope_for(head: Eagle3Head, shards: list[dict], extra: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables long enough for the longest sequence plus `extra` positions."""
    longest = max(int((sh["offsets"][1:] - sh["offsets"][:-1]).max()) for sh in shards)
    return tuple(table.to(device) for table in rope_tables(head.config, longest + extra))
