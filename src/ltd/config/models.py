"""The target and drafter a composed config names, and who they are (their weights included), for
the keys of what is derived from them."""
import sys
from dataclasses import fields
from pathlib import Path

from omegaconf import OmegaConf

from ltd.config.files import model_config
from ltd.core.errors import LtdError
from ltd.core.fingerprints import check_device, machine
from ltd.core.provenance import Provenance
from ltd.drafter.heads import DrafterJob, HeadData, head_directory
from ltd.drafter.loop import TrainSettings
from ltd.models.drafters import drafter_identity, load_drafter
from ltd.models.targets import load_target, model_identity
from ltd.models.wheel_parts import WheelParts, cache_bytes


def parts_of(model_cfg):
    """The wheels a `parts:` source is assembled from (None for other sources)."""
    if not model_cfg.get("parts"):
        return None
    return WheelParts(file=model_cfg.source.removeprefix("parts:"), **OmegaConf.to_container(model_cfg.parts))


def load_target_of(cfg):
    m = cfg.model
    return load_target(m.name, m.source, max_context=m.max_context, dtype=m.dtype, device=m.device, family=m.family,
                       chat_template=m.chat_template, parts=parts_of(m), quantize=m.get("quantize"),
                       revision=m.get("revision"))


def model_identity_of(cfg) -> dict:
    m = cfg.model
    return model_identity(m.name, m.source, dtype=m.dtype, device=m.device, max_context=m.max_context,
                          chat_template=m.chat_template, parts=parts_of(m), quantize=m.get("quantize"),
                          revision=m.get("revision"))


def draft_lm_settings(cfg) -> dict:
    """How to load a draft LM (load_drafter's source, parts, dtype, quantize): the model config it
    names, or its source; in the target's dtype (on its device), quantised as the drafter config says."""
    d = cfg.drafter
    if d.model:
        m = model_config(d.model)
        source, parts = m.source, parts_of(m)
    else:
        source, parts = d.source, None
    return dict(source=source, parts=parts, dtype=cfg.model.dtype, quantize=d.quantize)


def drafter_job(drafter_cfg) -> DrafterJob:
    """The plain settings of `make drafter` from the drafter config: its `train:` block split into
    the data and the optimiser's settings."""
    block = OmegaConf.to_container(drafter_cfg.train, resolve=True)
    data = {f.name: block[f.name] for f in fields(HeadData)}
    data["eval_tree"] = tuple(data["eval_tree"])
    train = TrainSettings(**{f.name: block[f.name] for f in fields(TrainSettings)})
    return DrafterJob(**data, draft_vocab_size=drafter_cfg.draft_vocab_size,
                      intermediate_size=drafter_cfg.get("intermediate_size"), train=train)


def require_eagle3(cfg, job: str) -> None:
    """One LtdError line when a job that trains EAGLE-3 heads is given another drafter (a model's
    default drafter may be a draft LM)."""
    if cfg.drafter.kind != "eagle3":
        raise LtdError(f"{job} EAGLE-3 heads; drafter {cfg.drafter.kind!r} is not one: add drafter=eagle3 "
                       f"(or drafter=eagle3_cpu, a head sized for a CPU)")


def eagle3_weights(cfg, model: dict | None = None) -> str | None:
    """Which EAGLE-3 weights a config means (see conf/drafter/eagle3.yaml); None: untrained.
    `model`: the target's identity, when the caller has it already."""
    d, m = cfg.drafter, cfg.model
    if d.path or m.eagle3:
        return d.path or m.eagle3
    trained = head_directory(Path(d.root), m.name, model or model_identity_of(cfg), drafter_job(d))
    return str(trained) if (trained / "metrics.json").exists() else None


def identities(cfg) -> tuple[dict, dict]:
    """Who the model and the drafter of a config are (their weights included), without loading them."""
    check_device(cfg.model.device, f"model {cfg.model.name}")
    d, model = cfg.drafter, model_identity_of(cfg)
    if d.kind == "eagle3":
        return model, drafter_identity(d.kind, eagle3_weights(cfg, model), d.seed, d.draft_vocab_size,
                                       intermediate_size=d.get("intermediate_size"))
    draft = draft_lm_settings(cfg)
    return model, drafter_identity(d.kind, draft.pop("source"), **draft)


def provenance(cfg, threads: int) -> Provenance:
    """Who the model and drafter of a config are, and this machine with `threads` (see identities)."""
    model, drafter = identities(cfg)
    return Provenance(model, drafter, machine(threads, cfg.model.device))


def cache_bytes_needed(cfg) -> int:
    """Roughly what loading the config's target and draft LM adds to the model cache (models
    shipped as PyPI wheel parts; 0 for the rest, or once fetched)."""
    # (model config, whether a float32 copy is made: for every precision but the GGUF's own blocks)
    models = [(cfg.model, cfg.model.get("quantize") != "gguf")]
    if cfg.get("drafter") is not None and cfg.drafter.get("kind") == "draft_lm" and cfg.drafter.get("model"):
        models.append((model_config(cfg.drafter.model), True))
    parts = [(parts_of(m), dense) for m, dense in models]
    return sum(cache_bytes(p, dense) for p, dense in parts if p is not None)


def load_model(cfg):
    """The target and drafter a composed config names."""
    target, d = load_target_of(cfg), cfg.drafter
    if d.kind == "eagle3":
        weights = eagle3_weights(cfg)
        if weights is None:
            print("note: no trained EAGLE-3 head for this model and drafter config (make drafter trains one); "
                  "drafting with an untrained head", file=sys.stderr)
        try:
            drafter = load_drafter(target, "eagle3", weights, d.draft_vocab_size, d.seed,
                                   intermediate_size=d.get("intermediate_size"))
        except LtdError as error:
            if d.path or cfg.model.eagle3:
                raise
            raise LtdError(f"{error} (make drafter makes it again)") from None
    else:
        drafter = load_drafter(target, d.kind, **draft_lm_settings(cfg))
    return target, drafter


# How a table names a model's quantisation.
PRECISION = {"int8": "int8 weights", "gguf": "its GGUF blocks", "q4_k": "Q4_K blocks requantised by ltd"}


def describe_models(cfg) -> str:
    """One line naming the target, its precision and file, and the drafter and its precision:
    `qwen2.5-coder-1.5b (float32, from qwen2.5-coder-1.5b-instruct-q4_k_m.gguf) drafted by draft_lm
    qwen2.5-coder-0.5b (int8 weights)`."""
    m, d = cfg.model, cfg.drafter
    source = Path(str(m.source).split(":", 1)[-1]).name
    precision = PRECISION.get(m.get("quantize"), m.dtype)
    target = f"{m.name} ({precision}, from {source})" if source.endswith(".gguf") else f"{m.name} ({precision})"
    if d.kind == "eagle3":
        return f"{target} drafted by an EAGLE-3 head ({m.dtype})"
    name = d.model or Path(str(d.source)).name
    return f"{target} drafted by draft LM {name} ({PRECISION.get(d.quantize, m.dtype)})"
