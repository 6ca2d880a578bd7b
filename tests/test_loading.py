"""Loading a target from a local directory, as from a hub snapshot: weights, tokenizer, stop tokens."""
import torch

from conftest import hf_logits, random_prompt, save_tiny_checkpoint
from ltd.models.targets import load_target


def test_local_directory_loads_with_equal_logits(tmp_path):
    for family in ("llama", "qwen3"):
        model = save_tiny_checkpoint(tmp_path / family, family)
        target = load_target("tiny", str(tmp_path / family), family=family)
        prompt = random_prompt(9)
        target.decoder.reset(64)
        logits, _ = target.decoder(torch.tensor(prompt))
        torch.testing.assert_close(logits, hf_logits(model, prompt), atol=1e-5, rtol=1e-5)
        assert target.stop_token_ids == (1,)


def test_chat_template_override(tmp_path):
    save_tiny_checkpoint(tmp_path, "llama")
    target = load_target("tiny", str(tmp_path), chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert target.encode_chat([{"role": "user", "content": "hello world"}]) == [4, 5]
    assert load_target("tiny", str(tmp_path)).encode_chat([{"role": "user", "content": "hello"}]) == [2, 4, 1, 3]
