"""make drafter-rl: PPOW, the second training stage of an EAGLE-3 head, and its ablations.

1. The supervised head `make drafter` finished for this model and drafter config, and the
   self-distilled shards it trained on.
2. gamma, the drafter's step over the target's, from the cost model of this machine (a chain, one
   node a level; measured once and kept in <results>/profiles).
3. Each variant of conf/ppow (`ppow.variants`): PPOW with or without the proximity reward and the
   windowing, or the supervised control (the training-time test continued for as many optimizer
   steps). Each head lands beside the supervised one, keyed by its settings and gamma; an
   interrupted variant resumes, a finished one is reused.
4. The supervised head and every variant decode the first questions of the evaluation tasks with
   the same tree, interleaved with autoregressive decoding: tau and speed-up per task, printed,
   summarised in W&B and appended to the results store.
"""
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from ltd.core.artefacts import Artefact, hold
from ltd.core.atomic import write_directory, write_json
from ltd.core.errors import LtdError
from ltd.core.fingerprints import digest
from ltd.core.provenance import Provenance
from ltd.core.results import ResultPaths
from ltd.core.tables import format_table
from ltd.core.tasks import load_questions
from ltd.core.tracking import Tracker, metric_name
from ltd.decoding.controller import StaticTree
from ltd.decoding.engine import Engine
from ltd.drafter.heads import DrafterJob, finished_head, head_key, reusable_head
from ltd.drafter.loop import train
from ltd.drafter.ppow import PPOWSettings, tune
from ltd.eval.runner import AUTOREGRESSIVE, Method, check_lossless, decode_questions, summarise
from ltd.eval.store import append_rows, stamped
from ltd.jobs.drafter import head_data
from ltd.jobs.profile import ensure_cost_model
from ltd.models.eagle3 import Eagle3Drafter, Eagle3Head
from ltd.traces.cost_model import CostModel, cost_model_file, cost_model_key
from ltd.traces.profiler import measure_cost_model

SUPERVISED = "supervised"
PPOW_HEAD = 1  # format of a variant's head directory


@dataclass
class PPOWJob:
    drafter: DrafterJob  # the supervised stage (make drafter's settings)
    variants: list[PPOWSettings]
    tasks: list  # task configs: name, path
    questions: int  # the first N of each task
    max_new_tokens: int
    eval_tree: tuple[int, int, int]  # depth, top-k, V
    root: str  # make drafter's checkpoints
    results: str  # profiles, the store
    who: Provenance  # for the cost model's key


def gamma_of(costs: CostModel) -> float:
    """One draft level (one node) over one target step, averaged over the profiled contexts."""
    ratios = [(costs.draft_seconds(2, c, 0) - costs.draft_seconds(1, c, 0)) / costs.verify_seconds(0, c)
              for c in costs.contexts]
    return sum(ratios) / len(ratios)


