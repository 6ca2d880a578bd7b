"""The LTD pipeline (make train) on one model, top to bottom:

    1. the cost model of this machine (make profile), measured once and reused
    2. traces of the five tasks' last questions (make record), recorded once and reused
    3. the learned baselines (DISCO, SpecDec++, C2T) from the same traces, trained once
    4. PPO: stage 1, then co-adaptive rounds, each stage resumable
    5. evaluation of LTD against every baseline on the four tasks, with the real engine
    6. the tables, printed and appended to the results store

Speed-ups come with 95 % intervals (a paired bootstrap over questions, ltd.eval.spread), LTD's
against each baseline too, the best static tree first: the stronger of the tuned tree and the best
constant tree of the replay LTD trained in (method `best-constant`, picked on the validation
answers). The traces are split three ways per task: training, validation (picks each stage's
checkpoint and the best constant tree) and test (scored once, after training). Evaluation runs
under the load guard (ltd.eval.machine_load). A tuned tree measured on another machine, model or
drafter is tuned again here first (`tune`, by default when its key differs), as make sweep-tree does.

Each of the profile, the traces, the learned baselines and the policies is stored with its key
(ltd.core.artefacts): reused only when made from the same model and drafter weights, machine and
settings, made again (with a note saying what changed) otherwise.
"""
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ltd.baselines.classifiers import load_classifier
from ltd.baselines.fit import KINDS, baselines_key, baselines_settings, fit_baselines
from ltd.baselines.tree_search import SearchJob, open_search, tune, tuned_config
from ltd.config.files import controller_file, task_config
from ltd.config.models import describe_models, load_model
from ltd.config.schema import TaskSchema
from ltd.controllers.ltd import LTD
from ltd.controllers.methods import build_controller, build_methods, method_config, read_methods
from ltd.core.artefacts import Artefact, note, read_or_drop
from ltd.core.atomic import write_file, write_json
from ltd.core.errors import LtdError
from ltd.core.fingerprints import file_digest
from ltd.core.provenance import Provenance
from ltd.core.results import ResultPaths
from ltd.core.tables import format_table
from ltd.core.tasks import load_questions
from ltd.core.tracking import LoggerSettings, Tracker
from ltd.decoding.controller import StaticTree
from ltd.decoding.engine import Engine
from ltd.decoding.tree import tree_capacity
from ltd.eval.headline import BEST_CONSTANT, LTD as LTD_METHOD, Headline, static_baselines
from ltd.eval.machine_load import LoadGuard
from ltd.eval.records import Records
from ltd.eval.runner import AUTOREGRESSIVE, SUMMARY_SHOWN, Method, check_lossless, check_methods, summarise
from ltd.eval.store import append_rows, stamped
from ltd.jobs.eval import EvalSettings, evaluate_task
from ltd.jobs.profile import ensure_cost_model
from ltd.jobs.sweeps import job_overrides
from ltd.rl.backends import OnlineBackend, ReplayBackend
from ltd.rl.ltd.stages import TrainedPolicies, schedule, test_replay, train_ltd
from ltd.rl.rewards import Reward
from ltd.rl.settings import LtdSettings
from ltd.rl.trace_table import TraceTable
from ltd.rl.validation import best_constant
from ltd.traces.cost_check import price_drift, priced_cycles
from ltd.traces.cost_model import CostModel, cost_model_file, cost_model_key
from ltd.traces.profiler import measure_cost_model
from ltd.traces.trace_sets import Recorded, record_tasks, trace_set

POLICIES = 2  # format: a change to the environments, observations or policies makes earlier ones stale


@dataclass
class Job:
    """A checked make train config, and what follows from it before anything loads."""

    cfg: DictConfig
    baselines: DictConfig  # a checked conf/train_baselines.yaml: how the learned baselines train
    settings: LtdSettings
    tasks: list[TaskSchema]
    name: str  # policies in <results>/policies/<model>-<drafter>-<name>
    logger: LoggerSettings
    who: Provenance  # the model, drafter and machine (threads too): what keys of what is derived hold
    guard: LoadGuard
    search: SearchJob | None = None  # a tuned tree to search here before evaluating (make sweep-tree's)


