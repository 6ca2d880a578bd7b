"""LTD's training schedule (the paper): stage 1 trains the size policy on random depths and the
depth policy with a fixed V; then co-adaptive rounds alternate (size, depth, size, ...), each
training one policy with the other frozen as its partner in the environment. Every stage keeps
the checkpoint that validates best (replay speed-up on held-out answers).

The component ablations drop parts: `size_only` trains the size policy at a fixed depth, `depth_only`
the depth policy at a fixed V, `no_coadapt` stops after stage 1.

Each stage reports the held-out replay speed-up of the policy it started from (stage 1: the
random initialisation) next to the one it kept, and the held-out replay is also run for every
constant tree (depth, V): the bar a state-dependent policy has to clear.

A stage that finished is kept on disk (its policy, and its scores and PPO curve in <stage>.json) and skipped when
the run is started again; a stage that was
interrupted resumes from its PPO checkpoint; a damaged stage file is trained again. (Whether the
directory's policies are of these traces, costs and settings at all is its key's business: see
make train.)
"""
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ltd.core.artefacts import read_or_drop
from ltd.core.atomic import write_json
from ltd.core.errors import LtdError
from ltd.rl.backends import OnlineBackend, ReplayBackend
from ltd.rl.policies import Policy, PolicySpec
from ltd.rl.ppo import PPOTrainer
from ltd.rl.settings import COMPONENTS, LtdSettings, PPOSettings, check_depth_rows
from ltd.rl.trace_table import TraceTable
from ltd.rl.validation import best_constant, replay_speedup
from ltd.traces.cost_model import CostModel
from ltd.traces.trace import Trace


@dataclass
class Stage:
    name: str
    role: str  # the policy trained
    settings: PPOSettings


def schedule(s: LtdSettings, component: str) -> list[Stage]:
    if component not in COMPONENTS:
        raise LtdError(f"unknown component {component!r}; choose from: {', '.join(COMPONENTS)}")
    size, depth = Stage("stage1-size", "size", s.size_ppo), Stage("stage1-depth", "depth", s.depth_ppo)
    if component == "size_only":
        return [size]
    if component == "depth_only":
        return [depth]
    stages = [size, depth]
    if component == "full":
        for r in range(1, s.rounds + 1):
            ppo = s.size_ppo if r % 2 else s.depth_ppo
            frames = max(ppo.rollout, round(ppo.frames * s.round_scale / ppo.rollout) * ppo.rollout)
            stages.append(Stage(f"round{r}-{'size' if r % 2 else 'depth'}", "size" if r % 2 else "depth",
                                replace(ppo, frames=frames, seed=ppo.seed + r)))
    return stages


@dataclass
class TrainedPolicies:
    directory: Path
    depth: Path | None
    size: Path | None
    partner: tuple[int, int]  # (depth, V) beside a policy training alone, and for one left out
    stages: list[dict] = field(default_factory=list)
    constant: dict = field(default_factory=dict)  # the best constant tree in the same replay

    def stalled(self) -> list[str]:
        """The stages whose training never beat the policy they started from."""
        return [s["stage"] for s in self.stages if s.get("best_batch") == 0]