def chain_costs(job: PPOWJob, target, drafter, threads: int, log=print) -> CostModel:
    """The cost model of chains (top-k 1) for this head on this machine: saved, or measured now."""
    who = job.who
    file = cost_model_file(job.results, cost_model_key(who.model, who.drafter, who.machine, 1))

    def measure(saved: CostModel | None) -> CostModel:
        log("measuring the cost of a draft step and a target step (once per head and machine)")
        contexts = sorted({min(c, target.decoder.max_positions // 2) for c in (128, 512)})
        return measure_cost_model(target, drafter, drafter_name="eagle3", threads=threads, contexts=contexts,
                                  verify_sizes=[0], top_k=1, max_depth=2, repeats=5)

    return ensure_cost_model(file, measure)[0]


def variant_artefact(work: Path, supervised_key: dict, settings: PPOWSettings, gamma: float) -> Artefact:
    key = {"artefact": "ppow head", "format": PPOW_HEAD, "supervised": supervised_key, "settings": asdict(settings),
           "gamma": round(gamma, 3)}
    return Artefact(work / f"ppow-{settings.name}-{digest(key, 10)}" / "head", key, "PPOW head", directory=True)


def train_variant(target, supervised: Path, shards: list[dict], job: PPOWJob, settings: PPOWSettings, gamma: float,
                  tracker: Tracker, log=print) -> Path:
    """The variant's head, trained from the supervised one (or reused); returns its directory."""
    final = variant_artefact(supervised.parent, head_key(target.identity, job.drafter), settings, gamma)
    if reusable_head(final, log) is not None:
        log(f"{settings.name}: reusing {final.path}")
        return final.path
    hold(final.path.parent, f"PPOW variant {settings.name}")
    head, state = Eagle3Head.load(supervised), final.path.parent / "training.pt"
    # One W&B run holds every variant: its own step is a metric, W&B's counts rows across them.
    report = lambda row: tracker.log({f"{settings.name}/{k}": v for k, v in row.items()
                                      if isinstance(v, (int, float))})
    if settings.method == "ppow":
        history = tune(head, target.decoder.embed, shards=shards, settings=settings, gamma=gamma, state_path=state,
                       log=log, report=report)
    else:
        s = settings
        continued = replace(job.drafter.train, lr=s.lr, batch_tokens=s.batch_tokens, grad_clip=s.grad_clip,
                            checkpoint_every=s.checkpoint_every, seed=s.seed)
        history = train(head, target.decoder.embed, shards=shards, settings=continued, state_path=state, log=log,
                        steps=s.optimizer_steps)
    metrics = dict(variant=settings.name, gamma=gamma, optimizer_steps=settings.optimizer_steps,
                   train_seconds=sum(r["seconds"] for r in history), last=history[-1])

    def write(tmp: Path) -> None:
        head.cpu().save(tmp)
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "key.json", final.key)

    write_directory(final.path, write)
    return final.path


def evaluate(target, heads: dict[str, Path], job: PPOWJob, log=print) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Every head decodes each task's first questions with the same tree, interleaved with
    autoregressive decoding; one row per task and head."""
    decoder, tree = target.decoder, StaticTree(*job.eval_tree)
    engines = {name: Engine(decoder, target.stop_token_ids, Eagle3Drafter(
        Eagle3Head.load(path), decoder.embed, decoder.spec.num_layers, decoder.max_positions))
        for name, path in heads.items()}
    methods = [Method(AUTOREGRESSIVE)] + [Method(name, tree, engine) for name, engine in engines.items()]
    first = next(iter(engines.values()))
    warm_up = target.encode_chat([{"role": "user", "content": "Say hello."}])
    for method in methods:  # the first method timed would otherwise pay for everything's first call
        method.generate(first, warm_up, 16, 0.0, 0)
    rows, per_task, decoded = [], {}, 0
    for task in job.tasks:
        questions = load_questions(task.path, job.questions)
        log(f"{task.name}: {len(questions)} questions, {len(methods)} methods interleaved")
        per_task[task.name] = decode_questions(first, target, methods=methods, questions=questions,
                                               max_new_tokens=job.max_new_tokens, temperature=0.0, seed=0,
                                               first=decoded)
        decoded += len(questions)
        summary = summarise(per_task[task.name], [m.name for m in methods])
        rows += [dict(task=task.name, **row) for row in summary if row["method"] != AUTOREGRESSIVE]
    return pd.DataFrame(rows), per_task


def table(results: pd.DataFrame) -> list[dict]:
    """One row per head: tau and speed-up per task, their means, tau's change over the supervised head's."""
    rows = []
    base = results[results["method"] == SUPERVISED].set_index("task")["tau"]
    for name, group in results.groupby("method", sort=False):
        by_task = group.set_index("task")
        row = {"head": name}
        for task in by_task.index:
            row[f"{task} tau"] = by_task.loc[task, "tau"]
            row[f"{task} speed-up"] = by_task.loc[task, "speed-up"]
        row["mean tau"] = by_task["tau"].mean()
        row["mean speed-up"] = by_task["speed-up"].mean()
        row["tau vs supervised"] = f"{(by_task['tau'] / base).mean() - 1:+.1%}"
        row["lossless"] = bool(by_task["lossless"].all())
        rows.append(row)
    return rows


def head_metrics(rows: list[dict]) -> dict:
    """The heads' table as W&B keys: `<head>/speedup` and `<head>/tau` (means over the tasks),
    `<head>/<task>_speedup`, ..."""
    return {f"{r['head']}/{metric_name(k.removeprefix('mean '))}": v for r in rows for k, v in r.items()
            if isinstance(v, float)}


def run(target, drafter, job: PPOWJob, threads: int, run_dir: Path, tracker: Tracker, log=print) -> list[dict]:
    """The whole of make drafter-rl; returns the table's rows."""
    if not job.drafter.answering:
        raise LtdError("PPOW rewards windows by the target's own continuation: it needs the self-distilled shards "
                       "(drafter.train.responses=target)")
    supervised = finished_head(Path(job.root), target.name, target.identity, job.drafter)
    if not (supervised.path / "metrics.json").exists():
        raise LtdError(f"no supervised head for {target.name} with these drafter settings in {job.root}: "
                       f"make drafter trains it first")
    shards, _ = head_data(target, job.drafter, job.root, log)
    gamma = gamma_of(chain_costs(job, target, drafter, threads, log))
    log(f"gamma (a draft step over a target step, measured here): {gamma:.3f}")
    heads = {SUPERVISED: supervised.path}
    for settings in job.variants:
        heads[settings.name] = train_variant(target, supervised.path, shards=shards, job=job, settings=settings,
                                             gamma=gamma, tracker=tracker, log=log)
    results, per_task = evaluate(target, heads, job, log)
    rows = table(results)
    depth, top_k, verify = job.eval_tree
    print(f"\n{target.name}: EAGLE-3 heads, tree depth {depth}, top-k {top_k}, V {verify}, greedy, first "
          f"{job.questions} questions, {job.max_new_tokens} new tokens, {threads} threads, gamma {gamma:.3f}")
    print(format_table(rows, list(rows[0])))
    tracker.summarise(head_metrics(rows))
    store = ResultPaths(job.results).store
    append_rows(store, stamped(results.to_dict("records"), run_dir, job="drafter-rl", gamma=gamma,
                               model=target.name, eval_tree=list(job.eval_tree)))
    print(f"appended {len(results)} rows to {store}")
    check_lossless(per_task)
    return rows
