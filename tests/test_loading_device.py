"""Loading a target's weights straight to its device in its dtype: sharded safetensors, pickles,
GGUF caches, and the one line when a model does not fit."""
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_artefacts import fake_dequantise

from conftest import build_hf, hf_logits, random_prompt, save_tiny_checkpoint, tiny_config
from ltd.core.errors import LtdError
from ltd.models import targets
from ltd.models.drafters import load_drafter
from ltd.models.eagle3 import Eagle3Head, head_config
from ltd.models.targets import load_target


def logits_of(target, prompt) -> torch.Tensor:
    target.decoder.reset(64)
    logits, _ = target.decoder(torch.tensor(prompt, device=target.decoder.device))
    return logits.float().cpu()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The same tiny model saved whole, in several shards with an index, and as a pickle only."""
    root = tmp_path_factory.mktemp("checkpoints")
    model = save_tiny_checkpoint(root / "whole", "qwen3")
    shutil.copytree(root / "whole", root / "sharded")
    (root / "sharded" / "model.safetensors").unlink()
    model.save_pretrained(root / "sharded", max_shard_size="200KB")
    shutil.copytree(root / "whole", root / "pickle")
    (root / "pickle" / "model.safetensors").unlink()
    torch.save(model.state_dict(), root / "pickle" / "pytorch_model.bin")
    return model, root


def test_the_checkpoint_is_really_sharded(checkpoints):
    _, root = checkpoints
    files = targets.weight_files(root / "sharded")
    assert len(files) > 2 and all(f.suffix == ".safetensors" and f.is_file() for f in files)
    assert (root / "sharded" / "model.safetensors.index.json").is_file()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sharded_loads_in_its_dtype_as_the_whole_checkpoint(checkpoints, dtype):
    model, root = checkpoints
    prompt = random_prompt(9)
    sharded = load_target("tiny", str(root / "sharded"), dtype=dtype)
    whole = load_target("tiny", str(root / "whole"), dtype=dtype)
    decoder = sharded.decoder
    weights = [decoder.embed, decoder.lm_head, decoder.final_norm, decoder.layers[0].input_norm,
               decoder.layers[0].q_norm, decoder.layers[-1].qkv, decoder.layers[-1].down]
    assert all(w.dtype == getattr(torch, dtype) for w in weights)
    assert torch.equal(logits_of(sharded, prompt), logits_of(whole, prompt))
    assert sharded.stop_token_ids == whole.stop_token_ids == (1,)
    if dtype == "float32":
        torch.testing.assert_close(logits_of(sharded, prompt), hf_logits(model, prompt), atol=1e-4, rtol=0)


def test_a_pickle_only_checkpoint_loads(checkpoints):
    model, root = checkpoints
    assert targets.weight_files(root / "pickle") == [root / "pickle" / "pytorch_model.bin"]
    target = load_target("tiny", str(root / "pickle"))
    prompt = random_prompt(9)
    torch.testing.assert_close(logits_of(target, prompt), hf_logits(model, prompt), atol=1e-4, rtol=0)


def test_tied_embeddings_ignore_a_saved_output_matrix(tmp_path):
    """transformers makes the output matrix the embedding when they are tied; so does ltd (and it
    does not load the saved copy)."""
    save_tiny_checkpoint(tmp_path, "qwen2")
    model = build_hf(tiny_config("qwen2", eos_token_id=1, tie_word_embeddings=True), seed=3)
    model.config.save_pretrained(tmp_path)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["lm_head.weight"] = torch.randn_like(state["lm_head.weight"])
    save_file(state, tmp_path / "model.safetensors")
    target = load_target("tiny", str(tmp_path))
    prompt = random_prompt(9)
    torch.testing.assert_close(logits_of(target, prompt), hf_logits(model, prompt), atol=1e-4, rtol=0)


def test_a_model_that_does_not_fit_is_one_line_before_anything_is_read(checkpoints, monkeypatch):
    _, root = checkpoints
    need = targets.weight_bytes(targets.weight_files(root / "sharded"), torch.bfloat16)
    assert need == sum(p.numel() for p in checkpoints[0].parameters()) * 2
    monkeypatch.setattr(targets, "read_weights", lambda *a, **k: pytest.fail("weights read before the check"))
    monkeypatch.setattr(targets, "free_memory", lambda device: need - 1)
    with pytest.raises(LtdError) as error:
        load_target("tiny", str(root / "sharded"), dtype="bfloat16")
    message = str(error.value)
    assert "\n" not in message
    assert re.match(r"model 'tiny' needs 0\.3 MiB in bfloat16 and this machine has 0\.3 MiB of memory available: ",
                    message)


def test_the_gpu_message_says_multi_gpu_placement_is_not_supported(checkpoints, monkeypatch):
    _, root = checkpoints
    files = targets.weight_files(root / "whole")
    monkeypatch.setattr(targets, "free_memory", lambda device: 3 * 2**30)
    monkeypatch.setattr(targets, "weight_bytes", lambda files, dtype, skip=(): 65 * 2**30)
    with pytest.raises(LtdError, match=r"^model 'big' needs 65\.0 GiB in bfloat16 and the GPU \(cuda\) has 3\.0 GiB "
                                       r"free: .*\(multi-GPU placement is not supported\)$"):
        targets.check_fits("big", files, torch.bfloat16, "cuda")
    monkeypatch.setattr(targets, "free_memory", lambda device: None)  # unknown: no check
    targets.check_fits("big", files, torch.bfloat16, "cuda")


def test_a_damaged_checkpoint_is_one_line_naming_the_file(tmp_path):
    save_tiny_checkpoint(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(LtdError, match=f"^cannot load model '{re.escape(str(tmp_path))}': "
                                       f"{re.escape(str(weights))} is damaged \\(.+\\)$"):
        load_target("tiny", str(tmp_path))


def test_a_hub_model_that_cannot_be_fetched_is_one_line(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing traffic "
                                      "has been disabled. To enable hf.co look-ups, set HF_HUB_OFFLINE=0.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(LtdError, match="^cannot load model 'nobody/no-such-model': "):
        targets.load_pretrained("x", "nobody/no-such-model", max_context=None, dtype=torch.float32, device="cpu",
                                quantize=None)


def test_a_gguf_target_loads_in_its_dtype_and_a_tight_fit_keeps_its_cache(checkpoints, tmp_path, monkeypatch):
    model, root = checkpoints
    monkeypatch.setenv("LTD_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    calls = []
    monkeypatch.setattr(targets, "write_dense_cache", fake_dequantise(root / "whole", calls))
    prompt = random_prompt(9)

    fp32 = load_target("tiny", str(gguf), dtype="float32")
    torch.testing.assert_close(logits_of(fp32, prompt), hf_logits(model, prompt), atol=1e-4, rtol=0)
    bf16 = load_target("tiny", str(gguf), dtype="bfloat16")
    assert bf16.decoder.embed.dtype == bf16.decoder.layers[0].qkv.dtype == torch.bfloat16
    assert len(calls) == 1

    monkeypatch.setattr(targets, "free_memory", lambda device: 1000)
    with pytest.raises(LtdError, match=r"^model 'tiny' needs 0\.5 MiB in float32 and this machine has 0\.0 MiB"):
        load_target("tiny", str(gguf), dtype="float32")
    assert len(calls) == 1 and Path(fp32.hf_path).is_dir()  # not taken for a damaged cache


def test_an_eagle3_head_directory_ends_on_the_target_device_and_dtype(checkpoints, tmp_path):
    _, root = checkpoints
    target = load_target("tiny", str(root / "whole"), dtype="bfloat16")
    torch.manual_seed(0)
    Eagle3Head(head_config(target.config, draft_vocab_size=64)).save(tmp_path / "head")
    drafter = load_drafter(target, "eagle3", str(tmp_path / "head"))
    floats = [p for p in drafter.head.state_dict().values() if p.is_floating_point()]
    assert floats and all(p.dtype == torch.bfloat16 and p.device == target.decoder.device for p in floats)
    assert drafter.head.d2t.dtype == torch.long and drafter.head.t2d.dtype == torch.bool


@pytest.mark.cuda
def test_sharded_loads_to_the_gpu_in_bfloat16(checkpoints):
    _, root = checkpoints
    gpu = load_target("tiny", str(root / "sharded"), dtype="bfloat16", device="cuda")
    cpu = load_target("tiny", str(root / "whole"), dtype="bfloat16")
    decoder = gpu.decoder
    for weight in (decoder.embed, decoder.lm_head, decoder.layers[0].qkv, decoder.layers[-1].down):
        assert weight.device.type == "cuda" and weight.dtype == torch.bfloat16
    prompt = random_prompt(9)
    torch.testing.assert_close(logits_of(gpu, prompt), logits_of(cpu, prompt), atol=0.1, rtol=0.05)
