"""Searching static tree shapes (depth, top-k, V) for the best measured speed-up, with Optuna.

A trial decodes the same questions with autoregressive decoding and the candidate tree,
interleaved (the evaluation harness), and scores the tree by its speed-up: relative to the
autoregressive run beside it, so drift of the machine between trials cancels. Each question's
speed-up is the trial's intermediate value at that question's step, in an order shuffled per batch
of trials; with the Wilcoxon pruner, a trial whose questions so far are worse than the best trial's
on the same questions (signed-rank test, p below the threshold) stops there, as PRUNED.

A study lives in a journal file (one worker) or a database URL (sqlite:///..., postgresql://...),
which several workers share: they finish the asked number of trials together. An interrupted search
resumes with every finished trial, and a trial cut short is tried again first (with a database: once
its worker's heartbeat has been silent for a few minutes). A shape already measured, or being
measured by another worker, is not measured twice: the trial is closed without counting.
"""
import contextlib
import datetime
import importlib.util
import itertools
import os
import random
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
from tqdm import tqdm

from ltd.core.artefacts import Artefact, changes, note
from ltd.core.atomic import write_file
from ltd.core.errors import LtdError, reason
from ltd.core.tables import format_table
from ltd.core.tasks import Question
from ltd.core.tracking import Tracker
from ltd.decoding.controller import StaticTree
from ltd.decoding.engine import Engine
from ltd.decoding.tree import tree_capacity
from ltd.eval.machine_load import LoadGuard
from ltd.eval.runner import AUTOREGRESSIVE, Method, check_lossless, decode_questions, run_load, summarise


@dataclass
class TreeSpace:
    """Optuna mode: integer ranges, both ends included. Grid mode: the values listed."""

    depth: list[int]
    top_k: list[int]
    verify: list[int]


MODES = ("optuna", "grid")
SAMPLERS = ("tpe", "random", "cmaes")  # optuna mode's; grid mode queues its points itself
PRUNERS = ("wilcoxon", "none")
KEYS = ("depth", "top_k", "verify")


def check_sampler(name: str) -> None:
    """One line for a sampler that is not there (before the models load)."""
    if name not in SAMPLERS:
        raise LtdError(f"sweep sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")
    if name == "cmaes" and importlib.util.find_spec("cmaes") is None:
        raise LtdError("sampler=cmaes needs the cmaes package: pip install cmaes")


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    check_sampler(name)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def check_pruner(name: str, p_threshold: float) -> None:
    """One line for a pruner or threshold that is not there (before the models load)."""
    if name not in PRUNERS:
        raise LtdError(f"sweep pruner must be one of {', '.join(PRUNERS)}, got {name!r}")
    if not 0 < p_threshold < 1:
        raise LtdError(f"prune_p must lie between 0 and 1, got {p_threshold}")


def make_pruner(name: str, p_threshold: float) -> optuna.pruners.BasePruner:
    """`wilcoxon`: a trial stops once its questions so far are worse than the best trial's on the same
    questions (signed-rank test, one-sided p < p_threshold; never before 4 shared questions: below
    that no p can fall under 0.1); `none`: every trial decodes every question."""
    check_pruner(name, p_threshold)
    if name == "none":
        return optuna.pruners.NopPruner()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.WilcoxonPruner(p_threshold=p_threshold, n_startup_steps=4)


