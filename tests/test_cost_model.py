"""make profile: the cost model is measured with the real engine parts, saved, loaded, and priced
by interpolation that reproduces every measured point."""
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import save_tiny_checkpoint
from ltd.core.errors import LtdError
from ltd.models.drafters import load_drafter
from ltd.models.targets import load_target
from ltd.traces.cost_check import price_drift, priced_cycles
from ltd.traces.cost_model import CostModel
from ltd.traces.profiler import cycle_overheads, cycle_shapes, measure_cost_model


def hand_made() -> CostModel:
    return CostModel(model="m", drafter="eagle3", device="cpu", threads=1, top_k=4, contexts=[100, 300],
                     verify_sizes=[1, 3], verify_s=[[1.0, 2.0], [3.0, 5.0]],
                     absorb_s=[[0.1, 0.15, 0.2, 0.25], [0.3, 0.35, 0.4, 0.45]], expand_s=[[0.2, 0.4], [0.6, 0.8]],
                     overhead_s=[[0.01, 0.02], [0.03, 0.05]])


def test_prices_reproduce_the_measured_points_and_interpolate_between():
    costs = hand_made()
    assert costs.verify_seconds(3, 300) == 5.0 and costs.verify_seconds(1, 100) == 1.0
    assert costs.verify_seconds(2, 200) == pytest.approx((1.5 + 4.0) / 2)
    assert costs.verify_seconds(5, 100) == pytest.approx(3.0)  # extrapolated from the last two sizes
    assert costs.draft_seconds(1, 100, 0) == pytest.approx(0.1)
    assert costs.draft_seconds(3, 300, 0) == pytest.approx(0.3 + 0.6 + 0.8)
    assert costs.overhead_seconds(1, 100) == 0.01 and costs.overhead_seconds(3, 300) == 0.05
    assert costs.overhead_seconds(1, 200) == pytest.approx(0.02)
    assert costs.overhead_seconds(2, 100) == pytest.approx(0.015)
    assert costs.max_depth == 3
    with pytest.raises(LtdError, match="covers depths 1 to 3, not 4"):
        costs.draft_seconds(4, 100, 0)
    falling = CostModel(model="m", drafter="d", device="cpu", threads=1, top_k=4, contexts=[100],
                        verify_sizes=[1, 2], verify_s=[[5.0, 1.0]], absorb_s=[[0.1, 0.2, 0.3]], expand_s=[[0.2]],
                        overhead_s=[[0.0, 0.0]])
    assert falling.verify_seconds(10, 100) == 0.0  # never a negative time
    with pytest.raises(LtdError, match="need a time for every verify size"):
        CostModel(model="m", drafter="d", device="cpu", threads=1, top_k=4, contexts=[100], verify_sizes=[1, 2],
                  verify_s=[[5.0, 1.0]], absorb_s=[[0.1, 0.2, 0.3]], expand_s=[[0.2]], overhead_s=[[0.0]])


def test_a_cycle_drafts_the_absorption_of_what_it_accepts():
    """A cycle accepting L tokens is priced for the drafter absorbing L + 1 (the next cycle does it),
    then its own further levels; counts past the measured ones cost the most measured."""
    costs = hand_made()
    assert [costs.draft_seconds(2, 100, a) for a in range(4)] == pytest.approx([0.3, 0.35, 0.4, 0.45])
    assert costs.draft_seconds(3, 300, 2) == pytest.approx(0.4 + 0.6 + 0.8)
    assert costs.draft_seconds(1, 200, 1) == pytest.approx((0.15 + 0.35) / 2)
    assert costs.draft_seconds(2, 100, 9) == pytest.approx(0.25 + 0.2)
    with pytest.raises(LtdError, match="accepts 0 or more draft tokens, not -1"):
        costs.draft_seconds(2, 100, -1)


def test_shifted_prices_sum_to_what_the_engine_spends_over_an_answer():
    """The engine's cycle k absorbs what cycle k - 1 accepted; the cost model prices it on cycle
    k - 1. Over any answer the two sum the same drafting, once the engine's first absorption (the
    prompt: the drafter's prefill, priced by neither) is traded for the one after its last cycle
    (priced by the shift; the engine would make it if decoding went on). Absorbing does not depend
    on the context here, as the engine absorbs a cycle's tokens a few positions later."""
    generator = torch.Generator().manual_seed(0)
    absorb = (0.1 * torch.rand(5, generator=generator, dtype=torch.float64)).tolist()
    costs = CostModel(model="m", drafter="d", device="cpu", threads=1, top_k=2, contexts=[10, 100, 400],
                      verify_sizes=[0], verify_s=[[1.0], [2.0], [4.0]], absorb_s=[absorb] * 3,
                      expand_s=[[0.2, 0.3, 0.1], [0.4, 0.5, 0.6], [0.9, 0.7, 1.1]], overhead_s=[[0.0]] * 3)
    for _ in range(100):
        cycles = int(torch.randint(1, 30, (1,), generator=generator))
        depths = torch.randint(1, costs.max_depth + 1, (cycles,), generator=generator)
        accepted = (torch.rand(cycles, generator=generator) * (depths + 1)).long()  # 0..depth
        contexts = 10 + torch.cat((torch.zeros(1, dtype=torch.long), (accepted + 1).cumsum(0)[:-1]))
        shifted = float(costs.draft_seconds_batch(depths, contexts, accepted).sum())
        levels = costs.draft_seconds_batch(depths, contexts, torch.zeros_like(accepted)) - absorb[0]
        engine = float(levels.sum()) + sum(absorb[int(a)] for a in accepted[:-1])  # cycles 2.. absorb a + 1
        assert shifted == pytest.approx(engine + absorb[int(accepted[-1])])


