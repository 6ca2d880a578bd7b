"""What both environments' steps carry, in one place: the specs, a step's (or reset's) output, and
what the step's cycle did (for the trainer's curves)."""
import torch
from tensordict import TensorDict
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

CYCLE_KEYS = ("cycle_end", "cycle_depth", "cycle_verify", "cycle_accepted")


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