def check_space(mode: str, space: TreeSpace) -> None:
    if mode not in MODES:
        raise LtdError(f"sweep mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "optuna":
        for key in KEYS:
            bounds = getattr(space, key)
            if len(bounds) != 2 or not 1 <= bounds[0] <= bounds[1]:
                raise LtdError(f"sweep space {key} must be [low, high] with 1 <= low <= high, got {bounds}")
    elif any(not getattr(space, key) or min(getattr(space, key)) < 1 for key in KEYS):
        raise LtdError(f"sweep grid values must be non-empty lists of integers >= 1, got {space}")


HEARTBEAT_S = 60  # a database study's workers say they are alive this often while measuring


def is_database(location: str | Path) -> bool:
    return "://" in str(location)


def open_study(name: str, location: str | Path, mode: str, space: TreeSpace, seed: int,
               sampler: str = "tpe", pruner: str = "none", prune_p: float = 0.1) -> optuna.Study:
    """The study `name` in a journal file (`location` a path) or a database (`location` a URL),
    drawing shapes with `sampler` (optuna mode) and stopping trials early with `pruner` (make_pruner)."""
    check_space(mode, space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shared = is_database(location)
    try:
        storage = database(str(location)) if shared else journal(Path(location))
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    except ValueError as error:  # a line of the journal that is not JSON
        raise LtdError(f"the study journal {location} is damaged ({reason(error)}): delete it to start the search "
                       f"over, or name another study=") from None
    # Seeded by how far the study got (and which worker): a resumed search draws new shapes, not the
    # first ones again. Grid mode queues its points itself (GridSampler stops only inside optimize).
    study.sampler = make_sampler(sampler, seed + len(study.trials) + (os.getpid() if shared else 0))
    study.pruner = make_pruner(pruner, prune_p)
    if shared:  # a dead worker's trial: failed, and queued again by the storage's retry callback
        optuna.storages.fail_stale_trials(study)
        return study
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # Cut short by Ctrl-C or a crash: closed as failed, its shape queued to be measured again.
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params)
    return study


def journal(path: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        drop_cut_line(path)
    return JournalStorage(JournalFileBackend(str(path)))


def database(url: str):
    """A database many workers share; sqlite waits for its lock rather than failing at once. Workers
    started together may race to create its tables: the loser tries again."""
    from sqlalchemy.exc import ArgumentError, DBAPIError

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":  # sqlite makes the file, not its directory
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback())
        except DBAPIError as error:  # another worker creating the tables (or their version row) at once
            if attempt == 4:
                raise LtdError(f"cannot open the study database {url} ({reason(error)})") from None
            time.sleep(0.5 + attempt)
        except (ArgumentError, ImportError) as error:
            raise LtdError(f"cannot open the study database {url} ({reason(error)})") from None


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial):
    """While a trial is measured, its worker tells a shared study it is alive (Optuna does this
    inside study.optimize only; ltd asks and tells)."""
    storage = trial.storage
    if not isinstance(storage, optuna.storages.RDBStorage) or not storage.is_heartbeat_enabled():
        yield
        return
    stop = threading.Event()

    def beat():
        while not stop.wait(0 if not beats else HEARTBEAT_S):
            storage.record_heartbeat(trial._trial_id)  # Optuna's own heartbeat thread does the same
            beats.append(1)

    beats = []
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def drop_cut_line(path: Path) -> None:
    """A journal whose last line was cut short (a kill in the middle of a write) loses that line,
    with a note: Optuna would append the next entry to it."""
    text = path.read_bytes()
    if text and not text.endswith(b"\n"):
        note(f"{path} ends in a line cut short; dropping it")
        write_file(path, lambda tmp: tmp.write_bytes(text[: text.rfind(b"\n") + 1]))


# User attributes of a trial that measured nothing (never PRUNED: that state means a pruner stopped a
# measurement): SAME_AS, the trial that measured (or is measuring) its shape; PAST_TARGET, asked once
# the workers together had `trials`.
SAME_AS = "same_as"
PAST_TARGET = "past_target"