def test_batched_prices_equal_one_at_a_time():
    costs = hand_made()
    sizes, depths = torch.tensor([0, 1, 2, 3, 7, 2]), torch.tensor([1, 2, 3, 1, 2, 3])
    contexts = torch.tensor([50, 100, 200, 300, 400, 1000])
    assert costs.verify_seconds_batch(sizes, contexts).tolist() == pytest.approx(
        [costs.verify_seconds(int(v), int(c)) for v, c in zip(sizes, contexts)])
    accepted = torch.tensor([0, 2, 1, 0, 5, 3])
    assert costs.draft_seconds_batch(depths, contexts, accepted).tolist() == pytest.approx(
        [costs.draft_seconds(int(d), int(c), int(a)) for d, c, a in zip(depths, contexts, accepted)])
    assert costs.verify_and_overhead_seconds_batch(sizes, contexts).tolist() == pytest.approx(
        [costs.verify_seconds(int(v), int(c)) + costs.overhead_seconds(int(v), int(c))
         for v, c in zip(sizes, contexts)])
    assert costs.verify_seconds_batch(torch.tensor([2]), torch.tensor([200])).item() == pytest.approx(2.75)


def test_evaluated_cycles_are_set_against_their_prices():
    """Cycles timed exactly as priced (drafting with what each accepted, verifying with the
    overhead) read 1.0; a verification that took twice its price shows in its own column and in
    the ratio; autoregressive steps (depth 0) and a turn's first cycle (the drafter's prefill) are
    not priced."""
    costs = hand_made()
    cycles = pd.DataFrame({"method": ["autoregressive", "ltd", "ltd", "ltd", "slow"], "cycle": [1, 0, 1, 2, 1],
                           "depth": [0, 1, 1, 3, 1], "verify_size": [0, 1, 1, 3, 3], "accepted": [0, 0, 0, 2, 1],
                           "context_length": [100, 90, 100, 300, 100],
                           "draft_s": [0.0, 9.0, 0.1, 1.8, 0.15], "verify_s": [0.9, 1.01, 1.01, 5.05, 4.04]})
    ltd, slow = priced_cycles(cycles, costs)
    assert ltd["method"] == "ltd" and ltd["cycles"] == 2
    assert ltd["draft ms"] == pytest.approx(ltd["draft priced"]) == pytest.approx(950.0)
    assert ltd["verify ms"] == pytest.approx(3030.0) and ltd["measured / priced"] == pytest.approx(1.0)
    assert slow["verify priced"] == pytest.approx(2020.0) and slow["verify ms"] == pytest.approx(4040.0)
    assert slow["measured / priced"] == pytest.approx(4.19 / 2.17)
    assert priced_cycles(cycles[cycles["method"] == "autoregressive"], costs) == []
    # A replayed method off by more than 5 % is one line: the profile no longer matches the machine.
    # A method the replay does not hold (wider trees) says nothing about the profile.
    assert price_drift([ltd, slow], replayed=("ltd", "slow")) == "the evaluated cycles took 1.00x-1.93x their price"
    assert price_drift([ltd, slow], replayed=("ltd",)) is None and price_drift([], replayed=("ltd",)) is None
    assert price_drift([{"method": "ltd", "measured / priced": 0.93}],
                       replayed=("ltd",)) == "the evaluated cycles took 0.93x their price"


def test_the_overhead_is_a_line_in_v_through_each_sizes_cycles():
    """The profile times an engine cycle for every V > 0, drafted by the shallowest tree holding it;
    a V's cycles give the median of their time less their priced passes, and the overhead is the
    line through those medians (none at V 0; past the deepest tree, the line goes on)."""
    assert cycle_shapes([0, 1, 2, 4, 12, 64], top_k=3, max_depth=3) == [(1, 1), (1, 2), (2, 4), (2, 12), (3, 21)]
    costs = CostModel(model="m", drafter="d", device="cpu", threads=1, top_k=3, contexts=[100],
                      verify_sizes=[0, 1, 4, 64],
                      verify_s=[[1.0, 1.1, 1.4, 7.4]], absorb_s=[[0.1, 0.2, 0.3, 0.4]], expand_s=[[0.2, 0.2]],
                      overhead_s=[[0.0] * 4])
    line = lambda v: 0.002 + 0.001 * v
    timed = [(100, 1, 1, 1, 0.1 + 1.1 + line(1) + noise) for noise in (0.0, -0.001, 0.009)]
    timed += [(100, 2, 2, 4, 0.2 + 0.2 + 1.4 + line(4) + noise) for noise in (0.0, 0.01, -0.5)]
    timed += [(100, 1, 3, 21, 0.1 + 0.4 + 3.1 + line(21))]
    assert cycle_overheads(costs, [timed]) == [pytest.approx([0.0, line(1), line(4), line(64)])]
    falling = [(100, 1, 1, 1, 1.2 + 0.01), (100, 1, 3, 21, 3.6 - 0.01)]
    assert cycle_overheads(costs, [falling])[0][-1] == 0.0  # never below 0
    assert cycle_overheads(costs, [[]]) == [[0.0] * 4]  # a profile of V 0 alone times no cycle


