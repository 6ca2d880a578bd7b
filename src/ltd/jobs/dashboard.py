"""The `ltd` W&B project's dashboards as code: a workspace (a saved view) and a report, one part
for each job that logs to W&B, with the keys exactly as the jobs log them (make dashboard writes
and publishes them; docs/dashboard.md).

Where the keys come from:
- make train, make ablation (job type `train`): jobs.train.train_policies logs PPO's batches
  (rl.ppo.batch_metrics, plus what PPOTrainer.train adds) under `<stage>/`, each stage against its own
  `<stage>/batch`, the stage names of
  rl.ltd.stages.schedule; jobs.train.report summarises `<method>/speedup` (the mean over tasks).
- make eval and sweeps (`eval`): jobs.eval logs `<method>/throughput` per question and
  summarises `<method>/<summary column>` in snake case (summary_metrics: `<method>/speedup`).
- make drafter-rl (`drafter-rl`): jobs.ppow logs each PPOW step under `<variant>/` (the rows of
  drafter.ppow.tune) and summarises `<head>/speedup` and `<head>/tau` (means over tasks).
- make resps (`resps`): jobs.resps logs PPO's batches without a prefix (one policy, one run)
  and summarises `held_out/speedup_persistence_<N>`.
- make sweep-tree (`sweep`): baselines.tree_search logs each trial's `speedup`, `tau` and shape, and
  summarises `best/...`.
make drafter (the supervised head) logs nothing to W&B: its numbers are in its metrics.json.
"""
import contextlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ltd.config.files import group_options
from ltd.core.atomic import write_json
from ltd.core.errors import LtdError, reason
from ltd.eval.runner import AUTOREGRESSIVE
from ltd.jobs.ppow import SUPERVISED
from ltd.jobs.resps import PERSISTENCE_ABLATION

try:  # the `analysis` extra, which make setup installs
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
except ImportError:
    wr = ws = None

ENTITY_PLACEHOLDER = "<entity>"  # in specs written without an entity: publishing names the real one
# rl.ltd.stages.schedule's stage names: stage1-size, stage1-depth, then round<r>-size|depth (as many
# rounds as ltd.rounds says, hence a pattern rather than a list).
STAGE = r"(stage1|round\d+)-(size|depth)"
# PPOTrainer._update's means of ClipPPOLoss's terms, which rl.ppo.batch_metrics passes on: the
# clipped objective, the critic's loss, the entropy bonus, and the policy's entropy itself.
PPO_LOSSES = {"loss_objective": "PPO objective", "loss_critic": "critic loss", "loss_entropy": "entropy bonus",
              "entropy": "policy entropy"}


@dataclass
class Part:
    """A workspace section, and in the report a heading, a paragraph and a panel grid over the runs
    of one job type (Tracker's job_type)."""
    name: str
    job_type: str
    note: str
    panels: list


def methods() -> list[str]:
    """The names evaluations give their methods: conf/controller's, `tuned` (every tuned-<model>,
    make sweep-tree's), and resps-p<N> for the persistence ablation make train evaluates
    (jobs.train.resps_method); autoregressive, the baseline of every speed-up (1 by definition), first."""
    names = {*group_options("controller"), "tuned"}
    names |= {f"resps-p{n}" for n in PERSISTENCE_ABLATION}
    return [AUTOREGRESSIVE] + sorted(names - {AUTOREGRESSIVE})


def ppow_variants() -> list[str]:
    """PPOW's variants: every conf/ppow option (config.files.ppow_variants names them so)."""
    return group_options("ppow")


def stage_regex(key: str) -> str:
    """A PPO key of every stage of make train: one line per stage, each against its own batches
    (`<stage>/batch`, Tracker.step_axis)."""
    return f"^{STAGE}/{re.escape(key)}$"


def prefixed_regex(prefixes: list[str], key: str) -> str:
    """`key` under each of `prefixes` (methods, variants): one line each."""
    return f"^({'|'.join(map(re.escape, prefixes))})/{re.escape(key)}$"


def ppo_part() -> Part:
    """make train's PPO, stage by stage, and the speed-ups its evaluation found."""
    curve = lambda title, key: wr.LinePlot(title=title, metric_regex=stage_regex(key))
    # The chosen depths and sizes are histograms (Tracker.log): W&B draws them as a heatmap over steps.
    return Part("LTD policies: PPO (make train, make ablation)", "train",
                "PPO's batches (in replay by default), stage after stage (stage1-size, stage1-depth, then the "
                "co-adaptive rounds): rewards, tau, the depths and V chosen, the losses and the held-out replay "
                "speed-up that picks each stage's checkpoint; then the evaluation's mean speed-up per method.", [
                    curve("reward per step", "reward_per_step"), curve("reward per cycle", "reward_per_cycle"),
                    curve("tau (accepted + 1 per cycle)", "tau"), curve("depth chosen", "depth_chosen"),
                    curve("V chosen", "verify_chosen"), curve("validation: held-out replay speed-up", "validation"),
                    *(curve(title, key) for key, title in PPO_LOSSES.items()),
                    wr.BarPlot(title="speed-up over autoregressive, mean over tasks",
                               metrics=[f"{m}/speedup" for m in methods()[1:]]),
                ])


