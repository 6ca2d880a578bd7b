"""Re-SpS (Wang, Shi and Chen, AAAI 2026): one policy picks the whole tree shape, V, depth and top-k
at once, from the target's hidden state at the last accepted token, and the shape is held for
`persistence` cycles, so the policy runs once per N cycles (the paper: 10 in training, 30 at
inference). At inference it samples at `temperature` (the paper's max-entropy mode: 1.5); 0 takes
the most likely shape. The engine counts the time spent here as policy time.
"""
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ltd.core.errors import LtdError
from ltd.decoding.controller import Controller
from ltd.decoding.tree import DraftTree
from ltd.rl.policies import Policy
from ltd.rl.resps.actions import Shape, normalised_state


@dataclass
class ReSpS(Controller):
    kind: ClassVar[str] = "resps"
    reads_state: ClassVar[bool] = True
    policy: str = ""  # path of a saved resps policy
    persistence: int = 30  # cycles each chosen shape is held
    temperature: float = 1.5  # sampling temperature; 0: the most likely shape
    seed: int = 0
    top_k: int = field(init=False)

    def __post_init__(self):
        if not isinstance(self.persistence, int) or self.persistence < 1:
            raise LtdError(f"resps persistence must be a whole number of cycles >= 1, got {self.persistence!r}")
        if not self.temperature >= 0:
            raise LtdError(f"resps temperature must be a number >= 0 (0: the most likely shape), got {self.temperature}")
        self.net = Policy.load(self.policy, "resps")
        self.grid = [Shape(*shape) for shape in self.net.spec.grid]
        self.top_k = max(s.top_k for s in self.grid)
        self.generator = torch.Generator()
        self.start()

    def start(self) -> None:
        self.generator.manual_seed(self.seed)
        self.shape, self.held = self.grid[0], 0

    @torch.no_grad()
    def see(self, state) -> None:
        if self.held == 0:
            logits = self.net(normalised_state(state())[None])[0]
            if self.temperature == 0:
                action = int(logits.argmax())
            else:
                action = int(torch.multinomial(torch.softmax(logits / self.temperature, -1), 1, generator=self.generator))
            self.shape, self.held = self.grid[action], self.persistence
        self.held -= 1

    def cycle_top_k(self) -> int:
        return self.shape.top_k

    def keep_drafting(self, tree: DraftTree, context_length: int) -> bool:
        return tree.depth < self.shape.depth

    def verify_size(self, tree: DraftTree, context_length: int) -> int:
        return self.shape.verify
