"""PPO for one policy in one environment, TorchRL's pieces in plain sight: a Collector gathers
`rollout` frames with the stochastic actor, GAE computes advantages with the critic, and
ClipPPOLoss is minimised for `epochs` passes over minibatches. The learning rate warms up
linearly over the first `warmup` fraction of updates, then decays linearly to zero (the paper).

The starting policy is validated before the first batch, so a stage can say what its training
gained (`start_score`, `kept_score`, `kept_batch`: 0 when nothing trained beat the start).
Checkpoints hold everything a run needs to go on (networks, optimizer, schedule, batch count,
validations so far); each batch seeds the environment and the sampler from (seed, batch), so
a resumed run continues exactly as an uninterrupted one would have.
"""
from collections.abc import Callable
from pathlib import Path

import torch
from tensordict.nn import TensorDictModule
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.data.replay_buffers.samplers import SamplerWithoutReplacement
from torchrl.envs import EnvBase
from torchrl.modules import ProbabilisticActor, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

from ltd.core.artefacts import damaged
from ltd.core.atomic import write_file
from ltd.rl.policies import Policy, PolicySpec, mlp
from ltd.rl.settings import PPOSettings


def learning_rate_factor(update: int, total: int, warmup: float) -> float:
    warm = max(1, round(warmup * total))
    if update < warm:
        return (update + 1) / warm
    return max(0.0, (total - update) / max(1, total - warm))


def batch_metrics(data, loss: dict) -> dict:
    """What a batch did: rewards, the cycles verified (tau, depth and V chosen), PPO's losses."""
    nxt = data["next"]
    ended = nxt["cycle_end"].reshape(-1)
    metrics = {
        "reward_per_step": float(nxt["reward"].mean()),
        "cycles": int(ended.sum()),
        **loss,  # loss_objective, loss_critic, loss_entropy (the entropy bonus), entropy (the policy's)
    }
    if ended.any():
        accepted = nxt["cycle_accepted"].reshape(-1)[ended].float()
        metrics["tau"] = float((accepted + 1).mean())
        metrics["reward_per_cycle"] = float(nxt["reward"].reshape(-1)[ended].mean())
        metrics["depth_chosen"] = nxt["cycle_depth"].reshape(-1)[ended]
        metrics["verify_chosen"] = nxt["cycle_verify"].reshape(-1)[ended]
    return metrics


def scalars(metrics: dict) -> dict:
    """A batch's metrics as plain numbers: the chosen depths and sizes by their means."""
    return {k: float(v.float().mean()) if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}


