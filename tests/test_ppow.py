"""PPOW (make drafter-rl) on a tiny model: rewards, window priority, one step, resume, losslessness,
the pipeline and its configs."""
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from test_drafter_training import fresh_head, shards_for, tiny_job

from conftest import save_tiny_checkpoint
from ltd.config.files import CONFIG_PATH, ppow_variants
from ltd.core.errors import LtdError
from ltd.core.provenance import Provenance
from ltd.core.tasks import Question
from ltd.core.tracking import LoggerSettings, Tracker
from ltd.decoding.controller import StaticTree
from ltd.decoding.engine import Engine
from ltd.drafter import ppow
from ltd.drafter.loop import collate, rope_for, train
from ltd.drafter.ppow import PPOWSettings, Rollout, chain_pass, context_pass, ppow_loss, tune
from ltd.drafter.ppow_rewards import (accepted_length, first_token_gap, speedup_reward, token_criticality,
                                      window_priority, window_rewards)
from ltd.jobs import ppow as ppow_pipeline
from ltd.jobs.drafter import train_drafter
from ltd.models.eagle3 import Eagle3Drafter, Eagle3Head
from ltd.models.targets import load_target

SMALL = dict(window=3, group=4, prefixes=4, batch_tokens=512, checkpoint_every=100)


def test_rewards_on_hand_made_windows():
    continuation = torch.tensor([5, 6, 7, 8])
    drafted = torch.tensor([[5, 6, 7, 8], [5, 6, 9, 9], [1, 2, 3, 4], [2, 2, 2, 2], [9, 9, 9, 9]])
    accepted = accepted_length(drafted, continuation)
    assert accepted.tolist() == [4, 2, 0, 0, 0]
    torch.testing.assert_close(speedup_reward(accepted, 0.1), torch.tensor([4 / 1.4, 2 / 1.2, 0, 0, 0]))
    # the target preferred 5 (p 0.6); 1 was a near miss (p 0.3), 2 a far one (p 0.05), 9 outside its top-k
    top_ids, top_probs = torch.tensor([5, 1, 2]), torch.tensor([0.6, 0.3, 0.05])
    gap = first_token_gap(drafted[:, 0], top_ids, top_probs)
    assert gap[0] == 0 and gap[2] == pytest.approx(math.log(2)) and gap[3] == pytest.approx(math.log(12))
    assert gap[4] == math.inf
    with_proximity = window_rewards(accepted, gap, 0.1, eta=0.2, epsilon=1.0, proximity=True)
    torch.testing.assert_close(with_proximity, torch.tensor([4 / 1.4, 2 / 1.2, 0.2, 0, 0]))
    without = window_rewards(accepted, gap, 0.1, eta=0.2, epsilon=1.0, proximity=False)
    torch.testing.assert_close(without, speedup_reward(accepted, 0.1))


def test_window_priority_ranks_a_planted_high_divergence_window_first():
    T, n, window = 64, 4, 5
    # everywhere: an unsure target (uniform over its top 4) and a drafter that agrees with it
    probs = torch.full((1, T, n), 1 / n)
    draft = torch.full((1, T, n), math.log(1 / n))
    # positions 30..34: a confident target and a drafter that puts almost nothing on its choice
    probs[0, 30:35] = torch.tensor([0.97, 0.01, 0.01, 0.01])
    draft[0, 30:35] = torch.log(torch.tensor([0.001, 0.333, 0.333, 0.333]))
    # positions 10..14: as divergent but the target unsure: ranks below
    probs[0, 10:15] = torch.tensor([0.4, 0.3, 0.2, 0.1])
    draft[0, 10:15] = torch.log(torch.tensor([0.001, 0.001, 0.001, 0.997]))
    criticality = token_criticality(probs, draft, vocab_size=1000)
    valid = torch.ones(1, T, dtype=torch.bool)
    valid[0, T - window + 1 :] = False
    priority = window_priority(criticality, valid, window)
    assert priority.argmax().item() == 30
    assert priority[0, 30] > priority[0, 10] > priority[0, 50]
    rows, starts = ppow.choose_prefixes(priority, 1, True, torch.Generator().manual_seed(0))
    assert (rows.item(), starts.item()) == (0, 30)


