"""make drafter on a tiny model: features, training-time test, resume, the finished head."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from conftest import save_tiny_checkpoint
from ltd.config.files import CONFIG_PATH
from ltd.config.models import drafter_job
from ltd.core.errors import LtdError
from ltd.decoding.controller import StaticTree
from ltd.decoding.engine import Engine
from ltd.drafter import heads, loop
from ltd.drafter.corpus import load_corpus
from ltd.drafter.loop import train
from ltd.drafter.target_features import Sequence, load_shards, target_pass, write_shard
from ltd.drafter.ttt import unroll
from ltd.drafter.vocabulary import choose_vocabulary
from ltd.jobs import drafter as drafter_pipeline
from ltd.jobs.drafter import prepare_features, select_sequences, train_drafter
from ltd.models.decoder import rope_tables
from ltd.models.eagle3 import Eagle3Drafter, Eagle3Head, eagle3_feature_layers, head_config
from ltd.models.targets import load_target


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    save_tiny_checkpoint(directory)
    return str(directory)


@pytest.fixture(scope="module")
def tiny_target(tiny_checkpoint):
    return load_target("tiny", tiny_checkpoint, max_context=256)


@pytest.fixture(scope="module")
def bf16_target(tiny_checkpoint):
    return load_target("tiny", tiny_checkpoint, max_context=256, dtype="bfloat16")


def tiny_job(corpus: str, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
        cfg = compose("train_drafter", overrides=["drafter=eagle3_tiny", f"drafter.train.corpus=[{corpus}]",
                                                  *overrides])
    return drafter_job(cfg.drafter)


def shards_for(target, job, directory):
    sequences = select_sequences(target, load_corpus(job.corpus), job)
    return load_shards(directory, prepare_features(target, sequences, directory, job, print))


def fresh_head(target, job, shards):
    torch.manual_seed(0)
    head = Eagle3Head(head_config(target.config, job.draft_vocab_size))
    head.set_vocabulary(choose_vocabulary(shards, target.config.vocab_size, job.draft_vocab_size))
    return head


@pytest.mark.parametrize("responses", ["target", "corpus"])
def test_loss_falls_within_a_few_steps(tiny_target, corpus, tmp_path, responses):
    job = tiny_job(corpus, "drafter.train.epochs=6", "drafter.train.lr=3e-3", f"drafter.train.responses={responses}")
    shards = shards_for(tiny_target, job, tmp_path / "features")
    history = train(fresh_head(tiny_target, job, shards), tiny_target.decoder.embed, shards=shards, settings=job.train,
                    state_path=tmp_path / "state.pt", log=print)
    losses = [row["loss"] for row in history]
    assert len(losses) >= 6
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5  # from ~10.1 (near uniform) down


def test_resume_continues_from_the_saved_step(tiny_target, corpus, tmp_path, monkeypatch):
    job = tiny_job(corpus, "drafter.train.checkpoint_every=100")
    shards = shards_for(tiny_target, job, tmp_path / "features")
    embed = tiny_target.decoder.embed
    uninterrupted = fresh_head(tiny_target, job, shards)
    full = train(uninterrupted, embed, shards=shards, settings=job.train, state_path=tmp_path / "a.pt", log=print)

    real_loss, calls = loop.ttt_loss, []

    def interrupted_at_step_4(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(loop, "ttt_loss", interrupted_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(fresh_head(tiny_target, job, shards), embed, shards=shards, settings=job.train,
              state_path=tmp_path / "b.pt", log=print)
    assert torch.load(tmp_path / "b.pt", weights_only=False)["step"] == 4
    monkeypatch.setattr(loop, "ttt_loss", real_loss)

    resumed = fresh_head(tiny_target, job, shards)
    history = train(resumed, embed, shards=shards, settings=job.train, state_path=tmp_path / "b.pt", log=print)
    assert [row["step"] for row in history] == [row["step"] for row in full]
    for name, value in uninterrupted.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=1e-5, atol=1e-6)


def test_finished_head_is_lossless_in_the_engine_and_reused(tiny_target, corpus, tmp_path, monkeypatch):
    job = tiny_job(corpus)
    directory, metrics = train_drafter(tiny_target, job, tmp_path)
    assert 1.0 <= metrics["tau"] <= 1 + job.eval_tree[0]
    assert len(metrics["acceptance_by_depth"]) == job.eval_tree[0]

    head = Eagle3Head.load(directory)
    features = next((tmp_path / "tiny").glob("features-*"))
    shards = load_shards(features, len(list(features.glob("shard-*"))))
    vocabulary = choose_vocabulary(shards, tiny_target.config.vocab_size, job.draft_vocab_size)
    assert head.draft_to_target(torch.arange(job.draft_vocab_size)).tolist() == vocabulary.tolist()
    assert head.t2d.nonzero().squeeze(-1).tolist() == vocabulary.tolist()

    decoder = tiny_target.decoder
    drafter = Eagle3Drafter(head, decoder.embed, decoder.spec.num_layers, decoder.max_positions)
    engine = Engine(decoder, (), drafter)
    prompt = tiny_target.encode_chat([{"role": "user", "content": "hello world w7 w8"}])
    expected = engine.generate_autoregressive(prompt, 30).tokens
    for shape in [(3, 4, 8), (6, 10, 40)]:
        assert engine.generate(prompt, StaticTree(*shape), 30).tokens == expected

    monkeypatch.setattr(drafter_pipeline, "train", lambda *a, **k: pytest.fail("a finished head was retrained"))
    assert train_drafter(tiny_target, job, tmp_path) == (directory, metrics)


def test_features_accumulate_across_runs_with_a_larger_budget(tiny_target, corpus, tmp_path, monkeypatch):
    small, large = tiny_job(corpus, "drafter.train.max_tokens=300"), tiny_job(corpus, "drafter.train.max_tokens=900")
    shards_small, _ = drafter_pipeline.head_data(tiny_target, small, tmp_path)
    answered, real_pass = [], drafter_pipeline.target_pass

    def counting_pass(decoder, sequences, *args, **kwargs):
        answered.append(len(sequences))
        return real_pass(decoder, sequences, *args, **kwargs)

    monkeypatch.setattr(drafter_pipeline, "target_pass", counting_pass)
    shards_large, _ = drafter_pipeline.head_data(tiny_target, large, tmp_path)
    assert len(list((tmp_path / "tiny").glob("features-*"))) == 1  # one pool of shards
    full = len(shards_small) - 1  # the small run's last shard is cut short by its budget
    assert len(shards_large) > len(shards_small) and len(answered) == len(shards_large) - full
    for before, after in zip(shards_small[:full], shards_large):
        assert torch.equal(before["tokens"], after["tokens"])
    answered.clear()
    assert len(drafter_pipeline.head_data(tiny_target, small, tmp_path)[0]) == len(shards_small) and answered == []


def test_a_narrower_mlp_is_the_heads_own_and_part_of_its_key(tiny_target, corpus, tmp_path):
    default, narrow = tiny_job(corpus), tiny_job(corpus, "drafter.intermediate_size=16")
    assert narrow.intermediate_size == 16 and default.intermediate_size is None
    assert "intermediate_size" not in heads.head_key(tiny_target.identity, default)["job"]  # older heads stay valid
    assert heads.head_directory(tmp_path, "tiny", tiny_target.identity, narrow) != heads.head_directory(
        tmp_path, "tiny", tiny_target.identity, default)
    directory, _ = train_drafter(tiny_target, narrow, tmp_path)
    head = Eagle3Head.load(directory)
    assert head.midlayer.mlp.gate_proj.weight.shape == (16, tiny_target.config.hidden_size)


def test_damaged_files_of_the_drafter_pipeline_are_made_again(tiny_target, corpus, tmp_path, capsys):
    job = tiny_job(corpus)
    directory, metrics = train_drafter(tiny_target, job, tmp_path)
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    capsys.readouterr()
    assert train_drafter(tiny_target, job, tmp_path)[1]["tau"] == metrics["tau"]  # from the training state
    assert f"note: {directory} is damaged (Error while deserializing header" in capsys.readouterr().err
    Eagle3Head.load(directory)

    features = next((tmp_path / "tiny").glob("features-*"))
    shard = features / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:500])
    state = directory.parent / "training.pt"
    state.write_bytes(b"garbage")
    (directory / "metrics.json").unlink()  # the head is gone too: everything is made from the shards again
    train_drafter(tiny_target, job, tmp_path)
    err = capsys.readouterr().err
    assert f"note: {shard} is damaged (" in err and "the target produces it again" in err
    assert f"note: {state} is damaged (" in err and "training from the start" in err


SEQUENCES = [Sequence([2, 7, 9, 11, 1, 3, 40, 41], 6), Sequence([2, 5, 1, 3, 60, 61, 62, 63, 64, 65], 4),
             Sequence([2, 8, 1, 3], 4)]


def test_teacher_forcing_in_a_batch_equals_the_decoder_one_sequence_at_a_time(tiny_target):
    layers = eagle3_feature_layers(tiny_target.config.num_hidden_layers)
    shard = target_pass(tiny_target.decoder, SEQUENCES, layers, top_k=4, batch_size=3)  # left-padded together
    for i, sequence in enumerate(SEQUENCES):
        start, end = int(shard["offsets"][i]), int(shard["offsets"][i + 1])
        tiny_target.decoder.reset(64)
        logits, features = tiny_target.decoder(torch.tensor(sequence.tokens), feature_layers=layers)
        assert shard["tokens"][start:end].tolist() == sequence.tokens
        torch.testing.assert_close(shard["features"][start:end].float(), features, atol=2e-3, rtol=2e-3)
        assert shard["top_ids"][start:end, 0].tolist() == logits.argmax(-1).tolist()
        expected = [sequence.response_start - 1 <= p < len(sequence.tokens) - 1 for p in range(len(sequence.tokens))]
        assert shard["predicts_response"][start:end].tolist() == expected


def test_the_target_answers_as_greedy_decoding_does(tiny_target):
    """Self-distillation: each answer is the target's own greedy continuation, stopped at a stop
    token or at the length limit, whatever else shares its batch."""
    layers = eagle3_feature_layers(tiny_target.config.num_hidden_layers)
    prompts = [Sequence(s.tokens[: s.response_start], s.response_start) for s in SEQUENCES]
    engine = Engine(tiny_target.decoder, ())
    answers = [engine.generate_autoregressive(p.tokens, 12).tokens for p in prompts]
    stop = answers[0][5]  # the first answer stops there; the others run to the limit (or stop too)
    shard = target_pass(tiny_target.decoder, prompts, layers, top_k=4, batch_size=3, new_tokens=12, stop_ids=(stop,))
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        answer = answer[: answer.index(stop) + 1] if stop in answer else answer
        start, end = int(shard["offsets"][i]), int(shard["offsets"][i + 1])
        fed = prompt.tokens + answer[:-1]  # the last answer token is predicted, never fed
        assert shard["tokens"][start:end].tolist() == fed
        assert shard["top_ids"][start:end, 0].tolist()[len(prompt.tokens) - 1 :] == answer
        tiny_target.decoder.reset(64)
        _, features = tiny_target.decoder(torch.tensor(fed), feature_layers=layers)
        torch.testing.assert_close(shard["features"][start:end].float(), features, atol=2e-3, rtol=2e-3)
        assert shard["predicts_response"][start:end].tolist() == [p >= len(prompt.tokens) - 1 for p in range(len(fed))]


def test_training_time_test_unrolls_like_the_drafter_drafts():
    """Step 0 of the unrolled head equals `update` over the context; step j equals `expand` of
    the depth-j node: training sees exactly what inference will do."""
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      head_dim=16)
    head = Eagle3Head(head_config(config, 101))
    for p in head.parameters():
        p.data.normal_(0, 0.2)
    embed, features, tokens = torch.randn(101, 64), torch.randn(1, 12, 192), torch.randint(0, 101, (1, 12))
    cos, sin = rope_tables(head.config, 64)
    with torch.no_grad():
        steps = list(unroll(head, embed, features=features, tokens=tokens, steps=3, cos=cos, sin=sin))
    drafter = Eagle3Drafter(head, embed, 4, 64)
    for t in (3, 7):
        drafter.reset(64)
        drafter.update(tokens[0, : t + 2], features[0, : t + 1], 5)
        torch.testing.assert_close(drafter.root_hidden[0], steps[0][0, t], atol=1e-5, rtol=1e-5)
        drafter.expand(tokens[0, t + 2 : t + 3], torch.tensor([-1]), 1, 5)
        drafter.expand(tokens[0, t + 3 : t + 4], torch.tensor([0]), 2, 5)
        torch.testing.assert_close(drafter.slot_hidden[0], steps[1][0, t], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(drafter.slot_hidden[1], steps[2][0, t], atol=1e-5, rtol=1e-5)


def test_bad_input_is_one_line(tiny_target, corpus, tmp_path):
    with pytest.raises(LtdError, match="corpus file not found: .*missing.json"):
        train_drafter(tiny_target, tiny_job(str(tmp_path / "missing.json")), tmp_path)
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(LtdError, match="holds no instruction/response examples"):
        train_drafter(tiny_target, tiny_job(str(empty)), tmp_path)
    with pytest.raises(LtdError, match=r"draft vocabulary \(500\) is larger than the target's \(101\)"):
        train_drafter(tiny_target, tiny_job(corpus, "drafter.draft_vocab_size=500"), tmp_path)
    with pytest.raises(LtdError, match="responses must be one of target, corpus; got 'people'"):
        train_drafter(tiny_target, tiny_job(corpus, "drafter.train.responses=people"), tmp_path)


def test_decoding_configs_find_the_trained_head(tiny_target, corpus, tmp_path):
    from ltd.config.models import eagle3_weights

    directory, _ = train_drafter(tiny_target, tiny_job(corpus), tmp_path)
    overrides = ["drafter=eagle3_tiny", f"drafter.train.corpus=[{corpus}]", f"drafter.root={tmp_path}",
                 "model=smollm2-135m", "model.name=tiny", f"model.source={tiny_target.source}",
                 "model.max_context=256"]
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
        cfg = compose("decode", overrides=overrides)
        other = compose("decode", overrides=overrides + ["drafter.train.epochs=7"])
    assert eagle3_weights(cfg) == str(directory)
    assert eagle3_weights(other) is None  # other settings: that head is not the one asked for


def train_and_check_the_head(target, job, root, monkeypatch):
    """train_drafter on `target` (any device, any dtype): the head trains in float32 on the
    target's device, is saved in float32, loads back, and drafts losslessly over that target.
    Returns the head's directory."""
    real_loss, seen = loop.ttt_loss, set()

    def watched(head, embed, *args, **kwargs):
        seen.update((p.dtype, p.device.type) for p in head.parameters())
        return real_loss(head, embed, *args, **kwargs)

    monkeypatch.setattr(loop, "ttt_loss", watched)
    directory, metrics = train_drafter(target, job, root)
    assert seen == {(torch.float32, target.decoder.device.type)}
    assert metrics["train_steps"] > 0 and 1.0 <= metrics["tau"] <= 1 + job.eval_tree[0]
    assert {t.dtype for t in load_file(directory / "model.safetensors").values()} == {torch.float32, torch.long,
                                                                                      torch.bool}

    decoder = target.decoder
    drafter = Eagle3Drafter(Eagle3Head.load(directory), decoder.embed, decoder.spec.num_layers,
                            decoder.max_positions)
    assert drafter.head.lm_head.weight.dtype == decoder.dtype
    engine = Engine(decoder, (), drafter)
    prompt = target.encode_chat([{"role": "user", "content": "hello world w7 w8"}])
    expected = engine.generate_autoregressive(prompt, 30).tokens
    for shape in [(3, 4, 8), (6, 10, 40)]:
        assert engine.generate(prompt, StaticTree(*shape), 30).tokens == expected
    return directory


