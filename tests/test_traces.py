"""make record: traces replay the engine exactly (acceptance for the same decisions), round-trip
on disk, and a second run resumes instead of recording again."""
import subprocess
import sys

import pytest
import torch

from conftest import FAMILIES, decoder_of, random_prompt, save_tiny_checkpoint
from ltd.decoding.controller import StaticTree
from ltd.decoding.engine import Engine
from ltd.models.decoder import Decoder
from ltd.models.draft_lm import DraftLM
from ltd.traces.trace import Trace, accepted_for, on_target_path, record_answer

DECISIONS = [(1, 1), (2, 3), (3, 4), (4, 12), (6, 30), (6, 48)]  # (6, 48): every candidate


class Bare:
    """What record_answer needs of a loaded target: its decoder."""

    def __init__(self, decoder):
        self.decoder = decoder


def replay(trace: Trace, depth: int, verify: int, new_tokens: int) -> list[int]:
    """Accepted draft tokens per cycle, walking the trace as the engine walks the answer."""
    position, accepted = 0, []
    while position < new_tokens - 1:
        accepted.append(accepted_for(trace, position, depth, verify))
        position += accepted[-1] + 1
    return accepted


def check_replay_equals_engine(target_decoder, drafter, prompt, new_tokens, max_depth=6, top_k=3):
    engine = Engine(target_decoder, (), drafter)
    # The answer runs max_depth past the cycles compared: the last cycle may verify beyond new_tokens.
    answer = engine.generate_autoregressive(prompt, new_tokens + max_depth).tokens
    trace = record_answer(Bare(target_decoder), drafter, prompt=prompt, answer=answer, top_k=top_k, max_depth=max_depth)
    assert trace.positions == len(answer) - 1
    total = 0
    for depth, verify in [(d, v) for d, v in DECISIONS if d <= max_depth]:
        real = [c.accepted for c in engine.generate(prompt, StaticTree(depth, top_k, verify), new_tokens).cycles]
        assert replay(trace, depth, verify, new_tokens) == real, (depth, verify)
        total += sum(real)
    return total


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["draft_lm", "self", "self_int8", "eagle3"])
def test_acceptance_from_traces_equals_the_engines(tiny, small_draft_hf, family, kind):
    """self_int8: the target's own weights in int8 (as the default draft LM's): a replay feeds the
    drafter one token at a time, the engine the accepted ones and the next at once, and the proposals
    agree only if an int8 row's result does not depend on the rows beside it."""
    tiny_target = tiny(family)
    target = tiny_target.decoder()
    if kind == "draft_lm":
        drafter = DraftLM(decoder_of(small_draft_hf), tiny_target.config.vocab_size)
    elif kind == "self":
        drafter = tiny_target.self_drafter()
    elif kind == "self_int8":
        hf = tiny_target.hf
        drafter = DraftLM(Decoder.from_hf(hf.config, hf.state_dict(), quantize="int8"), tiny_target.config.vocab_size)
    else:
        drafter = tiny_target.eagle3_drafter(target)
    accepted = check_replay_equals_engine(target, drafter, random_prompt(9, seed=3), 40)
    if kind in ("self", "self_int8"):
        assert accepted > 100  # long accepted paths were compared, not only rejections


def test_on_path_needs_the_token_and_every_ancestor():
    # Level 1: candidates 0, 1 (children of the root); level 2: 2, 3 under 0 and 4, 5 under 1.
    tokens = torch.tensor([7, 8, 9, 5, 9, 6])
    parents = torch.tensor([-1, -1, 0, 0, 1, 1])
    depths = torch.tensor([1, 1, 2, 2, 2, 2])
    assert on_target_path(tokens, parents, depths, torch.tensor([8, 9])).tolist() == [0, 1, 0, 0, 1, 0]
    assert on_target_path(tokens, parents, depths, torch.tensor([7, 9])).tolist() == [1, 0, 1, 0, 0, 0]
    assert on_target_path(tokens, parents, depths, torch.tensor([7])).tolist() == [1, 0, 0, 0, 0, 0]


