"""Searching static tree shapes (depth, top-k, V) for the best measured speed-up, with Optuna.

A trial decodes the same questions with autoregressive decoding and the candidate tree,
interleaved (the evaluation harness), and scores the tree by its speed-up: relative to the
autoregressive run beside it, so drift of the machine between trials cancels. The study lives in
a journal file: an interrupted search resumes with every finished trial, and a trial cut short is
tried again first.
"""
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from ltd.decoding.controller import StaticTree
from ltd.errors import LtdError


@dataclass
class TreeSpace:
    """Optuna mode: integer ranges, both ends included. Grid mode: the values listed."""

    depth: list[int] = field(default_factory=lambda: [1, 8])
    top_k: list[int] = field(default_factory=lambda: [1, 10])
    verify: list[int] = field(default_factory=lambda: [2, 64])


MODES = ("optuna", "grid")
KEYS = ("depth", "top_k", "verify")


def open_study(name: str, path: Path, mode: str, space: TreeSpace, seed: int) -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if mode not in MODES:
        raise LtdError(f"sweep mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "optuna":
        for key in KEYS:
            bounds = getattr(space, key)
            if len(bounds) != 2 or not 1 <= bounds[0] <= bounds[1]:
                raise LtdError(f"sweep space {key} must be [low, high] with 1 <= low <= high, got {bounds}")
    elif any(not getattr(space, key) or min(getattr(space, key)) < 1 for key in KEYS):
        raise LtdError(f"sweep grid values must be non-empty lists of integers >= 1, got {space}")
    # Grid mode queues its points itself (Optuna's GridSampler stops only inside study.optimize).
    sampler = optuna.samplers.TPESampler(seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction="maximize",
                                load_if_exists=True)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # Cut short by Ctrl-C or a crash: closed as failed, its shape queued to be measured again.
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params)
    return study


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def suggest_tree(trial: optuna.Trial, mode: str, space: TreeSpace) -> StaticTree:
    if mode == "grid":  # the trial was queued with its grid point
        values = {key: trial.suggest_categorical(key, list(getattr(space, key))) for key in KEYS}
    else:
        values = {key: trial.suggest_int(key, *getattr(space, key)) for key in KEYS}
    return StaticTree(**values)


def queue_grid_point(study: optuna.Study, space: TreeSpace) -> bool:
    """Queue the next grid point not measured yet, unless one is queued; False when none is left."""
    if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        return True
    done = {tuple(t.params[key] for key in KEYS) for t in finished(study)}
    for point in itertools.product(*(getattr(space, key) for key in KEYS)):
        if point not in done:
            study.enqueue_trial(dict(zip(KEYS, point)))
            return True
    return False


def run_study(study: optuna.Study, trials: int, mode: str, space: TreeSpace, measure, on_trial=None) -> None:
    """Run trials until `trials` have finished; `measure(tree)` returns (speed-up, details)."""
    while len(finished(study)) < trials:
        if mode == "grid" and not queue_grid_point(study, space):
            break
        trial = study.ask()
        tree = suggest_tree(trial, mode, space)
        value, details = measure(tree)
        for key, detail in details.items():
            trial.set_user_attr(key, detail)
        study.tell(trial, value)
        if on_trial is not None:
            on_trial(trial.number, tree, value, details)


def tuned_config(tree: StaticTree, note: str) -> str:
    """The best tree as a controller config a later run names (`controller=tuned-<model>`). V is
    written as what the tree can hold: a shallow tree has fewer candidates than the V sampled."""
    candidates = tree.top_k + (tree.depth - 1) * tree.top_k ** 2
    verify = min(tree.verify, candidates)
    return f"# {note}\nkind: static\ndepth: {tree.depth}\ntop_k: {tree.top_k}\nverify: {verify}\n"
