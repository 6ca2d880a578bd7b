"""Tiny random target models shared by the fast suite.

Everything is built in-process from transformers configs (no downloads) and seeded, so every test
sees the same weights on every run. Weights are re-drawn with a larger spread than transformers'
init (std 0.02): logits then vary by a few units, which makes greedy argmax ties (and thus
float-noise flakiness) practically impossible and gives sampled distributions some shape.
"""
import json
import random
from dataclasses import dataclass

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from ltd.decoding.engine import Engine
from ltd.models.decoder import Decoder
from ltd.models.draft_lm import DraftLM
from ltd.models.eagle3 import Eagle3Drafter, Eagle3Head, head_config

FAMILIES = ("llama", "qwen2", "qwen3")

# Where and in what precision the tiny suites run: float32 and bfloat16 on the CPU everywhere, and
# bfloat16 on a GPU where there is one (marked `cuda`: skipped elsewhere, with the reason).
PLACES = [
    pytest.param(("cpu", torch.float32), id="cpu-fp32"),
    pytest.param(("cpu", torch.bfloat16), id="cpu-bf16"),
    pytest.param(("cuda", torch.bfloat16), id="cuda-bf16", marks=pytest.mark.cuda),
]

CLASSES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
}

TINY = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, head_dim=16)

# A smaller, different model over the same vocabulary: an independent draft LM.
SMALL = dict(TINY, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1)

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def tiny_config(family: str, **overrides):
    """A transformers config of `family`; eager attention makes the HF reference the plain math."""
    config_cls, _ = CLASSES[family]
    return config_cls(**{**TINY, **overrides}, attn_implementation="eager")


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int, std: float = 0.1) -> torch.nn.Module:
    """Re-draw every weight. Norm weights and q/k/v biases init to 1 and 0 in transformers, which
    would let a decoder that forgot them (or qwen3's q/k norms) pass; random values expose that."""
    generator = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=generator)
        if "norm" in name:
            p.copy_(1 + 0.1 * noise)
        elif name.endswith("bias"):
            p.copy_(0.1 * noise)
        else:
            p.copy_(std * noise)
    return model


def build_hf(config, seed: int = 0, std: float = 0.1):
    _, model_cls = CLASSES[config.model_type]
    torch.manual_seed(seed)
    return randomize_(model_cls(config), seed, std).eval()


def decoder_of(model, max_positions: int | None = None, place=("cpu", torch.float32)) -> Decoder:
    """A fresh Decoder (with its own KV cache) over the weights of an HF model, on `place`'s
    device in its dtype."""
    device, dtype = place
    return Decoder.from_hf(model.config, model.state_dict(), max_positions, dtype, device)


@torch.no_grad()
def hf_logits(model, tokens) -> torch.Tensor:
    """[T, vocab] logits of one plain causal HF forward."""
    ids = torch.as_tensor(tokens, dtype=torch.long)[None]
    return model(ids).logits[0]


def random_prompt(length: int, vocab: int = TINY["vocab_size"], seed: int = 0) -> list[int]:
    return torch.randint(0, vocab, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


@dataclass
class Tiny:
    """One tiny target family: its config and HF model (the reference), and builders of the ltd side."""

    config: object
    hf: object

    def decoder(self, max_positions: int | None = None, place=("cpu", torch.float32)) -> Decoder:
        return decoder_of(self.hf, max_positions, place)

    def eagle3_drafter(self, target: Decoder, draft_vocab_size: int = 64, seed: int = 0) -> Eagle3Drafter:
        torch.manual_seed(seed)
        head = Eagle3Head(head_config(self.config, draft_vocab_size=draft_vocab_size))
        return Eagle3Drafter(head, target.embed, self.config.num_hidden_layers, target.max_positions)

    def self_drafter(self, place=("cpu", torch.float32)) -> DraftLM:
        """The target drafting for itself (its own Decoder instance: drafter and target need two caches)."""
        return DraftLM(self.decoder(place=place), self.config.vocab_size)

    def engine(self, make_drafter=None, stop_token_ids=(), max_context=None,
               place=("cpu", torch.float32)) -> tuple[Engine, Decoder]:
        """An Engine over a fresh target Decoder on `place`; `make_drafter(target)` builds its drafter."""
        target = self.decoder(place=place)
        drafter = make_drafter(target) if make_drafter else None
        return Engine(target, stop_token_ids, drafter, max_context), target


_TINY_CACHE: dict[str, Tiny] = {}


@pytest.fixture(scope="session")
def tiny():
    """tiny(family) -> Tiny, built once per session (seeded by family, so families differ)."""

    def get(family: str) -> Tiny:
        if family not in _TINY_CACHE:
            config = tiny_config(family)
            _TINY_CACHE[family] = Tiny(config, build_hf(config, seed=FAMILIES.index(family)))
        return _TINY_CACHE[family]

    return get


@pytest.fixture(scope="session")
def small_draft_hf():
    """A smaller random llama over the target vocabulary, used as an independent DraftLM."""
    return build_hf(tiny_config("llama", **SMALL), seed=100)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a GPU: elsewhere they are skipped, saying so."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(1234)


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models(request):
    """Tiny models gain nothing from intra-op threads, and OpenMP threads spinning against another
    process on a 2-core machine slowed these tests down up to 100x: one thread keeps them fast.
    Tests on the real model (marked `real`) keep torch's default."""
    if request.node.get_closest_marker("real"):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CHAT = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} </s> {% endfor %}"
        "{% if add_generation_prompt %}assistant{% endif %}")


def save_tiny_checkpoint(directory, family: str = "llama"):
    """A tiny model with a word-level tokenizer and a chat template, saved as a hub snapshot is."""
    words = ["<unk>", "</s>", "user", "assistant", "hello", "world"]
    words += [f"w{i}" for i in range(101 - len(words))]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>")
    tokenizer.chat_template = CHAT
    model = build_hf(tiny_config(family, eos_token_id=1))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny checkpoint on disk, for the jobs tests run as a user would."""
    directory = tmp_path_factory.mktemp("model")
    save_tiny_checkpoint(directory)
    return directory


@pytest.fixture
def corpus(tmp_path):
    """A drafter-training corpus of 40 short random-word conversations (make drafter's format)."""
    rng = random.Random(0)
    words = lambda n: " ".join(f"w{rng.randrange(6, 101)}" for _ in range(n))
    rows = [{"instruction": words(6), "input": "", "response": words(rng.randrange(10, 30))} for _ in range(40)]
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps(rows))
    return str(path)