@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    save_tiny_checkpoint(directory)
    return load_target("tiny", str(directory), max_context=256)


@pytest.fixture
def tuned_setup(tiny_target, corpus, tmp_path):
    job = tiny_job(corpus)
    shards = shards_for(tiny_target, job, tmp_path / "features")
    head = fresh_head(tiny_target, job, shards)
    train(head, tiny_target.decoder.embed, shards=shards, settings=job.train, state_path=tmp_path / "supervised.pt",
          log=print)
    return head, shards


def test_one_step_moves_the_log_prob_of_a_rewarded_window_up(tiny_target, tuned_setup):
    head, shards = tuned_setup
    embed, settings = tiny_target.decoder.embed, PPOWSettings(**SMALL, kl_coeff=0.0, lr=1e-3)
    batch = collate(shards, [(0, 0)])
    cos, sin = rope_for(head, shards, settings.window + 1, "cpu")
    rows, starts = torch.tensor([0]), torch.tensor([int(batch.predicts_response[0].nonzero()[0])])

    def window_logprobs(drafted=None, generator=None):
        with torch.no_grad():
            hidden, context, _ = context_pass(head, embed, batch, cos, sin)
            return chain_pass(head, embed, hidden=hidden, context=context, rows=rows, starts=starts,
                              window=settings.window, group=settings.group, cos=cos, sin=sin, drafted=drafted,
                              generator=generator)

    drafted, before = window_logprobs(generator=torch.Generator().manual_seed(0))
    advantages = torch.tensor([[1.0, -1.0, 0.0, 0.0]])
    rollout = Rollout(rows, starts, drafted=drafted, logprobs=before, advantages=advantages,
                      counted=torch.ones_like(drafted, dtype=torch.bool), metrics={})
    optimizer = torch.optim.SGD(head.parameters(), lr=settings.lr)
    loss, _ = ppow_loss(head, embed, batch=batch, view=ppow.target_view(head, batch), rollout=rollout,
                        settings=settings, cos=cos, sin=sin)
    loss.backward()
    optimizer.step()
    _, after = window_logprobs(drafted)
    change = (after - before).sum(-1)[0]
    assert change[0] > 0 > change[1]


def test_resume_equals_uninterrupted(tiny_target, tuned_setup, tmp_path, monkeypatch):
    head, shards = tuned_setup
    embed, settings = tiny_target.decoder.embed, PPOWSettings(**{**SMALL, "checkpoint_every": 1}, steps=4, lr=1e-3)
    uninterrupted = Eagle3Head(head.config)
    uninterrupted.load_state_dict(head.state_dict())
    full = tune(uninterrupted, embed, shards=shards, settings=settings, gamma=0.1, state_path=tmp_path / "a.pt")

    real, calls = ppow.draw_windows, []

    def interrupted_at_step_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    resumed = Eagle3Head(head.config)
    resumed.load_state_dict(head.state_dict())
    monkeypatch.setattr(ppow, "draw_windows", interrupted_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        tune(resumed, embed, shards=shards, settings=settings, gamma=0.1, state_path=tmp_path / "b.pt")
    monkeypatch.setattr(ppow, "draw_windows", real)
    again = Eagle3Head(head.config)
    again.load_state_dict(head.state_dict())
    history = tune(again, embed, shards=shards, settings=settings, gamma=0.1, state_path=tmp_path / "b.pt")
    assert [r["step"] for r in history] == [r["step"] for r in full]
    assert [r["reward"] for r in history] == pytest.approx([r["reward"] for r in full])
    for name, value in uninterrupted.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value, rtol=1e-5, atol=1e-6)


