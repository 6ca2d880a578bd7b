"""The settings of LTD's training, plain dataclasses (what conf/ltd/ holds), free of torch so
configs can be checked before anything heavy is imported."""
from dataclasses import dataclass

from ltd.core.errors import LtdError

COMPONENTS = ("full", "no_coadapt", "size_only", "depth_only")


@dataclass
class PPOSettings:
    frames: int  # environment steps in all
    rollout: int = 2048  # frames per collected batch
    minibatch: int = 256
    epochs: int = 20
    lr: float = 1e-3
    warmup: float = 0.01  # fraction of the updates spent warming the learning rate up
    entropy_coeff: float = 0.01
    critic_coeff: float = 0.5
    clip_epsilon: float = 0.2
    gamma: float = 0.99
    lmbda: float = 0.95
    max_grad_norm: float = 0.5
    critic_hidden: tuple[int, ...] = (1024, 256)
    validate_every: int = 5  # batches between validations (and checkpoints)
    seed: int = 0

    def validate(self) -> None:
        if self.frames < self.rollout or self.rollout % self.minibatch:
            raise LtdError(f"ppo needs frames >= rollout and rollout a multiple of minibatch, got frames "
                           f"{self.frames}, rollout {self.rollout}, minibatch {self.minibatch}")
        if not 0 <= self.gamma <= 1 or not 0 <= self.lmbda <= 1 or not 0 <= self.warmup < 1:
            raise LtdError("ppo gamma must be in [0, 1], lmbda in [0, 1] and warmup in [0, 1)")

    @property
    def batches(self) -> int:
        return self.frames // self.rollout


PARTNERS = ("fixed", "best-constant")


@dataclass
class LtdSettings:
    sizes: tuple[int, ...]  # the size policy's choices of V
    size_ppo: PPOSettings
    depth_ppo: PPOSettings
    rounds: int = 3  # co-adaptive rounds after stage 1: size, depth, size, ...
    round_scale: float = 0.5  # a round trains this fraction of its policy's stage-1 frames
    depth_verify: int = 60  # V while the depth policy trains alone, and wherever there is no size policy
    fixed_depth: int = 8  # depth wherever there is no depth policy
    # The two above as given ("fixed"), or the best constant tree of the validation replay
    # ("best-constant"): a policy training alone then trains beside the tree it has to beat, whatever
    # the model and machine make that tree.
    partner: str = "fixed"
    size_hidden: tuple[int, ...] = (1024, 256)
    depth_hidden: tuple[int, ...] = (1024,)
    size_envs: int = 64  # replay rows stepped at once
    depth_envs: int = 32
    select: str = "validation"  # each stage keeps its best checkpoint by validation, or its "last"

    def validate(self) -> None:
        if self.rounds < 0 or not 0 < self.round_scale:
            raise LtdError("rounds must be >= 0 and round_scale > 0")
        if self.select not in ("validation", "last"):
            raise LtdError(f"ltd.select must be validation or last, got {self.select!r}")
        if self.partner not in PARTNERS:
            raise LtdError(f"ltd.partner must be one of {', '.join(PARTNERS)}, got {self.partner!r}")
        self.size_ppo.validate()
        self.depth_ppo.validate()


def check_depth_rows(rows: int, rollout: int, max_depth: int) -> None:
    """A depth episode (one cycle) takes up to max_depth - 1 steps, and each of `rows` replay rows
    steps rollout / rows times per batch before the batch resets it. Too few steps cut the deep
    cycles short of their reward, and the policy never learns what drafting deep earns (seen: 256
    rows of 8 steps under 12 levels, and a depth policy that never went past 9)."""
    steps = rollout // rows
    if steps < 4 * (max_depth - 1):
        raise LtdError(f"ltd.depth_envs {rows} rows step {steps} times per rollout of {rollout}; cycles of up to "
                       f"{max_depth} levels need at least {4 * (max_depth - 1)}: fewer depth_envs or a longer rollout")


@dataclass
class ReSpSSettings:
    """How make resps trains Re-SpS's policy (conf/resps)."""
    ppo: PPOSettings
    environment: str = "online"  # online: the real engine (the paper); replay: traces and the cost model
    envs: int = 64  # replay rows stepped at once
    bins: str = "cost_model"  # the grid of tree shapes: cost_model (this machine's profile) or paper
    budget: float = 2.0  # cost_model bins: V and depths costing at most this many target steps
    persistence: int = 10  # cycles a shape is held in training
    hidden: tuple[int, ...] = (128, 128)
    max_new_tokens: int = 128

    def __post_init__(self):  # configs give lists where the defaults are tuples
        self.hidden = tuple(self.hidden)
        self.ppo.critic_hidden = tuple(self.ppo.critic_hidden)

    def validate(self) -> None:
        self.ppo.validate()
        if self.environment not in ("online", "replay"):
            raise LtdError(f"resps.environment must be online or replay, got {self.environment!r}")
        if self.environment == "replay" and (self.envs < 1 or self.ppo.rollout % self.envs):
            raise LtdError(f"resps.ppo.rollout ({self.ppo.rollout}) must be a multiple of resps.envs ({self.envs})")
        if self.bins not in ("cost_model", "paper"):
            raise LtdError(f"resps.bins must be cost_model or paper, got {self.bins!r}")
        if self.persistence < 1 or self.budget <= 0:
            raise LtdError(f"resps.persistence must be >= 1 and resps.budget > 0, got {self.persistence} and "
                           f"{self.budget}")