def running(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials being measured (by other workers, where run_study asks)."""
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that measured a shape on every question (repeats of a measured shape left out)."""
    return [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if SAME_AS not in t.user_attrs]


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials a search's budget counts: finished, and pruned (stopped before their last question)."""
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    return finished(study) + [t for t in pruned if SAME_AS not in t.user_attrs]


def suggest_tree(trial: optuna.Trial, mode: str, space: TreeSpace) -> StaticTree:
    """The trial's tree, with V cut to what the tree holds (a shallow tree has fewer candidates
    than the V sampled: every larger V is the same tree)."""
    if mode == "grid":  # the trial was queued with its grid point
        values = {key: trial.suggest_categorical(key, list(getattr(space, key))) for key in KEYS}
    else:
        values = {key: trial.suggest_int(key, *getattr(space, key)) for key in KEYS}
    values["verify"] = min(values["verify"], tree_capacity(values["depth"], values["top_k"]))
    return StaticTree(**values)


def shape(tree: StaticTree) -> tuple[int, int, int]:
    return tree.depth, tree.top_k, tree.verify


def measured_shape(trial: optuna.trial.FrozenTrial) -> tuple[int, int, int]:
    p = trial.params
    return p["depth"], p["top_k"], min(p["verify"], tree_capacity(p["depth"], p["top_k"]))


def queue_grid_point(study: optuna.Study, space: TreeSpace) -> bool:
    """Queue the next grid point not measured yet, unless one is queued; False when none is left."""
    if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        return True
    done = {tuple(t.params[key] for key in KEYS) for t in study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))}
    for point in itertools.product(*(getattr(space, key) for key in KEYS)):
        if point not in done:
            study.enqueue_trial(dict(zip(KEYS, point)))
            return True
    return False


MAX_REPEATS = 200  # proposals in a row of shapes already measured before the search counts as exhausted


REPEAT = "repeat"  # ask_tree's answer for a shape measured already (or being measured)


def ask_tree(study: optuna.Study, trials: int, mode: str, space: TreeSpace):
    """The next trial and its tree; REPEAT when its shape was measured (or is being measured: by
    another worker, or earlier in this batch) and the trial is closed without counting; None when the
    study holds `trials` already or the grid is done."""
    if mode == "grid" and not queue_grid_point(study, space):
        return None
    trial = study.ask()
    # Workers that asked at once: the earlier trials go first, a trial past the target stops its worker.
    if len(counted(study)) + sum(t.number < trial.number for t in running(study)) >= trials:
        trial.set_user_attr(PAST_TARGET, True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return None
    tree = suggest_tree(trial, mode, space)
    earlier = next((t for t in counted(study) if measured_shape(t) == shape(tree)), None)
    elsewhere = [t for t in running(study) if t.number != trial.number and set(t.params) == set(KEYS)
                 and measured_shape(t) == shape(tree)]
    if earlier is not None:  # its outcome again: the speed-up it measured, or pruned
        trial.set_user_attr(SAME_AS, earlier.number)
        if earlier.state == optuna.trial.TrialState.PRUNED:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, earlier.value)
        return REPEAT
    if elsewhere:
        trial.set_user_attr(SAME_AS, elsewhere[0].number)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return REPEAT
    return trial, tree


def run_study(study: optuna.Study, trials: int, mode: str, space: TreeSpace, measure, on_trial=None,
              batch: int = 1) -> None:
    """Run trials until `trials` shapes have been measured (or pruned), `batch` at a time:
    `measure(trees, keep)` returns a (speed-up, details) per tree, the trees of a batch measured
    beside one autoregressive run; it calls `keep(index, step, value)` with each question's speed-up
    of the index-th tree, and stops decoding a tree keep says no to (its speed-up then None)."""
    if trials < 1 or batch < 1:
        raise LtdError(f"trials and batch must be at least 1, got {trials} and {batch}")
    repeats = 0
    # Other workers' trials in flight count: together the workers stop at `trials`.
    while len(counted(study)) + len(running(study)) < trials and repeats < MAX_REPEATS:
        asked = []
        while len(asked) < batch and len(counted(study)) + len(running(study)) < trials and repeats < MAX_REPEATS:
            answer = ask_tree(study, trials, mode, space)
            if answer is None:
                break
            if answer == REPEAT:
                repeats += 1
                continue
            repeats = 0
            asked.append(answer)
        if not asked:
            break
        with contextlib.ExitStack() as stack:
            for trial, _ in asked:
                stack.enter_context(heartbeat(trial))
            results = measure([tree for _, tree in asked], lambda index, step, value: report(asked[index][0], step, value))
        for (trial, tree), (value, details) in zip(asked, results):
            for key, detail in details.items():
                trial.set_user_attr(key, detail)
            if value is None:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, value)
            if on_trial is not None:
                on_trial(trial.number, tree, value, details)