def test_a_tuned_head_changes_and_still_decodes_losslessly(tiny_target, tuned_setup, tmp_path):
    head, shards = tuned_setup
    before = {k: v.clone() for k, v in head.state_dict().items()}
    tune(head, tiny_target.decoder.embed, shards=shards, settings=PPOWSettings(**SMALL, steps=3, lr=1e-2), gamma=0.1,
         state_path=tmp_path / "p.pt")
    assert any(not torch.equal(before[k], v) for k, v in head.state_dict().items())
    decoder = tiny_target.decoder
    engine = Engine(decoder, tiny_target.stop_token_ids,
                    Eagle3Drafter(head, decoder.embed, decoder.spec.num_layers, decoder.max_positions))
    prompt = tiny_target.encode_chat([{"role": "user", "content": "w7 w8 w9 w10"}])
    reference = engine.generate_autoregressive(prompt, 24).tokens
    assert engine.generate(prompt, StaticTree(4, 2, 6), 24).tokens == reference


def compose_ppow(*overrides):
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
        return compose("train_ppow", overrides=list(overrides))


def test_variants_compose_as_deltas_of_the_shared_settings():
    variants = ppow_variants(compose_ppow("variants=[full,no_proximity,no_windowing,no_both,cst]", "ppow.steps=7"))
    by_name = {v.name: v for v in variants}
    assert [(v.proximity, v.windowing) for v in variants[:4]] == [(True, True), (False, True), (True, False),
                                                                   (False, False)]
    assert by_name["cst"].method == "supervised" and by_name["cst"].optimizer_steps == 7 * by_name["full"].updates
    assert all(v.steps == 7 for v in variants)
    with pytest.raises(LtdError, match="unknown ppow 'no_such'"):
        ppow_variants(compose_ppow("variants=[no_such]"))
    with pytest.raises(LtdError, match="ppow.group must be >= 2"):
        ppow_variants(compose_ppow("ppow.group=1"))


def test_pipeline_trains_each_variant_once_and_compares_the_heads(tiny_target, corpus, tmp_path, monkeypatch):
    job = tiny_job(corpus)
    directory, _ = train_drafter(tiny_target, job, tmp_path / "ckpt")
    drafter = Eagle3Drafter(Eagle3Head.load(directory), tiny_target.decoder.embed,
                            tiny_target.decoder.spec.num_layers, tiny_target.decoder.max_positions)
    question = Question("q1", "writing", ["w7 w8 w9", "w10 w11"])
    monkeypatch.setattr(ppow_pipeline, "load_questions", lambda path, limit: [question])
    task = type("Task", (), {"name": "tiny", "path": "unused"})
    variants = [PPOWSettings(**SMALL, steps=2, name="full"), PPOWSettings(**SMALL, steps=2, name="cst",
                                                                          method="supervised", lr=1e-3)]
    identity = dict(model=tiny_target.identity, drafter={"kind": "x"}, machine={"threads": 1})
    ppow_job = ppow_pipeline.PPOWJob(job, variants, tasks=[task], questions=1, max_new_tokens=12, eval_tree=(3, 1, 3),
                                     root=str(tmp_path / "ckpt"), results=str(tmp_path / "results"), who=Provenance(**identity))
    logged = []
    with Tracker(LoggerSettings(kind="none"), tmp_path, job_type="t", name="t", group="t", tags=[],
                 config={}) as tracker:
        rows = ppow_pipeline.run(tiny_target, drafter, job=ppow_job, threads=1, run_dir=tmp_path / "run",
                                 tracker=tracker, log=logged.append)
    assert [r["head"] for r in rows] == ["supervised", "full", "cst"]
    assert all(r["lossless"] for r in rows)
    assert (tmp_path / "results" / "store.jsonl").read_text().count("\n") == 3
    logged.clear()
    with Tracker(LoggerSettings(kind="none"), tmp_path, job_type="t", name="t", group="t", tags=[],
                 config={}) as tracker:
        ppow_pipeline.run(tiny_target, drafter, job=ppow_job, threads=1, run_dir=tmp_path / "run", tracker=tracker,
                          log=logged.append)
    assert sum("reusing" in line for line in logged) == 2
