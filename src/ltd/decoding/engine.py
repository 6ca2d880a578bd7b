"""The decoding loop: draft a tree, verify it in one target pass, accept, compact, repeat.

`generate` with a controller runs speculative decoding; `generate_autoregressive` runs the
baseline on the same decoder. Both stop at a stop token, at `max_new_tokens`, or when the context
is full, so their outputs are comparable token for token.
"""
import time
from dataclasses import dataclass, field

import torch

from ltd.decoding.acceptance import accept_greedy, accept_sampling, sample
from ltd.decoding.controller import Controller
from ltd.decoding.tree import DraftTree
from ltd.errors import LtdError
from ltd.models.decoder import Decoder


@dataclass
class Cycle:
    """One draft-and-verify cycle (for autoregressive decoding: one step)."""

    depth: int  # expansions drafted
    verify_size: int  # draft tokens verified (V)
    accepted: int  # draft tokens accepted (the bonus token not counted)
    draft_s: float
    verify_s: float
    policy_s: float
    context_length: int


@dataclass
class Generation:
    tokens: list[int]
    cycles: list[Cycle] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def acceptance_length(self) -> float:
        """tau: mean accepted draft tokens + 1 per cycle."""
        return sum(c.accepted + 1 for c in self.cycles) / max(1, len(self.cycles))


class Clock:
    """Wall time that waits for the accelerator before reading."""

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def __call__(self) -> float:
        self.sync()
        return time.perf_counter()


class Engine:
    def __init__(self, target: Decoder, stop_token_ids: tuple[int, ...], drafter=None,
                 max_context: int | None = None):
        self.target = target
        self.drafter = drafter
        self.stops = set(stop_token_ids)
        self.capacity = min(max_context or target.max_positions, target.max_positions)
        self.clock = Clock(target.device)

    def _start(self, prompt: list[int], max_new_tokens: int) -> torch.Tensor:
        if not prompt:
            raise LtdError("empty prompt")
        if max_new_tokens < 1:
            raise LtdError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if len(prompt) >= self.capacity:
            raise LtdError(f"prompt of {len(prompt)} tokens exceeds the context limit of {self.capacity}")
        self.target.reset(self.capacity)
        return torch.tensor(prompt, dtype=torch.long, device=self.target.device)

    def _finish(self, out: list[int], new: list[int], max_new_tokens: int, prompt_length: int) -> bool:
        """Append `new` to `out` up to a stop token or a limit; True when generation is over."""
        for token in new:
            out.append(token)
            if (token in self.stops or len(out) >= max_new_tokens
                    or prompt_length + len(out) >= self.capacity):
                return True
        return False

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, generator) -> int:
        if temperature == 0:
            return int(logits.argmax())
        return sample(torch.softmax(logits.float() / temperature, dim=-1), generator)

    @torch.inference_mode()
    def generate_autoregressive(self, prompt: list[int], max_new_tokens: int, temperature: float = 0.0,
                                generator: torch.Generator | None = None) -> Generation:
        tokens = self._start(prompt, max_new_tokens)
        clock = self.clock
        begin = clock()
        logits, _ = self.target(tokens, last_only=True)
        result = Generation([])
        token = self._pick(logits[-1], temperature, generator)
        while not self._finish(result.tokens, [token], max_new_tokens, len(prompt)):
            context, t0 = self.target.length, clock()
            logits, _ = self.target(torch.tensor([token], device=tokens.device))
            token = self._pick(logits[-1], temperature, generator)
            result.cycles.append(Cycle(0, 0, 0, 0.0, clock() - t0, 0.0, context))
        result.seconds = clock() - begin
        return result

    @torch.inference_mode()
    def generate(self, prompt: list[int], controller: Controller, max_new_tokens: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> Generation:
        if self.drafter is None:
            raise LtdError("speculative decoding needs a drafter")
        target, drafter, clock = self.target, self.drafter, self.clock
        device = target.device
        tokens = self._start(prompt, max_new_tokens)
        drafter.reset(self.capacity)
        controller.start()
        begin = clock()
        logits, features = target(tokens, feature_layers=drafter.feature_layers, last_only=True)
        root = self._pick(logits[-1], temperature, generator)
        result = Generation([])
        new_context = torch.cat((tokens, torch.tensor([root], device=device)))
        done = self._finish(result.tokens, [root], max_new_tokens, len(prompt))
        k = controller.top_k
        while not done:
            context = target.length
            t0 = clock()
            policy_s = 0.0
            tree = DraftTree(k, device)
            tree.add_root(*drafter.update(new_context, features, k))
            while drafter.room() >= tree.frontier.numel():  # near the context limit the cache runs out first
                p0 = time.perf_counter()
                more = controller.keep_drafting(tree, context)
                policy_s += time.perf_counter() - p0
                if not more:
                    break
                expansion = drafter.expand(tree.frontier_tokens(), tree.frontier_parent_slots, tree.depth, k)
                tree.add_expansion(*expansion)
            p0 = time.perf_counter()
            size = controller.verify_size(tree, context)
            policy_s += time.perf_counter() - p0
            selection = tree.select(min(size, self.capacity - context - 1))
            drafter.rollback()
            t1 = clock()

            verify_input = torch.cat((torch.tensor([root], device=device), selection.tokens))
            positions = context + torch.cat((torch.zeros(1, dtype=torch.long, device=device), selection.depths))
            logits, features = target(verify_input, positions=positions, tree_mask=selection.mask,
                                      feature_layers=drafter.feature_layers)
            if temperature == 0:
                accepted, root = accept_greedy(selection, logits)
            else:
                accepted, root = accept_sampling(selection, logits, temperature, generator)
            target.cache.keep(context, context + accepted)
            features = features[accepted] if features is not None else None
            new_tokens = verify_input[accepted[1:]]
            new_context = torch.cat((new_tokens, torch.tensor([root], device=device)))
            done = self._finish(result.tokens, new_context.tolist(), max_new_tokens, len(prompt))
            t2 = clock()
            controller.observe(accepted.numel() - 1)
            result.cycles.append(Cycle(tree.depth, selection.size, accepted.numel() - 1, t1 - t0 - policy_s,
                                       t2 - t1, policy_s, context))
        result.seconds = clock() - begin
        return result