def eval_part() -> Part:
    """make eval (and the jobs of make sweep): every method's speed-up and tau per task."""
    # Runs of the same task (several models or repeats) are averaged: filter the run set to compare one model.
    by_task = lambda title, column: wr.BarPlot(title=title, metrics=[f"{m}/{column}" for m in methods()[1:]],
                                               groupby=wr.Config("task.name"), groupby_aggfunc="mean")
    return Part("Evaluation (make eval, make sweep)", "eval",
                "Each method against autoregressive decoding on the same questions, interleaved: speed-up (mean "
                "per-question throughput ratio) and tau per task, and every question's tokens/s.", [
                    by_task("speed-up by task", "speedup"), by_task("tau by task", "tau"),
                    wr.LinePlot(title="tokens/s per question", metric_regex=prefixed_regex(methods(), "throughput")),
                ])


def ppow_part() -> Part:
    """make drafter-rl: each variant's PPOW curves, then every head's speed-up and tau."""
    variants, heads = ppow_variants(), [SUPERVISED] + ppow_variants()
    # One run holds every variant, one after another on W&B's step axis (each also logs its own `step`).
    curve = lambda title, key: wr.LinePlot(title=title, metric_regex=prefixed_regex(variants, key))
    return Part("Drafter RL: PPOW (make drafter-rl)", "drafter-rl",
                "PPOW's window-level RL on the EAGLE-3 head, per variant (the cst control logs no curves): mean "
                "window reward, accepted length of the drafted windows, KL from the target; then each head's "
                "speed-up and tau against autoregressive decoding, mean over the tasks.", [
                    curve("window reward", "reward"), curve("accepted length", "accepted"),
                    curve("KL(target || head)", "kl"),
                    wr.BarPlot(title="speed-up per head", metrics=[f"{h}/speedup" for h in heads]),
                    wr.BarPlot(title="tau per head", metrics=[f"{h}/tau" for h in heads]),
                ])


def resps_part() -> Part:
    """make resps: Re-SpS's PPO (one policy: no prefix) and its persistence ablation."""
    return Part("Re-SpS (make resps)", "resps",
                "PPO on windows of N cycles (resps.persistence), each rewarded with its mean tokens/s: window "
                "reward, tau, held-out replay speed-up; then (in replay) the policy's shapes held "
                f"{', '.join(map(str, PERSISTENCE_ABLATION))} cycles.", [
                    wr.LinePlot(title="window reward (tokens/s)", y=["reward_per_step"]),
                    wr.LinePlot(title="tau", y=["tau"]),
                    wr.LinePlot(title="held-out replay speed-up", y=["validation"]),
                    wr.BarPlot(title="held-out speed-up, shapes held N cycles",
                               metrics=[f"held_out/speedup_persistence_{n}" for n in PERSISTENCE_ABLATION]),
                ])


def tree_part() -> Part:
    """make sweep-tree: each trial's speed-up and the best tree found."""
    return Part("Static tree search (make sweep-tree)", "sweep",
                "Each trial's tree shape measured on the task's questions (step = trial), and the best found.", [
                    wr.LinePlot(title="speed-up per trial", y=["speedup"]),
                    wr.BarPlot(title="best speed-up", metrics=["best/speedup"]),
                ])


def parts() -> list[Part]:
    """Every part, in the order of the workspace's sections and the report's headings."""
    if wr is None:
        raise LtdError("the dashboard needs wandb-workspaces: make setup installs it (pip install -e '.[analysis]')")
    return [ppo_part(), eval_part(), ppow_part(), resps_part(), tree_part()]


def workspace(entity: str, project: str):
    """The saved view: a section per part, open, on W&B's step axis; no auto-generated panels."""
    return ws.Workspace(entity=entity, project=project, name="ltd: what the jobs log",
                        sections=[ws.Section(name=p.name, panels=p.panels, is_open=True) for p in parts()])


def report(entity: str, project: str):
    """The report: each part's panels over the runs of its job type only (the workspace shows every run)."""
    blocks = [wr.TableOfContents()]
    for p in parts():
        # A run set naming no project reads the report's own, and builds without a network call.
        runs = wr.Runset(name=f"{p.job_type} runs", filters=f"JobType = '{p.job_type}'")
        blocks += [wr.H2(p.name), wr.P(p.note), wr.PanelGrid(runsets=[runs], panels=p.panels)]
    return wr.Report(entity=entity, project=project, title="ltd: learned speculative decoding",
                     description="What ltd's jobs log to W&B, job by job (made by make dashboard).", blocks=blocks)


def spec(view) -> dict:
    """A workspace's or report's spec as W&B stores it (built offline)."""
    return json.loads(view._to_model().model_dump_json(by_alias=True, exclude_none=True))


def write_specs(views: dict, out: Path) -> list[Path]:
    """Each view's spec as <out>/<name>.json, written whole."""
    paths = [Path(out) / f"{name}.json" for name in views]
    for path, view in zip(paths, views.values()):
        write_json(path, spec(view))
    return paths


def can_publish() -> bool:
    """W&B online and an API key at hand, decided without a network call: WANDB_MODE is not offline
    or disabled, and WANDB_API_KEY or what `wandb login` saved holds a key."""
    if os.environ.get("WANDB_MODE", "online") in ("offline", "dryrun", "disabled"):
        return False
    if os.environ.get("WANDB_API_KEY"):
        return True
    import wandb

    with contextlib.redirect_stderr(io.StringIO()):  # wandb.api warns that it is deprecated, every time
        return bool(wandb.api.api_key)


def publish(views: dict) -> dict:
    """Save each view to W&B (a new saved view and a new report each time); their URLs."""
    try:
        return {name: view.save().url for name, view in views.items()}
    except Exception as error:  # network, permissions, unknown entity: W&B's many error types say the same
        raise LtdError(f"publishing to W&B failed: {reason(error)}") from None