def test_save_and_load_round_trip(tmp_path):
    costs = hand_made()
    costs.save(tmp_path / "p.json")
    assert CostModel.load(tmp_path / "p.json") == costs
    with pytest.raises(LtdError, match="make profile measures one"):
        CostModel.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(LtdError, match="is not a cost model"):
        CostModel.load(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    save_tiny_checkpoint(directory)
    return directory


@pytest.mark.parametrize("kind", ["eagle3", "self"])
def test_profile_measures_every_cell_on_a_tiny_model(tiny_model_dir, kind):
    target = load_target("tiny", str(tiny_model_dir), max_context=256)
    drafter = (load_drafter(target, "eagle3", None, 64, 0) if kind == "eagle3"
               else load_drafter(target, "draft_lm", source=str(tiny_model_dir)))
    rounds = []
    costs = measure_cost_model(target, drafter, drafter_name=kind, threads=1, contexts=[16, 64], verify_sizes=[1, 4, 8],
                               top_k=3, max_depth=4, repeats=2, progress=lambda: rounds.append(1))
    assert len(rounds) == 2 * 3
    assert len(costs.verify_s) == 2 and all(len(row) == 3 for row in costs.verify_s)
    assert len(costs.expand_s) == 2 and all(len(row) == 3 for row in costs.expand_s)
    assert len(costs.absorb_s) == 2 and all(len(row) == 5 for row in costs.absorb_s)  # 1 to max_depth + 1 tokens
    assert all(t > 0 for row in costs.verify_s + costs.expand_s + costs.absorb_s for t in row)
    assert len(costs.overhead_s) == 2 and all(len(row) == 3 and min(row) >= 0 for row in costs.overhead_s)
    assert costs.draft_seconds(4, 40, 0) > costs.draft_seconds(1, 40, 0)
    with pytest.raises(LtdError, match="profiling needs .* positions"):
        measure_cost_model(target, drafter, drafter_name=kind, threads=1, contexts=[250], verify_sizes=[64], top_k=3,
                           max_depth=4, repeats=1)


def test_make_profile_prints_and_saves(tiny_model_dir, tmp_path):
    output = tmp_path / "profile.json"
    result = subprocess.run(
        [sys.executable, "-m", "ltd.cli.profile", "model=smollm2-135m", "model.name=tiny", f"model.source={tiny_model_dir}",
         "model.max_context=256", "drafter.draft_vocab_size=64", f"drafter.root={tmp_path}", "contexts=[16,32]",
         "verify_sizes=[1,4]", "top_k=3", "max_depth=3", "repeats=1", "threads=1", f"output={output}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    costs = CostModel.load(output)
    assert (costs.model, costs.contexts, costs.verify_sizes, costs.max_depth) == ("tiny", [16, 32], [1, 4], 3)
    assert "V=4" in result.stdout and f"written: {output}" in result.stdout


def test_a_saved_cost_model_serves_until_it_does_not_and_a_busy_profile_is_not_saved(tmp_path, monkeypatch):
    """ensure_cost_model: measured once and reused; measured again when `reuse` refuses the saved one;
    with a guard that finds the machine busy and requires quiet, nothing is saved."""
    from ltd.core.artefacts import Artefact
    from ltd.eval.machine_load import LoadGuard
    from ltd.jobs.profile import ensure_cost_model

    file = Artefact(tmp_path / "profile.json", {"artefact": "cost model", "model": "m"}, "cost model")
    measured = []
    measure = lambda saved: measured.append(1) or hand_made()
    costs, verdict = ensure_cost_model(file, measure)
    assert measured == [1] and verdict is None and file.fresh and costs.verify_sizes == hand_made().verify_sizes
    assert ensure_cost_model(file, measure)[0].verify_s == costs.verify_s and measured == [1]
    ensure_cost_model(file, measure, reuse=lambda saved: False)
    assert measured == [1, 1]

    monkeypatch.setattr(LoadGuard, "before_timing", lambda self, seconds=1.0: None)
    monkeypatch.setattr(LoadGuard, "check", lambda self, load, what: (_ for _ in ()).throw(LtdError(f"{what}: busy")))
    other = Artefact(tmp_path / "other.json", {"artefact": "cost model", "model": "n"}, "cost model")
    with pytest.raises(LtdError, match="the profile: busy"):
        ensure_cost_model(other, measure, guard=LoadGuard(0.1, True))
    assert not other.path.exists() and not other.key_path.exists()
