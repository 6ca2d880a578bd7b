"""The decoding loop: draft a tree, verify it in one target pass, accept, compact, repeat.

`generate` with a controller runs speculative decoding; `generate_autoregressive` runs the
baseline on the same decoder. Both stop at a stop token, at `max_new_tokens`, or when the context
is full, so their outputs are comparable token for token.
"""
import time
from dataclasses import dataclass, field

import torch

from ltd.core.errors import LtdError
from ltd.decoding.acceptance import accept_greedy, accept_sampling, sample
from ltd.decoding.controller import Controller
from ltd.decoding.tree import DraftTree
from ltd.models.decoder import Decoder
from ltd.models.proposals import check_top_k


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
    # The drafter's own estimate of the accepted length had the whole tree been verified: the sum of
    # its candidates' path probabilities (what the size policy reads, summarised; 0 for a plain step).
    tree_mass: float = 0.0


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
            result.cycles.append(Cycle(depth=0, verify_size=0, accepted=0, draft_s=0.0, verify_s=clock() - t0,
                                       policy_s=0.0, context_length=context))
        result.seconds = clock() - begin
        return result

    @torch.inference_mode()
    def generate(self, prompt: list[int], controller: Controller, max_new_tokens: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> Generation:
        run = SpeculativeRun(self, prompt, top_k=controller.top_k, max_new_tokens=max_new_tokens,
                             temperature=temperature, generator=generator, state=controller.reads_state)
        controller.start()
        while not run.done:
            context = run.context
            p0 = time.perf_counter()
            if controller.reads_state:
                controller.see(run.state)
            top_k = controller.cycle_top_k()
            policy_s = time.perf_counter() - p0
            tree = run.draft_root(top_k)
            policy_s += run.draft(tree, controller)
            p0 = time.perf_counter()
            size = controller.verify_size(tree, context)
            policy_s += time.perf_counter() - p0
            controller.observe(run.verify(tree, size, policy_s).accepted)
        return run.finish()


class SpeculativeRun:
    """One answer decoded speculatively, a step at a time: the engine's loop drives it with a
    controller, an online environment drives it with a policy under training. A cycle is
    `draft_root`, any number of `expand`, then `verify`. Its Cycle record's draft time is the
    time spent inside these calls up to the verify pass, so whatever the caller does between them
    (deciding, or a trainer's bookkeeping) is not counted as drafting."""

    @torch.inference_mode()
    def __init__(self, engine: Engine, prompt: list[int], top_k: int, max_new_tokens: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None, state: bool = False):
        """`top_k`: the largest top-k of its cycles. `state`: keep the target's hidden state of the
        last accepted token (see `state()`): an EAGLE-3 drafter's features hold it already; for
        another drafter the target's passes also return their last layer's output."""
        if engine.drafter is None:
            raise LtdError("speculative decoding needs a drafter")
        check_top_k(engine.drafter, top_k)
        self.engine, self.top_k, self.max_new_tokens = engine, top_k, max_new_tokens
        self.temperature, self.generator, self.prompt_length = temperature, generator, len(prompt)
        target, drafter, clock = engine.target, engine.drafter, engine.clock
        self.layers = drafter.feature_layers or ((target.spec.num_layers,) if state else ())
        tokens = engine._start(prompt, max_new_tokens)
        drafter.reset(engine.capacity)
        self.begin = clock()
        logits, self.features = target(tokens, feature_layers=self.layers, last_only=True)
        self.root = engine._pick(logits[-1], temperature, generator)
        self.result = Generation([])
        self.new_context = torch.cat((tokens, torch.tensor([self.root], device=target.device)))
        self.done = engine._finish(self.result.tokens, [self.root], max_new_tokens, len(prompt))
        self.draft_s = 0.0
        self.drafting = False  # between draft_root and verify: the drafter holds the cycle's tree

    @property
    def context(self) -> int:
        """Tokens in the target's cache: the context length of the cycle about to be drafted."""
        return self.engine.target.length

    def state(self) -> torch.Tensor:
        """The target's hidden state at the last accepted token ([hidden], float32, CPU): the mean of
        the layers the run keeps (an EAGLE-3 drafter's three, or the last layer's output)."""
        return self.features[-1].view(len(self.layers), -1).float().mean(0).cpu()

    @torch.inference_mode()
    def draft_root(self, top_k: int | None = None) -> DraftTree:
        """Start a cycle (of top-k `top_k`, at most the run's; by default the run's): the drafter
        absorbs the accepted tokens and proposes the root's children."""
        top_k = top_k or self.top_k
        if top_k > self.top_k:
            raise LtdError(f"a cycle's top-k ({top_k}) is above the run's ({self.top_k})")
        if self.drafting:  # the drafter would absorb the accepted tokens twice
            raise LtdError("a cycle is being drafted: verify it before drafting the next")
        self.drafting = True
        t0 = self.engine.clock()
        tree = DraftTree(top_k, self.engine.target.device)
        drafter_features = self.features if self.engine.drafter.feature_layers else None
        tree.add_root(*self.engine.drafter.update(self.new_context, drafter_features, top_k))
        self.draft_s = self.engine.clock() - t0
        return tree

    def can_expand(self, tree: DraftTree) -> bool:
        """Near the context limit the drafter's cache runs out before the depth limit."""
        return self.engine.drafter.room() >= tree.frontier.numel()

    def draft(self, tree: DraftTree, controller: Controller) -> float:
        """Expand `tree` while `controller` keeps drafting and the drafter's cache has room (the
        drafting loop of the engine and of the online environments); returns the seconds spent
        deciding."""
        decide_s = 0.0
        while self.can_expand(tree):
            p0 = time.perf_counter()
            more = controller.keep_drafting(tree, self.context)
            decide_s += time.perf_counter() - p0
            if not more:
                break
            self.expand(tree)
        return decide_s

    @torch.inference_mode()
    def expand(self, tree: DraftTree) -> None:
        t0, drafter = self.engine.clock(), self.engine.drafter
        tree.grow(drafter)
        self.draft_s += self.engine.clock() - t0

    @torch.inference_mode()
    def verify(self, tree: DraftTree, size: int, policy_s: float = 0.0) -> Cycle:
        """End the cycle: the target verifies the best `size` candidates in one pass. `policy_s`
        is the time the caller spent deciding this cycle, for the record."""
        engine, target, drafter = self.engine, self.engine.target, self.engine.drafter
        device, context = target.device, self.context
        t0 = engine.clock()
        selection = tree.select(min(size, engine.capacity - context - 1))
        drafter.rollback()
        self.drafting = False
        t1 = engine.clock()
        verify_input = torch.cat((torch.tensor([self.root], device=device), selection.tokens))
        positions = context + torch.cat((torch.zeros(1, dtype=torch.long, device=device), selection.depths))
        logits, features = target(verify_input, positions=positions, tree_mask=selection.mask,
                                  feature_layers=self.layers)
        if self.temperature == 0:
            accepted, self.root = accept_greedy(selection, logits)
        else:
            accepted, self.root = accept_sampling(selection, logits, self.temperature, self.generator)
        target.cache.keep(context, context + accepted)
        self.features = features[accepted] if features is not None else None
        new_tokens = verify_input[accepted[1:]]
        self.new_context = torch.cat((new_tokens, torch.tensor([self.root], device=device)))
        self.done = engine._finish(self.result.tokens, self.new_context.tolist(), self.max_new_tokens,
                                   self.prompt_length)
        t2 = engine.clock()
        cycle = Cycle(depth=tree.depth, verify_size=selection.size, accepted=accepted.numel() - 1,
                      draft_s=self.draft_s + t1 - t0, verify_s=t2 - t1, policy_s=policy_s, context_length=context,
                      tree_mass=float(selection.tree_mass))
        self.result.cycles.append(cycle)
        return cycle

    def finish(self) -> Generation:
        self.result.seconds = self.engine.clock() - self.begin
        return self.result
