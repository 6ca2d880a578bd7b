"""An EAGLE-3 head's data and training settings, and where each stage of `make drafter` keeps what it
made (features, pool, head), keyed by what it depends on: what configs and other jobs read of a
head without training one."""
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ltd.core.artefacts import Artefact, damaged, remove
from ltd.core.errors import LtdError
from ltd.core.fingerprints import digest
from ltd.decoding.controller import StaticTree
from ltd.drafter.loop import TrainSettings
from ltd.models.eagle3 import Eagle3Head

FEATURES, HEAD = 1, 1  # formats: a change to what these stages write makes earlier copies stale


@dataclass
class HeadData:
    """What a head learns from and is evaluated on (the `train:` block of a drafter config, beside
    the optimiser's TrainSettings)."""
    corpus: list[str]
    responses: str = "target"  # who writes the responses: the target itself (greedy) or the corpus
    answer_tokens: int = 256  # longest answer the target writes (responses: target)
    max_tokens: int = 200_000  # tokens the target produces features for (prompts and responses)
    max_length: int = 512  # longest prompt the target answers (responses: corpus, longest conversation)
    held_out: int = 16  # corpus examples kept aside for the evaluation
    target_top_k: int = 16  # the target's next-token distribution is kept as its top-k
    target_batch: int = 32  # sequences the target reads or answers at once
    shard_size: int = 64  # sequences per shard
    eval_prompts: int = 8
    eval_new_tokens: int = 128
    eval_tree: tuple[int, int, int] = (8, 10, 60)  # depth, top-k, V: EAGLE-3's default


@dataclass
class DrafterJob(HeadData):
    draft_vocab_size: int = 8192
    intermediate_size: int | None = None  # the head's MLP width (None: the target's)
    train: TrainSettings = field(default_factory=TrainSettings)

    @property
    def answering(self) -> bool:
        """Whether the target writes the responses itself."""
        return self.responses == "target"

    @property
    def answer_length(self) -> int:
        """The longest answer the target writes; 0 when it reads the corpus responses."""
        return self.answer_tokens if self.answering else 0

    def validate(self, vocab_size: int | None = None) -> None:
        """One LtdError line for settings no head can be trained with (the vocabulary's size once the
        target is loaded)."""
        if vocab_size is not None and self.draft_vocab_size > vocab_size:
            raise LtdError(f"draft vocabulary ({self.draft_vocab_size}) is larger than the target's ({vocab_size})")
        if self.responses not in ("target", "corpus"):
            raise LtdError(f"drafter training responses must be one of target, corpus; got {self.responses!r}")
        for name in ("answer_tokens", "max_tokens", "max_length", "target_top_k", "draft_vocab_size", "target_batch",
                     "shard_size", "eval_prompts", "eval_new_tokens"):
            if getattr(self, name) < 1:
                raise LtdError(f"drafter training {name} must be >= 1, got {getattr(self, name)}")
        StaticTree(*self.eval_tree)  # the evaluation's tree: checked now, not after the training


def features_key(model: dict, job: DrafterJob) -> dict:
    """What the target's answers and features depend on (`model`: the target's identity)."""
    return {"artefact": "drafter features", "format": FEATURES, "model": model, "corpus": job.corpus,
            "responses": job.responses, "answer_length": job.answer_length, "max_tokens": job.max_tokens,
            "max_length": job.max_length, "held_out": job.held_out, "target_top_k": job.target_top_k,
            "seed": job.train.seed}


def pool_key(model: dict, job: DrafterJob) -> dict:
    """What the features directory depends on: the features' key but their budget. A larger
    `max_tokens` answers the same conversations first, then more, so runs add to one pool of shards
    and a run reads the first shards it needs."""
    key = features_key(model, job)
    del key["max_tokens"]
    return key


def head_key(model: dict, job: DrafterJob) -> dict:
    settings = asdict(job)
    if settings["intermediate_size"] is None:  # the key of heads as wide as their target, as before the option
        del settings["intermediate_size"]
    return {"artefact": "eagle3 head", "format": HEAD, "features": features_key(model, job), "job": settings}


def head_directory(root: Path, model_name: str, model: dict, job: DrafterJob) -> Path:
    """Where the finished head for this model and job lives (whether or not it exists yet)."""
    return Path(root) / model_name / f"eagle3-{digest(head_key(model, job), 10)}" / "head"


def finished_head(root: Path, model_name: str, model: dict, job: DrafterJob) -> Artefact:
    return Artefact(head_directory(root, model_name, model, job), head_key(model, job), "drafter head", directory=True)


def reusable_head(final: Artefact, log) -> dict | None:
    """The metrics of the finished head when it is there, this job's, and loads; else None (and a
    damaged head is deleted, to be made again from the training state)."""
    if not final.path.exists():
        return None
    if not final.fresh:
        log(f"{final.path} was made under other settings ({final.changes()}); making it again")
        remove(final.path)
        return None
    try:
        Eagle3Head.load(final.path)
        return json.loads((final.path / "metrics.json").read_text())
    except (LtdError, OSError, ValueError) as error:
        damaged(final.path, error, "evaluating the trained head again")
        return None