def report(trial: optuna.Trial, step: int, value: float) -> bool:
    """A question's speed-up as the trial's intermediate value at that step; whether to go on."""
    trial.report(value, step)
    return not trial.should_prune()


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    return max(finished(study), key=lambda t: t.value)


def best_tree(study: optuna.Study) -> StaticTree:
    return StaticTree(*measured_shape(best_trial(study)))


def open_keyed_study(storage: str, name: str, key: dict, mode: str, space: TreeSpace, seed: int,
                     sampler: str = "tpe", pruner: str = "none", prune_p: float = 0.1) -> tuple[optuna.Study, str | Path]:
    """(study `name`, where it lives: a database URL, or `<storage>/<name>.journal` with its key
    beside it), checked to hold `key`'s search: a study made under other settings is refused, a new
    one is stamped with it."""
    if not is_database(storage):
        journal_file = Artefact(Path(storage) / f"{name}.journal", key, "tree search")
        if journal_file.path.exists() and not journal_file.fresh:
            raise LtdError(f"study {name} ({journal_file.path}) measured other settings ({journal_file.changes()}): "
                           f"name another study= or delete it")
        journal_file.seal()
        return (open_study(name, journal_file.path, mode, space, seed=seed, sampler=sampler, pruner=pruner,
                           prune_p=prune_p), journal_file.path)
    study = open_study(name, storage, mode, space, seed=seed, sampler=sampler, pruner=pruner, prune_p=prune_p)
    stored = study.user_attrs.get("ltd key")
    if stored is not None and stored != key:
        raise LtdError(f"study {name} in {storage} measured other settings ({changes(stored, key)}): name "
                       f"another study=")
    study.set_user_attr("ltd key", key)
    return study, storage


def write_tuned(path: Path, key: dict, tree: StaticTree, note: str) -> None:
    """The best tree as <results>/conf/controller/tuned-<model>.yaml, with the key of its search beside it."""
    with Artefact(path, key, "tuned tree").rewrite():
        write_file(path, lambda tmp: tmp.write_text(tuned_config(tree, note)))


def tuned_config(tree: StaticTree, note: str) -> str:
    """The best tree as a controller config a later run names (`controller=tuned-<model>`)."""
    return f"# {note}\nkind: static\ndepth: {tree.depth}\ntop_k: {tree.top_k}\nverify: {tree.verify}\n"


def tree_speedup(engine: Engine, target, questions: list[Question], max_new_tokens: int, temperature: float,
                 seed: int, guard: LoadGuard | None = None):
    """What a batch of trials measures: a function of trees (and `keep`, run_study's) giving each its
    speed-up over autoregressive decoding on `questions` and its tau, tok/s, interval, load and
    lossless flag. The questions go in an order shuffled per batch (each a step: its index in
    `questions`), every method of a question interleaved, the order rotating from one question to
    the next and from batch to batch; a tree `keep` stops decodes no further question (its speed-up
    None, the mean of its questions so far kept as a detail), and once none is left the batch ends.
    A tree whose output is not the target's own stops the search (NotLossless); `guard` refuses a
    busy batch where it requires quiet."""
    batches = [0]

    def measure(trees: list[StaticTree], keep=lambda index, step, value: True) -> list[tuple[float | None, dict]]:
        methods = [Method(AUTOREGRESSIVE)] + [Method(f"tree {shape(tree)}", tree) for tree in trees]
        live, stopped, rows = list(range(len(trees))), {}, []
        steps = random.Random(seed + batches[0]).sample(range(len(questions)), len(questions))
        for count, step in enumerate(steps):
            if not live:
                break
            asked = [methods[0]] + [methods[index + 1] for index in live]
            rows.append(decode_questions(engine, target, methods=asked, questions=[questions[step]],
                                         max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                         first=batches[0] * len(questions) + count))
            throughput = rows[-1].set_index("method")["throughput"]
            for index in list(live):
                if not keep(index, step, float(throughput[methods[index + 1].name] / throughput[AUTOREGRESSIVE])):
                    live.remove(index)
                    stopped[index] = count + 1
        batches[0] += 1
        rows = pd.concat(rows, ignore_index=True)
        check_lossless({"the search's tasks": rows})
        load = run_load(rows)
        if guard is not None:
            guard.check(load, f"trees {', '.join(str(shape(tree)) for tree in trees)}")
        result = {AUTOREGRESSIVE: summarise(rows, [AUTOREGRESSIVE])[0]}
        for index, tree in enumerate(trees):  # each tree against autoregressive decoding on the questions it decoded
            name = methods[index + 1].name
            mine = rows[rows["question_id"].isin(rows.loc[rows["method"] == name, "question_id"])]
            result[name] = summarise(mine[mine["method"].isin([AUTOREGRESSIVE, name])], [AUTOREGRESSIVE, name])[1]
        common = {"autoregressive tok/s": result[AUTOREGRESSIVE]["tok/s"], "other load": load.share if load else None}
        return [trial_result(result[methods[index + 1].name], stopped.get(index), len(steps), common)
                for index in range(len(trees))]

    return measure