def prepare(cfg: DictConfig, baselines: DictConfig, who: Provenance) -> Job:
    """Every check that can fail before the models load: a misspelt method fails now, not after
    the training."""
    settings = ltd_settings(cfg)
    reward_of(cfg)  # an unknown kind or a bad rate fails here
    tasks = [task_config(name) for name in cfg.evaluate.tasks]
    name = cfg.name or (f"{cfg.reward.kind}-{cfg.component}{'-last' if settings.select == 'last' else ''}"
                        f"{f'-t{cfg.temperature:g}' if cfg.temperature else ''}")
    for method in cfg.evaluate.methods:
        controller_file(method, cfg.model.name, cfg.results)  # best-constant's too: it names the file it reads elsewhere
    check_methods([Method(method) for method in cfg.evaluate.methods] + [Method(LTD_METHOD)])
    logger = OmegaConf.to_object(cfg.logger)
    logger.validate()
    return Job(cfg, baselines, settings=settings, tasks=tasks, name=name, logger=logger, who=who,
               guard=LoadGuard(cfg.max_other_load, cfg.require_quiet))


def run(job: Job, run_dir: Path) -> None:
    """Every step of the pipeline; NotLossless, after the report, when a method's output was not
    the target's own."""
    cfg, spent = job.cfg, Spent()
    opened = open_search(job.search) if job.search else None
    target, drafter = load_model(cfg)
    spent("models")
    if job.search:
        print(f"tuned tree: none measured here with this model and drafter; searching one first ({job.search.trials} "
              f"trials of {len(job.search.questions)} questions, conf/sweep_tree.yaml; tune=false skips this)")
        tracker = Tracker(job.logger, run_dir / "tree-search", job_type="sweep", group=cfg.experiment,
                          name=f"sweep-tree-{cfg.model.name}-{job.search.tasks_name}-{run_dir.name}",
                          tags=[cfg.model.name, cfg.drafter.kind, job.search.mode], config={"study": job.search.name})
        tune(job.search, opened, Engine(target.decoder, target.stop_token_ids, drafter), target, tracker)
        spent("tree search")
    costs, cost_file = cost_model(cfg, target, drafter, sizes=job.settings.sizes, who=job.who, guard=job.guard)
    spent("profile")
    recorded = traces(cfg, target, drafter, job.who)
    spent("record")
    print(f"traces: {len(recorded.train)} answers to train on ({sum(t.positions for t in recorded.train)} "
          f"positions), {len(recorded.held_out)} for validation, {len(recorded.test)} for test, in "
          f"{', '.join(map(str, recorded.directories))}")
    learned_baselines(cfg, job.baselines, train=recorded.train, train_paths=recorded.train_paths, who=job.who)
    spent("baselines")
    policies = Artefact(ResultPaths(cfg.results).policies(cfg.model.name, cfg.drafter.kind, job.name),
                        policies_key(cfg, job.settings, who=job.who, recorded=recorded,
                                     cost_model=cost_file),
                        "ltd policies", directory=True)
    policies.open(owned=("*.pt", "*.json", "*.yaml", "checkpoints"))
    tracker = Tracker(job.logger, run_dir, job_type="train", name=f"train-{cfg.model.name}-{job.name}-{run_dir.name}",
                      group=cfg.experiment, tags=[cfg.model.name, cfg.drafter.kind, cfg.reward.kind, cfg.component],
                      config=OmegaConf.to_container(cfg, resolve=True))
    try:
        trained = train_policies(job,
                                 backend(cfg, job.settings, train=recorded.train, costs=costs, target=target,
                                         drafter=drafter),
                                 held_out=recorded.held_out, costs=costs, directory=policies.path, tracker=tracker)
        spent("ppo")
        print_stages(trained, policies.path, len(recorded.held_out), job.settings.partner)
        if recorded.test:
            print_test(test_replay(trained, recorded.test, costs), trained, policies.path)
        constant = best_constant_tree(trained, costs.top_k, policies.path)
        lineage(tracker, cost_file.path, recorded.directories, policies.path)
        ltd = LTD(depth_policy=str(trained.depth) if trained.depth else None,
                  size_policy=str(trained.size) if trained.size else None,
                  depth=trained.partner[0], verify=trained.partner[1])
        # best-constant: this run's own (its policies' replay), not the file of make train's default policies
        methods = ([Method(BEST_CONSTANT, constant) if name == BEST_CONSTANT else build_methods([name], cfg)[0]
                    for name in cfg.evaluate.methods] + resps_method(job) + [Method(LTD_METHOD, ltd)])
        read_methods(tracker, [name for name in cfg.evaluate.methods if name != BEST_CONSTANT], cfg)
        per_task = evaluate(job, Engine(target.decoder, target.stop_token_ids, drafter), target, methods, run_dir)
        spent("evaluation")
        report(job, per_task, [m.name for m in methods], run_dir, tracker)
        print_cost_check(job, costs, cost_file.path, run_dir)
        print(f"time spent: {spent}")
    finally:
        tracker.finish()
    check_lossless(per_task)


