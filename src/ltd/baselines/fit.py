"""Training the learned baselines from decoding traces, as the paper does: AdamW on HumanEval
traces with balanced labels.

Each baseline's rows come from the same feature functions its controller calls on the live tree:
- DISCO: after the expansion that made level d (1 <= d < max_depth), should drafting go on?
  Yes when level d + 1's best candidate lies on the target's path (another level would be accepted).
- SpecDec++: after the expansion that made level d, is its best candidate accepted, given its
  parent was? Only rows whose parent lies on the path (the root always does).
- C2T: is a candidate of the depth-`depth` tree on the target's path?
Labels are balanced by keeping as many rows of the common label as of the rare one (C2T's
candidates are over 99 % negatives: weighting the loss instead would hold millions of rows in memory).
"""
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from ltd.baselines.classifiers import Classifier, TrainedClassifier, save_classifier
from ltd.baselines.features import (CANDIDATE_FEATURES, DEPTH_FEATURES, best_candidate, candidate_depths,
                                    candidate_features, depth_features)
from ltd.core.errors import LtdError
from ltd.core.tables import format_table
from ltd.traces.trace import Trace

KINDS = ("disco", "specdec_pp", "c2t")
BASELINES = 1  # format: a change to the features or training makes earlier weights stale


@dataclass
class FitSettings:
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-4  # the paper's
    weight_decay: float = 0.01
    held_out: float = 0.1  # fraction of the rows kept aside to measure accuracy
    seed: int = 0


def baselines_key(model: dict, drafter: dict, traces: dict, settings: dict) -> dict:
    """What trained weights depend on: the model and drafter whose trees they read, the traces
    (ltd.traces.trace_sets.trace_set) and the training settings."""
    return {"artefact": "learned baselines", "format": BASELINES, "model": model, "drafter": drafter,
            "traces": traces, "settings": settings}


def trace_shape(traces: list[Trace]) -> tuple[int, int]:
    """(top_k, levels) shared by all `traces`; traces of different trees cannot train one classifier."""
    if not traces:
        raise LtdError("no traces to train on")
    shapes = {(t.top_k, int(t.depths.max())) for t in traces}
    if len(shapes) > 1:
        raise LtdError(f"the traces were recorded with different trees (top-k, depth): {sorted(shapes)}")
    return shapes.pop()