def test_a_bfloat16_target_trains_a_float32_head_that_drafts_losslessly(bf16_target, corpus, tmp_path,
                                                                         monkeypatch):
    job = tiny_job(corpus, "drafter.train.epochs=6", "drafter.train.lr=3e-3")
    directory = train_and_check_the_head(bf16_target, job, tmp_path, monkeypatch)
    history = torch.load(directory.parent / "training.pt", weights_only=False)["history"]
    losses = [row["loss"] for row in history]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5


@pytest.mark.parametrize("new_tokens", [0, 6])
def test_a_bfloat16_target_writes_shards_as_a_float32_one_does(tiny_target, bf16_target, tmp_path, new_tokens):
    layers = eagle3_feature_layers(tiny_target.config.num_hidden_layers)
    shards = []
    for target in (tiny_target, bf16_target):
        path = tmp_path / f"{target.decoder.dtype}.safetensors"
        write_shard(path, target_pass(target.decoder, SEQUENCES, layers, top_k=4, batch_size=3, new_tokens=new_tokens))
        shards.append(load_file(path))
    fp32, bf16 = shards
    assert {k: (v.shape, v.dtype) for k, v in bf16.items()} == {k: (v.shape, v.dtype) for k, v in fp32.items()}
    assert fp32["features"].dtype == fp32["top_probs"].dtype == torch.float16
    if not new_tokens:  # the same text read: the same tokens, nearly the same features
        assert bf16["tokens"].tolist() == fp32["tokens"].tolist()
        torch.testing.assert_close(bf16["features"].float(), fp32["features"].float(), atol=0.1, rtol=0.05)


@pytest.mark.cuda  # skipped, with the reason, where there is no GPU (conftest)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_a_target_on_cuda_trains_a_head_that_drafts_losslessly(tiny_checkpoint, corpus, tmp_path, monkeypatch, dtype):
    target = load_target("tiny", tiny_checkpoint, max_context=256, dtype=dtype, device="cuda")
    train_and_check_the_head(target, tiny_job(corpus), tmp_path, monkeypatch)