def lineage(tracker: Tracker, cost_model: Path, trace_directories: list[Path], policies: Path) -> None:
    """W&B's lineage of what this run made: the cost model and the traces (checksummed in place,
    not copied), and the policies, made from both."""
    made = [tracker.made(cost_model, inputs=[]),
            *(tracker.made(d, inputs=[], reference_only=True) for d in trace_directories)]
    tracker.made(policies, inputs=[ref for ref in made if ref is not None])


def ltd_settings(cfg) -> LtdSettings:
    s = OmegaConf.to_object(cfg.ltd)
    tuples = lambda ppo: replace(ppo, critic_hidden=tuple(ppo.critic_hidden))
    s = replace(s, sizes=tuple(s.sizes), size_hidden=tuple(s.size_hidden), depth_hidden=tuple(s.depth_hidden),
                size_ppo=tuples(s.size_ppo), depth_ppo=tuples(s.depth_ppo))
    s.validate()
    schedule(s, cfg.component)  # an unknown component is one line now, before any model loads
    if cfg.env.backend not in ("replay", "online"):
        raise LtdError(f"unknown env backend {cfg.env.backend!r}; choose from: replay, online")
    if cfg.temperature > 0 and cfg.env.backend == "replay":
        # A trace holds the target's greedy answer: what a sampled cycle accepts is not in it.
        raise LtdError("the replay environments replay greedy traces: temperature > 0 trains online (env=online)")
    r = cfg.record
    if not (0 < r.validation and 0 <= r.test and r.validation + r.test < r.questions):
        raise LtdError(f"record.validation (>= 1) and record.test (>= 0) must leave questions to train on: "
                       f"{r.validation} + {r.test} of record.questions {r.questions}")
    return s


def cost_model(cfg, target, drafter, sizes: tuple[int, ...], who: Provenance,
               guard: LoadGuard):
    """(the cost model, its file): the saved profile of this model, drafter and machine when it
    covers the sizes and depths to be priced, else a new one."""

    file = cost_model_file(cfg.results, cost_model_key(who.model, who.drafter, who.machine, cfg.record.top_k))
    covers = lambda costs: (costs.verify_sizes[0] <= min(sizes) and costs.verify_sizes[-1] >= max(sizes)
                            and costs.max_depth >= cfg.record.max_depth)
    p = cfg.profile

    def measure(saved: CostModel | None) -> CostModel:  # the sizes priced, and any the saved one had
        measured = set(p.verify_sizes) | {min(sizes), max(sizes)} | set(saved.verify_sizes if saved else ())
        with tqdm(total=len(p.contexts) * (p.repeats + 1), desc="profile", unit="round") as bar:
            return measure_cost_model(target, drafter, drafter_name=cfg.drafter.kind, threads=who.machine["threads"],
                                      contexts=list(p.contexts), verify_sizes=sorted(measured),
                                      top_k=cfg.record.top_k, max_depth=cfg.record.max_depth, repeats=p.repeats,
                                      progress=bar.update)

    costs, verdict = ensure_cost_model(file, measure, reuse=covers, guard=guard)
    if verdict is None:
        print(f"cost model: {file.path} (measured before on this machine; delete it to measure again)")
    else:
        print(f"cost model: measured, {file.path}; {verdict}")
    return costs, file


def traces(cfg, target, drafter, who: Provenance) -> Recorded:
    """The traces of make train's questions, recorded where missing."""
    r = cfg.record
    return record_tasks(target, drafter, results=cfg.results, model=who.model, drafter_id=who.drafter,
                        tasks=list(map(task_config, r.tasks)), questions=r.questions, validation=r.validation,
                        max_new_tokens=r.max_new_tokens, top_k=r.top_k, max_depth=r.max_depth, test=r.test)