def _depth_rows(trace: Trace, depths: range, max_depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every position at every level in `depths`: features [R, DEPTH_FEATURES] and each row's level [R]."""
    P, k = trace.positions, trace.top_k
    depth = torch.tensor(list(depths)).repeat_interleave(P)
    rows = lambda x: x.repeat(len(depths), 1)
    return depth_features(rows(trace.scores), rows(trace.parents), entropies=rows(trace.entropies), depth=depth,
                          top_k=k, max_depth=max_depth), depth


def disco_rows(trace: Trace, max_depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DISCO's rows of one trace: (features, continue labels)."""
    x, depth = _depth_rows(trace, range(1, max_depth), max_depth)
    scores, on_path = trace.scores.repeat(max_depth - 1, 1), trace.on_path.repeat(max_depth - 1, 1)
    deeper = best_candidate(scores, depth + 1, trace.top_k)
    return x, on_path.gather(1, deeper[:, None])[:, 0]


def specdec_rows(trace: Trace, max_depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SpecDec++'s rows of one trace: (features, accepted labels), where the parent was accepted."""
    x, depth = _depth_rows(trace, range(1, max_depth + 1), max_depth)
    scores, on_path = trace.scores.repeat(max_depth, 1), trace.on_path.repeat(max_depth, 1)
    parents = trace.parents.repeat(max_depth, 1)
    best = best_candidate(scores, depth, trace.top_k)[:, None]
    parent = parents.gather(1, best)[:, 0]
    parent_accepted = (parent < 0) | on_path.gather(1, parent.clamp(min=0)[:, None])[:, 0]
    return x[parent_accepted], on_path.gather(1, best)[:, 0][parent_accepted]


def c2t_rows(trace: Trace, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """C2T's rows of one trace: every candidate of the depth-`depth` tree, (features, on-path labels)."""
    n = int((candidate_depths(trace.scores.shape[1], trace.top_k) <= depth).sum())
    x = candidate_features(trace.scores[:, :n], trace.parents[:, :n], trace.top_k, depth)
    return x.reshape(-1, CANDIDATE_FEATURES), trace.on_path[:, :n].reshape(-1)


def balance(y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """[R] bool: the rows kept so that each label counts as much, all of the rarer label and a
    seeded random sample of the other."""
    positive, negative = y.nonzero()[:, 0], (~y).nonzero()[:, 0]
    count = min(positive.numel(), negative.numel())
    keep = torch.zeros_like(y)
    for rows in (positive, negative):
        keep[rows[torch.randperm(rows.numel(), generator=generator)[:count]]] = True
    return keep


def dataset(kind: str, traces: list[Trace], depth: int, generator: torch.Generator):
    """Balanced (features [R, F], labels [R] bool) of baseline `kind` from `traces`; `depth` is
    max_depth (DISCO, SpecDec++) or the tree's fixed depth (C2T). Two passes over the traces, the
    first for the labels only, so that only the kept rows' features are ever held together."""
    rows = {"disco": disco_rows, "specdec_pp": specdec_rows, "c2t": c2t_rows}[kind]
    labels = [rows(trace, depth)[1] for trace in traces]
    keep = balance(torch.cat(labels), generator).split([len(y) for y in labels])
    xs, ys = [], []
    for trace, kept in zip(traces, keep):
        x, y = rows(trace, depth)
        xs.append(x[kept])
        ys.append(y[kept])
    return torch.cat(xs), torch.cat(ys)


def _loss(classifier: Classifier, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.binary_cross_entropy_with_logits(classifier(x), y.float()))


def balanced_accuracy(classifier: Classifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """The mean over the two labels of the fraction predicted right (0.5 for a constant guess)."""
    with torch.no_grad():
        predicted = classifier(x) > 0
    return float(torch.stack([(predicted[y == label] == label).float().mean() for label in (True, False)]).mean())


def train_classifier(classifier: Classifier, x: torch.Tensor, y: torch.Tensor, settings: FitSettings) -> dict:
    """Fit `classifier` to (x, y) with AdamW, holding out a seeded `settings.held_out` of the rows;
    returns the held-out loss before and after, and the held-out balanced accuracy."""
    generator = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(len(y), generator=generator)
    held = max(1, round(settings.held_out * len(y)))
    test, train = order[:held], order[held:]
    for name, rows in (("training", train), ("held-out", test)):
        if not (y[rows].any() and (~y[rows]).any()):
            raise LtdError(f"the {name} rows ({rows.numel()} of {len(y)}) do not hold both labels: record more traces")
    classifier.fit_scaling(x[train])
    optimiser = torch.optim.AdamW(classifier.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    before = _loss(classifier, x[test], y[test])
    classifier.train()
    for _ in range(settings.epochs):
        shuffled = train[torch.randperm(train.numel(), generator=generator)]
        for batch in shuffled.split(settings.batch_size):
            loss = F.binary_cross_entropy_with_logits(classifier(x[batch]), y[batch].float())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    classifier.eval()
    return dict(rows=len(y), train_rows=train.numel(), held_out_rows=held, held_out_loss_before=before,
                held_out_loss=_loss(classifier, x[test], y[test]),
                balanced_accuracy=balanced_accuracy(classifier, x[test], y[test]))


def train_baseline(kind: str, traces: list[Trace], hidden: int, settings: FitSettings,
                   depth: int | None = None) -> tuple[TrainedClassifier, dict]:
    """Baseline `kind` trained on `traces`. `depth`: C2T's fixed tree depth, or max_depth of
    DISCO and SpecDec++; by default every level the traces hold."""
    if kind not in KINDS:
        raise LtdError(f"unknown learned baseline {kind!r}; choose from: {', '.join(KINDS)}")
    top_k, levels = trace_shape(traces)
    depth = depth or levels
    if not 2 <= depth <= levels:
        raise LtdError(f"{kind} depth {depth} needs traces of at least that many levels (and 2); these have {levels}")
    x, y = dataset(kind, traces, depth, torch.Generator().manual_seed(settings.seed))
    torch.manual_seed(settings.seed)  # the initial weights
    classifier = Classifier(CANDIDATE_FEATURES if kind == "c2t" else DEPTH_FEATURES, hidden)
    metrics = train_classifier(classifier, x, y, settings)
    return TrainedClassifier(kind, top_k, depth, classifier), metrics


def baselines_settings(cfg) -> dict:
    """The settings of a train_baselines config that shape the weights (not where things go)."""
    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items()
            if k not in ("model", "drafter", "traces", "output", "results", "threads")}


def fit_baselines(cfg, traces: list[Trace], output: Path, kinds: tuple[str, ...] = KINDS) -> str:
    """Train `kinds` on `traces` with the settings of a train_baselines config, write their
    weights to `output`; returns the table of what each learned."""
    settings = FitSettings(**{f.name: cfg[f.name] for f in fields(FitSettings)})
    table = []
    for kind in kinds:
        depth = cfg.c2t_depth if kind == "c2t" else None
        trained, metrics = train_baseline(kind, traces, cfg.hidden[kind], settings, depth)
        save_classifier(output / f"{kind}.pt", trained)
        table.append(dict(baseline=kind, rows=metrics["rows"], **{"held-out": metrics["held_out_rows"],
                          "loss before": metrics["held_out_loss_before"], "loss after": metrics["held_out_loss"],
                          "balanced accuracy": metrics["balanced_accuracy"]}))
    return format_table(table, list(table[0]))