def trial_result(row: dict, stopped_after: int | None, questions: int, common: dict) -> tuple[float | None, dict]:
    """(speed-up, details) of a tree's summary row; a tree stopped after some questions has no
    speed-up, its speed-up over those questions kept as `speed-up so far`."""
    details = {"tau": row["tau"], "tok/s": row["tok/s"], "speed-up low": row["speed-up low"],
               "speed-up high": row["speed-up high"], "lossless": row["lossless"],
               "questions": stopped_after or questions, **common}
    if stopped_after is not None:
        return None, {**details, "speed-up so far": row["speed-up"]}
    return row["speed-up"], details


def trials_table(study: optuna.Study, top: int = 10) -> str:
    """The `top` best finished trials: shape, speed-up (with its interval over the trial's
    questions, where the trial kept one), tau, the autoregressive tok/s beside it, the share of the
    CPU other work took during the trial, lossless."""
    rows = [dict(trial=t.number, **dict(zip(("depth", "top_k", "verify"), measured_shape(t))),
                 **{"speed-up": t.value, "speed-up low": t.user_attrs.get("speed-up low"),
                    "speed-up high": t.user_attrs.get("speed-up high"),
                    "autoregressive tok/s": t.user_attrs.get("autoregressive tok/s"),
                    "other load": t.user_attrs.get("other load")},
                 tau=t.user_attrs["tau"], lossless=t.user_attrs["lossless"])
            for t in sorted(finished(study), key=lambda t: -t.value)]
    return format_table(rows[:top], ["trial", "depth", "top_k", "verify", "speed-up", "tau", "autoregressive tok/s",
                                     "other load", "lossless"])


def search(study: optuna.Study, trials: int, mode: str, space: TreeSpace, measure, tracker: Tracker,
           description: str, batch: int = 1) -> None:
    """run_study with a progress bar (the best speed-up so far) and every trial logged; however it
    ends (Ctrl-C too), the best so far is summarised in the tracker."""
    bar = tqdm(total=trials, initial=min(len(counted(study)), trials), desc=description, unit="trial")

    def on_trial(number, tree, value, details):
        bar.update()
        if finished(study):
            bar.set_postfix(best=f"{best_trial(study).value:.3f}x", pruned=len(counted(study)) - len(finished(study)),
                            refresh=False)
        # A pruned trial has no speed-up: its speed-up over the questions it decoded is logged apart.
        speedup = {"speedup": value} if value is not None else {"speedup_so_far": details["speed-up so far"]}
        tracker.log({**speedup, "pruned": int(value is None), "questions": details["questions"], "depth": tree.depth,
                     "top_k": tree.top_k, "verify": tree.verify, "tau": details["tau"]}, step=number)

    try:
        run_study(study, trials, mode=mode, space=space, measure=measure, on_trial=on_trial, batch=batch)
    finally:
        bar.close()
        if finished(study):
            best = best_tree(study)
            tracker.summarise({"best/speedup": best_trial(study).value, "best/depth": best.depth,
                               "best/top_k": best.top_k, "best/verify": best.verify})