def learned_baselines(cfg, settings, train: list, train_paths: list[Path], who: Provenance) -> None:
    """Train the learned baselines among the evaluated methods whose weights are not there yet (or
    were made from other traces or settings), on the training traces, with `settings` (a checked
    conf/train_baselines.yaml)."""

    key = baselines_key(who.model, who.drafter, trace_set(train_paths), baselines_settings(settings))
    output = Artefact(ResultPaths(cfg.results).baselines(cfg.model.name, cfg.drafter.kind), key,
                      "learned baselines", directory=True)
    kinds = []
    for method in cfg.evaluate.methods:
        if method == BEST_CONSTANT:  # made after training
            continue
        config = method_config(method, cfg)
        if config["kind"] in KINDS:
            weights = Path(config.get("weights", ""))
            if weights.parent != output.path:
                raise LtdError(f"{method} reads its weights from {weights}, not from {output.path}/, where make train "
                               f"writes them: point its config there, or train it with make baselines")
            kinds.append(config["kind"])
    if not kinds:
        return
    output.open(owned=("*.pt",))
    missing = []
    for kind in kinds:  # not there, or damaged (then deleted): trained now
        weights = output.path / f"{kind}.pt"
        if read_or_drop(weights, lambda path: load_classifier(path, kind), "training it again") is None:
            missing.append(kind)
    if missing:
        print(f"learned baselines: training {', '.join(missing)} on the training traces")
        print(fit_baselines(settings, train, output.path, tuple(missing)))


def policies_key(cfg, settings: LtdSettings, who: Provenance, recorded: Recorded,
                 cost_model: Artefact) -> dict:
    """What trained policies depend on: the traces they replay, the measured cost model that prices
    them, and every setting of their training."""


    return {"artefact": "ltd policies", "format": POLICIES, "model": who.model, "drafter": who.drafter,
            "traces": trace_set(recorded.train_paths), "held out": trace_set(recorded.held_paths),
            "cost model": file_digest(cost_model.path), "settings": asdict(settings), "reward": reward_of(cfg).key(),
            "component": cfg.component, "env": OmegaConf.to_container(cfg.env),
            # greedy policies made before training could sample keep their key
            **({"temperature": cfg.temperature} if cfg.temperature else {})}


def reward_of(cfg) -> Reward:
    return Reward(**OmegaConf.to_container(cfg.reward))


def priced_reward(cfg, settings: LtdSettings, train: list, costs: CostModel) -> Reward:
    """conf/reward; tokens_saved without a rate gets the best constant tree's speed-up in the replay of
    the training answers (Dinkelbach's first step from that tree)."""
    reward = reward_of(cfg)
    if not reward.prices_steps or reward.rate is not None:
        return reward
    constant = best_constant(TraceTable(train, costs), settings.sizes)
    print(f"reward tokens_saved: rate {constant['speedup']:.3f}, the best constant tree's replayed speed-up on the "
          f"training answers (depth {constant['depth']:.0f}, V {constant['verify']:.0f})")
    return replace(reward, rate=constant["speedup"])


def backend(cfg, settings: LtdSettings, train: list, costs, target, drafter):
    """The environments PPO runs in (conf/env)."""
    reward = priced_reward(cfg, settings, train, costs)
    if cfg.env.backend == "replay":
        return ReplayBackend(train, costs, sizes=settings.sizes, reward=reward, size_envs=settings.size_envs,
                             depth_envs=settings.depth_envs)
    task = task_config(cfg.env.task)
    questions = load_questions(task.path, cfg.env.questions, task.per_category)
    prompts = [target.encode_chat([{"role": "user", "content": q.turns[0]}]) for q in questions]
    engine = Engine(target.decoder, target.stop_token_ids, drafter)
    return OnlineBackend(engine, prompts, sizes=settings.sizes, reward=reward, top_k=cfg.record.top_k,
                         max_depth=cfg.record.max_depth, max_new_tokens=cfg.env.max_new_tokens,
                         temperature=cfg.temperature, costs=costs)