def train_ltd(backend: ReplayBackend | OnlineBackend, validation: list[Trace], costs: CostModel, settings: LtdSettings,
              component: str, directory: Path, log: Callable[[str, dict], None] = lambda stage, metrics: None,
              progress: Callable[[str, int, int], None] = lambda stage, done, total: None) -> TrainedPolicies:
    """Run (or resume) every stage of the schedule in `backend`'s environments; policies land in
    `directory`. Checkpoints are chosen by replay on the `validation` traces."""
    stages = schedule(settings, component)
    directory = Path(directory)
    held_out = TraceTable(validation, costs)
    top_k, max_depth = held_out.top_k, held_out.max_depth
    settings.validate()
    if isinstance(backend, ReplayBackend):
        check_depth_rows(backend.depth_envs, settings.depth_ppo.rollout, max_depth)
    constant = best_constant(held_out, settings.sizes)
    fixed_depth, depth_verify = partner_tree(settings, constant, max_depth)
    current: dict[str, Policy | None] = dict(size=None, depth=None)
    summary = []
    for stage in stages:
        final = directory / f"{stage.name}.pt"
        depth_partner = current["depth"] if current["depth"] is not None else fixed_depth
        verify_partner = current["size"] if current["size"] is not None else depth_verify
        seed = stage.settings.seed
        policy = read_or_drop(final, lambda path: Policy.load(path, stage.role), "training the stage again")
        if policy is None:
            if stage.role == "size":
                spec = PolicySpec("size", top_k, max_depth, settings.size_hidden, tuple(settings.sizes))
                # Stage 1 draws random depths, unless no depth policy will ever decide them.
                train_depth = None if stage.name == "stage1-size" and component != "size_only" else depth_partner
                make_env = lambda: backend.size_env(train_depth, seed)
                validate = lambda p: replay_speedup(held_out, depth_partner, p)["speedup"]
            else:
                spec = PolicySpec("depth", top_k, max_depth, settings.depth_hidden)
                make_env = lambda: backend.depth_env(verify_partner, seed)
                validate = lambda p: replay_speedup(held_out, p, verify_partner)["speedup"]
            trainer = PPOTrainer(make_env, spec, stage.settings, directory / "checkpoints" / f"{stage.name}.pt",
                                 initial=current[stage.role])
            policy = trainer.train(validate, lambda m, name=stage.name: log(name, m),
                                   lambda done, total, name=stage.name: progress(name, done, total),
                                   keep_best=settings.select == "validation")
            write_json(final.with_suffix(".json"), dict(start=trainer.start_score, trained=trainer.kept_score,
                                                        best_batch=trainer.kept_batch,
                                                        batches=trainer.batch, curve=trainer.curve))
            policy.save(final)
        current[stage.role] = policy
        depth = current["depth"] if current["depth"] is not None else fixed_depth
        verify = current["size"] if current["size"] is not None else depth_verify
        scores = read_or_drop(final.with_suffix(".json"), lambda path: json.loads(path.read_text()),
                              "leaving its scores out") or {}
        summary.append(dict(stage=stage.name, start=scores.get("start"), trained=scores.get("trained"),
                            best_batch=scores.get("best_batch"), **replay_speedup(held_out, depth, verify)))
    paths = {}
    for role in ("depth", "size"):
        if current[role] is not None:
            paths[role] = directory / f"{role}.pt"
            current[role].save(paths[role])
    write_json(directory / "training.json", dict(stages=summary, constant=constant, partner=[fixed_depth, depth_verify],
                                                 reward=backend.reward.key(), component=component,
                                                 backend=type(backend).__name__, settings=asdict(settings)))
    return TrainedPolicies(directory, paths.get("depth"), paths.get("size"), partner=(fixed_depth, depth_verify),
                           stages=summary, constant=constant)


def partner_tree(settings: LtdSettings, constant: dict, max_depth: int) -> tuple[int, int]:
    """(depth, V) of the tree a policy training alone works beside, and that stands in for a policy
    its component leaves out: the settings' own, or the replay's best constant tree (`constant`)."""
    if settings.partner == "best-constant":
        return round(constant["depth"]), round(constant["verify"])
    if not 1 <= settings.fixed_depth <= max_depth:
        raise LtdError(f"fixed_depth {settings.fixed_depth} is outside the traces' 1..{max_depth}")
    return settings.fixed_depth, settings.depth_verify


def test_replay(trained: TrainedPolicies, test: list[Trace], costs: CostModel) -> dict:
    """LTD's policies and the best constant tree, both as validation picked them, replayed on the
    test answers, which picked nothing: a test score, where the stages' scores are validation's."""
    table = TraceTable(test, costs)
    depth = Policy.load(trained.depth, "depth") if trained.depth else trained.partner[0]
    verify = Policy.load(trained.size, "size") if trained.size else trained.partner[1]
    c = trained.constant
    return {"answers": len(test), "ltd": replay_speedup(table, depth, verify),
            "constant": replay_speedup(table, round(c["depth"]), round(c["verify"]))}