@dataclass
class SearchJob:
    """A tree search in plain values (make sweep-tree's checked config; make train's when it tunes)."""

    name: str  # the study
    key: dict  # what the search measures on (model, drafter, machine, tasks, settings)
    mode: str
    space: TreeSpace
    trials: int
    batch: int  # trees measured together, beside one autoregressive run
    seed: int
    storage: str
    questions: list[Question]
    tasks_name: str  # `mt_bench+gsm8k+...`
    max_new_tokens: int
    temperature: float
    warmup_tokens: int
    tuned_path: Path | None  # where the best tree goes (<results>/conf/controller/tuned-<model>.yaml); None: nowhere
    guard: LoadGuard
    where: str  # the machine, in words, for the tuned config's note
    sampler: str = "tpe"  # optuna mode: tpe, random or cmaes
    pruner: str = "none"  # wilcoxon: a trial worse than the best on its questions so far stops early
    prune_p: float = 0.1  # the pruner's one-sided p threshold
    start: StaticTree | None = None  # measured first (optuna mode): the tuned tree there was, so the search can only improve on it


def open_search(job: SearchJob) -> tuple[optuna.Study, str | Path]:
    """The study of `job` (open_keyed_study): before the models load, so a study of other settings
    is one line, not a line after a minute of loading."""
    return open_keyed_study(job.storage, job.name, key=job.key, mode=job.mode, space=job.space, seed=job.seed,
                            sampler=job.sampler, pruner=job.pruner, prune_p=job.prune_p)


def tune(job: SearchJob, opened: tuple[optuna.Study, str | Path], engine: Engine, target,
         tracker: Tracker) -> StaticTree | None:
    """Run (or resume) the search `job` describes in its `opened` study (open_search), print its best
    trials and write the best tree (logged as the run's artifact); the best tree (None when no trial
    finished). The tracker is finished however it ends."""
    with tracker:
        return tune_tracked(job, opened, engine, target, tracker)


def tune_tracked(job: SearchJob, opened: tuple[optuna.Study, str | Path], engine: Engine, target,
                 tracker: Tracker) -> StaticTree | None:
    study, location = opened
    if job.start is not None and job.mode == "optuna" and not study.trials:
        study.enqueue_trial(dict(zip(KEYS, shape(job.start))))
    job.guard.before_timing()
    warm_up = target.encode_chat([{"role": "user", "content": job.questions[0].turns[0]}])
    engine.generate(warm_up, StaticTree(depth=3, top_k=max(job.space.top_k), verify=8), job.warmup_tokens)
    measure = tree_speedup(engine, target, questions=job.questions, max_new_tokens=job.max_new_tokens,
                           temperature=job.temperature, seed=0, guard=job.guard)
    search(study, job.trials, mode=job.mode, space=job.space, measure=measure, tracker=tracker,
           description=f"sweep {job.name}", batch=job.batch)
    trials = finished(study)
    if not trials:
        return None
    stopped = len(counted(study)) - len(trials)
    print(f"\n{job.name}: {len(trials)} trials on {len(job.questions)} questions of {job.tasks_name}, up to "
          f"{job.max_new_tokens} new tokens, and {stopped} pruned (study: {location})")
    print(trials_table(study))
    best = best_tree(study)
    if job.tuned_path is not None:
        note_line = (f"Best static tree from make sweep-tree (study {job.name}, {len(trials)} trials, {job.tasks_name}, "
                     f"{len(job.questions)} questions) on {job.where}: speed-up {best_trial(study).value:.3f}x, "
                     f"{datetime.date.today()}")
        write_tuned(job.tuned_path, {**job.key, "artefact": "tuned tree", "study": job.name}, best, note_line)
        tracker.made(job.tuned_path, inputs=[])
        print(f"best: depth {best.depth}, top-k {best.top_k}, V {best.verify} -> {job.tuned_path} "
              f"(make eval names it as method `tuned`)")
    return best
