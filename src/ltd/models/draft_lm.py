"""An independent draft LM: a small causal LM with the target's tokenizer, drafting from tokens."""
import torch

from ltd.core.errors import LtdError
from ltd.models.decoder import Decoder
from ltd.models.proposals import Proposals, TreeSlots, top_k_entropy


class DraftLM:
    feature_layers: tuple[int, ...] = ()  # it needs nothing from the target but tokens

    def __init__(self, decoder: Decoder, target_vocab_size: int):
        if decoder.spec.vocab_size < target_vocab_size:
            raise LtdError(
                f"draft LM vocabulary ({decoder.spec.vocab_size}) is smaller than the target's ({target_vocab_size})"
            )
        self.decoder = decoder
        decoder.exact_trees = False  # its guesses need not match decoding alone: one attention call a level
        self.vocab_size = target_vocab_size  # what it proposes from: the target's ids
        self.slots = TreeSlots(decoder.device)
        self.context = 0

    def reset(self, capacity: int) -> None:
        self.decoder.reset(capacity)
        self.slots.reset()
        self.context = 0

    def update(self, tokens: torch.Tensor, features: torch.Tensor | None, k: int) -> Proposals:
        """Absorb the new context tokens (the last one is the tree's root); return its proposals."""
        logits, _ = self.decoder(tokens, last_only=True)
        self.context = self.decoder.length
        return Proposals(*top_k_entropy(logits[:, : self.vocab_size], k))

    def expand(self, tokens: torch.Tensor, parents: torch.Tensor, depth: int, k: int) -> Proposals:
        """Feed frontier nodes at `depth` (>= 1) whose parents are `parents` (slots, -1 = root);
        returns their proposals, one row per fed node."""
        mask = self.slots.add(parents)
        positions = torch.full_like(tokens, self.context + depth - 1)
        logits, _ = self.decoder(tokens, positions=positions, tree_mask=mask, tree_start=self.context)
        return Proposals(*top_k_entropy(logits[:, : self.vocab_size], k))

    def room(self) -> int:
        """Free positions left in the cache for draft nodes."""
        return self.decoder.cache.room

    def rollback(self) -> None:
        self.decoder.cache.length = self.context
        self.slots.reset()
