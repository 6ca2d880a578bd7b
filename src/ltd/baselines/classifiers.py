"""The learned baselines' networks: small feed-forward classifiers, saved in one file with what
they were trained for (baseline kind, tree width, depth), so a controller can refuse a file made
for another tree instead of reading features it never learned from."""
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ltd.core.atomic import write_file
from ltd.core.errors import LtdError, reason


class Classifier(nn.Module):
    """features -> one logit: `layers` hidden layers of width `hidden`. The features are
    standardised inside with the training set's mean and spread (kept as buffers, saved with the
    weights): cumulative log-probs reach tens of nats while depth / max_depth stays below one."""

    def __init__(self, features: int, hidden: int, layers: int = 2):
        super().__init__()
        self.features, self.hidden, self.layers = features, hidden, layers
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))
        blocks, width = [], features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*blocks, nn.Linear(width, 1))

    def fit_scaling(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(dim=0))
        self.std.copy_(x.std(dim=0).nan_to_num(1.0).clamp(min=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., features] -> [...] logits."""
        return self.net((x - self.mean) / self.std).squeeze(-1)

    @torch.inference_mode()
    def probability(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(x))


@dataclass
class TrainedClassifier:
    """A classifier and the tree it reads: the baseline `kind`, the drafter's `top_k` and the
    `max_depth` that scales its depth feature."""

    kind: str
    top_k: int
    max_depth: int
    classifier: Classifier


def save_classifier(path: str | Path, trained: TrainedClassifier) -> None:
    c = trained.classifier
    payload = dict(kind=trained.kind, top_k=trained.top_k, max_depth=trained.max_depth, features=c.features,
                   hidden=c.hidden, layers=c.layers, state=c.state_dict())
    write_file(path, lambda tmp: torch.save(payload, tmp))


def load_classifier(path: str | Path, kind: str) -> TrainedClassifier:
    """The classifier saved at `path` for baseline `kind`; a missing, unreadable or other
    baseline's file is one LtdError line."""
    path = Path(path)
    if not path.is_file():
        raise LtdError(f"no trained {kind} weights at {path}: python -m ltd.cli.train_baselines trains them")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        classifier = Classifier(payload["features"], payload["hidden"], payload["layers"])
        classifier.load_state_dict(payload["state"])
        trained = TrainedClassifier(payload["kind"], payload["top_k"], payload["max_depth"], classifier.eval())
    except Exception as error:  # torch.load fails in many ways on a damaged file; all mean the same here
        raise LtdError(f"cannot read {kind} weights {path}: {reason(error)}") from None
    if trained.kind != kind:
        raise LtdError(f"{path} holds {trained.kind} weights, not {kind}")
    return trained