def test_a_trace_round_trips(tiny, tmp_path):
    tiny_target = tiny("llama")
    target = tiny_target.decoder()
    drafter = tiny_target.self_drafter()
    answer = Engine(target, (), drafter).generate_autoregressive(random_prompt(6), 10).tokens
    trace = record_answer(Bare(target), drafter, prompt=random_prompt(6), answer=answer, top_k=2, max_depth=3)
    trace.save(tmp_path / "t.safetensors")
    loaded = Trace.load(tmp_path / "t.safetensors")
    assert (loaded.prompt_length, loaded.top_k, loaded.positions) == (6, 2, 9) and loaded.states is None
    for key in ("answer", "scores", "tokens", "parents", "entropies", "on_path"):
        assert torch.equal(getattr(loaded, key), getattr(trace, key)), key
    assert trace.scores.shape[1] == 2 + 2 * 2 * 2 and trace.entropies.shape[1] == 1 + 2 * 2
    with_states = record_answer(Bare(target), drafter, prompt=random_prompt(6), answer=answer, top_k=2, max_depth=3,
                                states=True)
    with_states.save(tmp_path / "s.safetensors")
    loaded = Trace.load(tmp_path / "s.safetensors")
    assert loaded.states.dtype == torch.float16 and loaded.states.shape == (9, target.spec.hidden_size)
    assert torch.equal(loaded.states, with_states.states) and torch.equal(loaded.scores, trace.scores)


def test_make_record_resumes(tmp_path):
    save_tiny_checkpoint(tmp_path / "model")
    task = tmp_path / "task.jsonl"
    task.write_text('{"question_id": 1, "turns": ["hello w7", "w9 world"]}\n{"question_id": 2, "turns": ["w30"]}\n')
    command = [sys.executable, "-m", "ltd.cli.record", "model=smollm2-135m", "model.name=tiny", f"model.source={tmp_path / 'model'}",
               "model.max_context=256", "drafter.draft_vocab_size=64", f"drafter.root={tmp_path}",
               f"task.path={task}", "task.name=tiny", "max_new_tokens=8", "top_k=3", "max_depth=3", "threads=1",
               f"output={tmp_path / 'traces'}", f"hydra.run.dir={tmp_path / 'run'}"]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "3 turns recorded, 0 already there; 3 traces, " in first.stdout
    assert sorted(p.name for p in (tmp_path / "traces").glob("*.safetensors")) == [
        "1-0.safetensors", "1-1.safetensors", "2-0.safetensors"]
    (tmp_path / "traces" / "1-1.safetensors").unlink()  # as if the first run had stopped there
    second = subprocess.run(command, capture_output=True, text=True)
    assert "1 turns recorded, 2 already there; 3 traces" in second.stdout, second.stderr
    damaged = tmp_path / "traces" / "2-0.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:200])  # cut short by a full disk, say
    third = subprocess.run(command, capture_output=True, text=True)
    assert "1 turns recorded, 2 already there; 3 traces" in third.stdout, third.stderr
    assert f"note: {damaged} is damaged (" in third.stderr and "); recording it again" in third.stderr
    other = subprocess.run([*command, "max_new_tokens=9"], capture_output=True, text=True)
    assert "made under other settings (max_new_tokens 8 -> 9); making them again" in other.stderr
    assert "3 turns recorded, 0 already there; 3 traces" in other.stdout


@pytest.mark.real
def test_traces_replay_the_default_models_engine():
    from hydra import compose, initialize_config_dir

    from ltd.config.files import CONFIG_PATH
    from ltd.config.models import load_model
    from ltd.core.tasks import load_questions
    from ltd.models.drafters import load_drafter

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
        cfg = compose("record", overrides=["model=smollm2-135m"])
    target, drafter = load_model(cfg)
    prompt = target.encode_chat([{"role": "user", "content": load_questions(cfg.task.path, 1)[0].turns[0]}])
    check_replay_equals_engine(target.decoder, drafter, prompt, 24, max_depth=4, top_k=4)
    self_drafter = load_drafter(target, "draft_lm", source=cfg.model.source)
    assert check_replay_equals_engine(target.decoder, self_drafter, prompt, 24, max_depth=4, top_k=4) > 20