def train_policies(job: Job, environments, held_out: list, costs: CostModel, directory: Path,
                   tracker: Tracker) -> TrainedPolicies:
    """PPO on every stage of the schedule, each stage's metrics logged under its name against its own
    batches (`<stage>/batch`), with a progress bar per stage."""
    stages, bars = set(), {}

    def log(stage: str, metrics: dict) -> None:
        if stage not in stages:
            stages.add(stage)
            tracker.step_axis(stage, "batch")
        tracker.log({f"{stage}/{k}": v for k, v in metrics.items()})

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            for bar in bars.values():
                bar.close()
            bars[stage] = tqdm(total=total, desc=f"ppo {stage}", unit="step")
        bars[stage].n = done
        bars[stage].refresh()

    try:
        return train_ltd(environments, held_out, costs=costs, settings=job.settings, component=job.cfg.component,
                         directory=directory, log=log, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()


def print_stages(trained: TrainedPolicies, directory: Path, held_out: int, partner: str) -> None:
    print(f"\npolicies in {directory} (replay on the {held_out} held-out answers, by stage; start and trained: "
          f"the stage's own validation of the policy it started from and of the one it kept):")
    print(format_table(trained.stages, ["stage", "start", "trained", "speedup", "tau", "depth", "depth_sd", "verify",
                                        "verify_sd"]))
    for stage in trained.stalled():
        print(f"note: {stage} never beat the policy it started from; it keeps that one")
    c, last = trained.constant, trained.stages[-1]["speedup"]
    print(f"best constant tree in the same replay: depth {c['depth']:.0f}, V {c['verify']:.0f}, speed-up "
          f"{c['speedup']:.3f}; ltd: {last:.3f} ({last / c['speedup']:.3f}x of it)")
    fixed = "" if partner == "fixed" else "; ltd.partner=fixed takes ltd.fixed_depth and ltd.depth_verify instead"
    print(f"a policy training alone trained beside depth {trained.partner[0]}, V {trained.partner[1]} "
          f"(ltd.partner={partner}{fixed})")


def print_test(scores: dict, trained: TrainedPolicies, directory: Path) -> None:
    """The test replay (ltd.rl.ltd.stages.test_replay), printed and kept as test.json beside the policies."""
    write_json(directory / "test.json", scores)
    ltd, constant, c = scores["ltd"]["speedup"], scores["constant"]["speedup"], trained.constant
    print(f"test replay on {scores['answers']} answers held out from training and validation: ltd {ltd:.3f}, "
          f"the best constant tree of validation (depth {c['depth']:.0f}, V {c['verify']:.0f}) {constant:.3f}; "
          f"ltd / constant {ltd / constant:.3f}")


def best_constant_tree(trained: TrainedPolicies, top_k: int, directory: Path) -> StaticTree:
    """The best constant tree of the replay (picked on validation) as a static tree of the traces'
    top-k; written as best-constant.yaml beside the policies, which conf/controller/best-constant.yaml
    reads (so make run and make eval decode it too)."""
    c = trained.constant
    depth = round(c["depth"])  # a V past what the tree holds verifies the whole tree, in replay as here
    tree = StaticTree(depth=depth, top_k=top_k, verify=min(round(c["verify"]), tree_capacity(depth, top_k)))
    note_line = f"the best constant tree of the replay in {directory}, picked on the validation answers"
    write_file(directory / "best-constant.yaml", lambda tmp: tmp.write_text(tuned_config(tree, note_line)))
    return tree


def resps_method(job: Job) -> list[Method]:
    """Re-SpS beside LTD, its shapes held each of `evaluate.resps` cycles (named resps at
    conf/controller/resps.yaml's persistence, resps-p<N> otherwise), where make resps trained it
    into these results."""
    cfg = job.cfg
    policy = ResultPaths(cfg.results).resps(cfg.model.name, cfg.drafter.kind) / "policy.pt"
    if not cfg.evaluate.resps:
        return []
    if not policy.is_file():
        note(f"resps left out: no policy at {policy} (make resps trains one)")
        return []
    settings = {**method_config("resps", cfg), "policy": str(policy)}
    return [Method("resps" if n == settings["persistence"] else f"resps-p{n}",
                   build_controller({**settings, "persistence": n}, job.who))
            for n in cfg.evaluate.resps]


def evaluate(job: Job, engine: Engine, target, methods: list[Method], run_dir: Path) -> dict[str, pd.DataFrame]:
    """Every method on each task's questions with the real engine, interleaved, the order of the
    methods rotating across the tasks; each task's question rows."""
    cfg, e = job.cfg, job.cfg.evaluate
    settings = EvalSettings(e.max_new_tokens, cfg.temperature, e.seed, e.warmup_tokens, guard=job.guard)
    per_task, first = {}, 0
    for task in job.tasks:
        questions = load_questions(task.path, e.questions, task.per_category)
        records = Records(run_dir / task.name, [m.name for m in methods])
        run = dict(model=cfg.model.name, drafter=cfg.drafter.kind, task=task.name, threads=job.who.machine["threads"],
                   max_new_tokens=e.max_new_tokens, temperature=cfg.temperature)
        with tqdm(total=len(questions), desc=f"eval {task.name}", unit="question") as bar:
            summary = evaluate_task(engine, target, methods=methods, questions=questions, settings=settings,
                                    records=records, run=run, on_question=lambda *_: bar.update(), first=first)
        first += len(questions)
        print(f"\n{task.name}: {len(questions)} questions, up to {e.max_new_tokens} new tokens per turn")
        print(format_table(summary["methods"], SUMMARY_SHOWN))
        per_task[task.name] = records.frames()[1]
    return per_task


def report(job: Job, per_task: dict[str, pd.DataFrame], method_order: list[str], run_dir: Path,
           tracker: Tracker) -> None:
    """The table over tasks with its intervals and LTD's ratios (printed, summarised in W&B, written
    as train.md and train.json in the run directory), and every task's rows appended to the store."""
    cfg, machine = job.cfg, job.who.describe_machine()
    headline = Headline.of(per_task, method_order, static_baselines(method_order))
    header = (f"{describe_models(cfg)}, reward {cfg.reward.kind}, component {cfg.component}: speed-up over "
              f"{AUTOREGRESSIVE} (mean per-question throughput ratio), {cfg.evaluate.questions} questions per task, "
              f"up to {cfg.evaluate.max_new_tokens} new tokens per turn, {machine}")
    verdict = job.guard.verdict(headline.load)
    print(f"\n{header}\n{headline.text()}\n{verdict}")
    headline.write(header, verdict, [run_dir / "train"])
    ratio = next((r for r in headline.ratios if r["over"] == headline.best_static), {})
    stored = []
    for task, rows in per_task.items():
        for row in stamped(summarise(rows, method_order), run_dir, machine=machine, experiment=cfg.experiment,
                           overrides=" ".join(job_overrides()), model=cfg.model.name, drafter=cfg.drafter.kind,
                           reward=cfg.reward.kind, component=cfg.component, policies=job.name, task=task,
                           max_new_tokens=cfg.evaluate.max_new_tokens, temperature=cfg.temperature):
            if row["method"] == LTD_METHOD and ratio:  # LTD over the best static tree, the mean over tasks
                row.update({"best static": ratio["over"], "ratio to best static": ratio["ratio"],
                            "ratio to best static low": ratio["ratio low"],
                            "ratio to best static high": ratio["ratio high"]})
            stored.append(row)
    store = ResultPaths(cfg.results).store
    append_rows(store, stored)
    tracker.summarise({f"{row['method']}/speedup": row["mean speed-up"] for row in headline.rows})  # mean over tasks
    print(f"appended {len(stored)} rows to {store}; records and train.md in {run_dir}")


def print_cost_check(job: Job, costs: CostModel, profile: Path, run_dir: Path) -> None:
    """The cost model's prices of the evaluated cycles next to what they took (traces/cost_check)."""
    cycles = pd.concat([pd.read_parquet(run_dir / task.name / "cycles.parquet") for task in job.tasks])
    print(f"\ncost model against the engine (mean per drafted cycle over the tasks, a turn's first cycle left out: its "
          f"drafting is the drafter's prefill; PPO trained on these prices, "
          f"which are for trees of top-k {costs.top_k}: wider trees draft slower than priced):")
    rows = priced_cycles(cycles, costs)
    print(format_table(rows, ["method", "cycles", "draft ms", "draft priced", "verify ms", "verify priced",
                              "measured / priced"]))
    drift = price_drift(rows, replayed=(LTD_METHOD, BEST_CONSTANT))
    if drift:
        when = datetime.fromtimestamp(profile.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        note(f"{drift}: the profile {profile} (measured {when}) no longer prices this machine's cycles; delete "
             f"it and make train profiles again, and PPO retrains on the new prices")


class Spent:
    """Wall-clock time per phase of the run (what `make train` spends where; a phase reused from
    disk takes seconds)."""

    def __init__(self):
        self.phases: dict[str, float] = {}
        self.mark = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = now - self.mark
        self.mark = now

    def __str__(self) -> str:
        minutes = lambda s: f"{s / 60:.1f} min"
        total = sum(self.phases.values())
        return ", ".join(f"{phase} {minutes(s)}" for phase, s in self.phases.items()) + f"; {minutes(total)} in all"