class PPOTrainer:
    def __init__(self, make_env: Callable[[], EnvBase], spec: PolicySpec, settings: PPOSettings, checkpoint: Path,
                 initial: Policy | None = None):
        """`initial`: weights to start the actor from (a co-adaptive round goes on from the last
        policy of its role); a checkpoint, when there is one, takes precedence."""
        settings.validate()
        self.env, self.spec, self.settings, self.checkpoint = make_env(), spec, settings, Path(checkpoint)
        torch.manual_seed(settings.seed)
        self.policy = Policy(spec)
        if initial is not None:
            self.policy.load_state_dict(initial.state_dict())
        module = TensorDictModule(self.policy, in_keys=["observation"], out_keys=["logits"])
        self.actor = ProbabilisticActor(module, in_keys=["logits"], distribution_class=torch.distributions.Categorical,
                                        return_log_prob=True, spec=self.env.action_spec)
        self.critic = ValueOperator(mlp(spec.observation_width, settings.critic_hidden, 1), in_keys=["observation"])
        self.advantage = GAE(gamma=settings.gamma, lmbda=settings.lmbda, value_network=self.critic, average_gae=True)
        self.loss = ClipPPOLoss(self.actor, self.critic, clip_epsilon=settings.clip_epsilon,
                                entropy_coeff=settings.entropy_coeff, critic_coeff=settings.critic_coeff,
                                normalize_advantage=True)
        self.optimizer = torch.optim.Adam(self.loss.parameters(), lr=settings.lr)
        updates = settings.batches * settings.epochs * (settings.rollout // settings.minibatch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda u: learning_rate_factor(u, updates, settings.warmup))
        self.batch, self.best_score, self.best_weights, self.best_batch = 0, -float("inf"), None, 0
        self.start_score = self.last_score = None
        self.curve: list[dict] = []  # every batch's scalar metrics, kept with the checkpoint for the analysis
        self.keep_best = True
        if self.checkpoint.is_file():
            try:
                state = torch.load(self.checkpoint, weights_only=True)
            except Exception as error:  # torch.load fails in many ways on a cut file; all mean the same here
                damaged(self.checkpoint, error, "starting the stage over")
            else:
                self._load(state)

    def _save(self) -> None:
        state = dict(batch=self.batch, best_score=self.best_score, best_weights=self.best_weights,
                     best_batch=self.best_batch, start_score=self.start_score, last_score=self.last_score,
                     curve=self.curve, loss=self.loss.state_dict(), optimizer=self.optimizer.state_dict(),
                     scheduler=self.scheduler.state_dict())
        write_file(self.checkpoint, lambda tmp: torch.save(state, tmp))

    def _load(self, state: dict) -> None:
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.batch, self.best_score, self.best_weights = state["batch"], state["best_score"], state["best_weights"]
        self.best_batch, self.start_score, self.last_score = state["best_batch"], state["start_score"], state["last_score"]
        self.curve = state.get("curve", [])[: self.batch]  # batches after the checkpoint run again

    def _seed_batch(self) -> None:
        """Each batch's randomness depends only on (seed, batch): resuming changes nothing."""
        seed = self.settings.seed * 1_000_003 + self.batch
        torch.manual_seed(seed)
        self.env.set_seed(seed)

    def train(self, validate: Callable[[Policy], float] | None = None, log: Callable[[dict], None] = lambda m: None,
              progress: Callable[[int, int], None] = lambda done, total: None, keep_best: bool = True) -> Policy:
        """Run the remaining batches; returns, in eval mode, the policy that validated best (with
        `keep_best`, the initial one included) or else the last one. `validate` is logged either way."""
        s = self.settings
        self.keep_best = keep_best and validate is not None
        if validate is not None and self.batch == 0 and self.start_score is None:
            self.start_score = self._validate(validate)  # a round must not end worse than the policy it started from
        remaining = (s.batches - self.batch) * s.rollout
        if remaining > 0:
            collector = Collector(self.env, self.actor, frames_per_batch=s.rollout, total_frames=remaining,
                                  reset_at_each_iter=True, pre_collect_hook=self._seed_batch,
                                  auto_register_policy_transforms=False)
            buffer = ReplayBuffer(storage=LazyTensorStorage(s.rollout), sampler=SamplerWithoutReplacement(),
                                  batch_size=s.minibatch)
            for data in collector:  # [env batch, time]
                losses = self._update(data, buffer)
                self.batch += 1
                metrics = batch_metrics(data, losses)
                metrics["lr"] = self.scheduler.get_last_lr()[0]
                if validate is not None and (self.batch % s.validate_every == 0 or self.batch == s.batches):
                    metrics["validation"] = self._validate(validate)
                self.curve.append(scalars(dict(batch=self.batch, **metrics)))
                if self.batch % s.validate_every == 0 or self.batch == s.batches:
                    self._save()
                log(dict(batch=self.batch, frames=self.batch * s.rollout, **metrics))
                progress(self.batch * s.rollout, s.batches * s.rollout)
            collector.shutdown()
        if self.best_weights is not None:
            self.policy.load_state_dict(self.best_weights)
        return self.policy.eval()

    @property
    def kept_score(self) -> float | None:
        """The validation of the policy train() returns."""
        return self.best_score if self.best_weights is not None else self.last_score

    @property
    def kept_batch(self) -> int | None:
        """The batch after which the policy train() returns was taken (0: the start), when it keeps the
        best; None when it keeps the last."""
        return self.best_batch if self.keep_best else None

    def _validate(self, validate: Callable[[Policy], float]) -> float:
        score = validate(self.policy.eval())
        self.policy.train()
        self.last_score = score
        if self.keep_best and score > self.best_score:
            self.best_score, self.best_batch = score, self.batch
            self.best_weights = {k: v.clone() for k, v in self.policy.state_dict().items()}
        return score

    def _update(self, data, buffer: ReplayBuffer) -> dict:
        s = self.settings
        totals: dict[str, float] = {}
        count = 0
        for _ in range(s.epochs):
            with torch.no_grad():
                self.advantage(data)
            buffer.empty()
            buffer.extend(data.reshape(-1))
            for _ in range(s.rollout // s.minibatch):
                minibatch = buffer.sample()
                parts = self.loss(minibatch)
                total = parts["loss_objective"] + parts["loss_critic"] + parts["loss_entropy"]
                self.optimizer.zero_grad()
                total.backward()
                torch.nn.utils.clip_grad_norm_(self.loss.parameters(), s.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                for key in ("loss_objective", "loss_critic", "loss_entropy", "entropy"):
                    totals[key] = totals.get(key, 0.0) + float(parts[key].detach())
                count += 1
        return {key: value / count for key, value in totals.items()}
