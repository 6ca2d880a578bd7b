"""What the depth and size environments share: a batch of rows, a seeded generator, the specs, a
step's (or reset's) output, and what the step's cycle did (for the trainer's curves)."""
import torch
from tensordict import TensorDict
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from ltd.core.errors import LtdError
from ltd.decoding.engine import Engine, SpeculativeRun
from ltd.rl.rewards import Reward
from ltd.traces.cost_model import CostModel

CYCLE_KEYS = ("cycle_end", "cycle_depth", "cycle_verify", "cycle_accepted")


class PolicyEnv(EnvBase):
    def __init__(self, batch: int, width: int, actions: int, reward: Reward | str, seed: int,
                 costs: CostModel | None = None):
        self.reward = reward if isinstance(reward, Reward) else Reward(reward)
        if self.reward.prices_steps and costs is None:
            raise LtdError("reward tokens_saved prices a cycle's time in autoregressive steps: it needs the cost model")
        super().__init__(batch_size=torch.Size([batch]))
        self.costs = costs
        set_specs(self, batch, width, actions)
        self.generator = torch.Generator()
        self._set_seed(seed)

    def _set_seed(self, seed: int | None) -> None:
        self.generator.manual_seed(0 if seed is None else seed)

    def new_answer(self, engine: Engine, prompt: list[int], top_k: int, max_new_tokens: int,
                   temperature: float) -> SpeculativeRun:
        """An answer the online environments decode cycle by cycle. Sampled (temperature > 0), it
        draws from a generator seeded from the environment's, on the target's device: a seeded
        batch decodes the same answers again."""
        generator = None
        if temperature > 0:
            seed = int(torch.randint(2**62, (1,), generator=self.generator))
            generator = torch.Generator(device=engine.target.device).manual_seed(seed)
        return SpeculativeRun(engine, prompt, top_k=top_k, max_new_tokens=max_new_tokens, temperature=temperature,
                              generator=generator)

    def priced(self, accepted: torch.Tensor, draft_s: torch.Tensor, verify_s: torch.Tensor,
               contexts: torch.Tensor) -> torch.Tensor:
        """The reward of cycles at `contexts` ([B] long) that accepted `accepted` draft tokens in these times;
        an autoregressive step at each context is priced only for a reward that reads it."""
        step_s = self.costs.step_seconds_batch(contexts) if self.reward.prices_steps else None
        return self.reward(accepted, draft_s, verify_s, step_s)

    def rows_to_reset(self, tensordict: TensorDict | None) -> torch.Tensor:
        """The batch rows a reset is for: those TorchRL marks in `_reset`, else all."""
        mask = tensordict.get("_reset", None) if tensordict is not None else None
        return torch.arange(self.batch_size[0]) if mask is None else mask.reshape(-1).nonzero().squeeze(-1)


def set_specs(env: EnvBase, batch: int, width: int, actions: int) -> None:
    """The observation, plus what the step's cycle did (for the trainer's curves; zero on steps
    that verified nothing): cycle_end, cycle_depth, cycle_verify, cycle_accepted."""
    cycle = {key: Unbounded(shape=(batch,), dtype=torch.long) for key in CYCLE_KEYS[1:]}
    env.observation_spec = Composite(observation=Unbounded(shape=(batch, width)),
                                     cycle_end=Categorical(n=2, shape=(batch,), dtype=torch.bool), **cycle,
                                     shape=(batch,))
    env.action_spec = Categorical(n=actions, shape=(batch,))
    env.reward_spec = Unbounded(shape=(batch, 1))


def step_output(batch: int, observation: torch.Tensor, done: torch.Tensor, reward: torch.Tensor | None = None,
                cycle: tuple[torch.Tensor, ...] | None = None) -> TensorDict:
    """A step's (or, without reward, a reset's) output; `cycle`: end, depth, verify, accepted."""
    values = dict(observation=observation, done=done[:, None], terminated=done[:, None].clone())
    if cycle is None:
        cycle = (torch.zeros(batch, dtype=torch.bool), *(torch.zeros(batch, dtype=torch.long),) * 3)
    values.update(zip(CYCLE_KEYS, cycle))
    if reward is not None:
        values["reward"] = reward[:, None].float()
    return TensorDict(values, batch_size=[batch])


def cycle_of(cycle) -> tuple[torch.Tensor, ...]:
    """An engine Cycle as the environments' cycle keys."""
    return (torch.tensor([True]), torch.tensor([cycle.depth]), torch.tensor([cycle.verify_size]),
            torch.tensor([cycle.accepted]))
