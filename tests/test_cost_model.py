"""make profile: the cost model is measured with the real engine parts, saved, loaded, and priced
by interpolation that reproduces every measured point."""
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import save_tiny_checkpoint
from ltd.errors import LtdError
from ltd.models.drafters import load_drafter
from ltd.models.targets import load_target
from ltd.traces.cost_check import priced_cycles
from ltd.traces.cost_model import CostModel
from ltd.traces.profiler import measure_cost_model


def hand_made() -> CostModel:
    return CostModel(model="m", drafter="eagle3", device="cpu", threads=1, top_k=4, contexts=[100, 300],
                     verify_sizes=[1, 3], verify_s=[[1.0, 2.0], [3.0, 5.0]], update_s=[0.1, 0.3],
                     expand_s=[[0.2, 0.4], [0.6, 0.8]])


def test_prices_reproduce_the_measured_points_and_interpolate_between():
    costs = hand_made()
    assert costs.verify_seconds(3, 300) == 5.0 and costs.verify_seconds(1, 100) == 1.0
    assert costs.verify_seconds(2, 200) == pytest.approx((1.5 + 4.0) / 2)
    assert costs.verify_seconds(5, 100) == pytest.approx(3.0)  # extrapolated from the last two sizes
    assert costs.draft_seconds(1, 100) == pytest.approx(0.1)
    assert costs.draft_seconds(3, 300) == pytest.approx(0.3 + 0.6 + 0.8)
    assert costs.max_depth == 3
    with pytest.raises(LtdError, match="covers depths 1 to 3, not 4"):
        costs.draft_seconds(4, 100)
    falling = CostModel(model="m", drafter="d", device="cpu", threads=1, top_k=4, contexts=[100],
                        verify_sizes=[1, 2], verify_s=[[5.0, 1.0]], update_s=[0.1], expand_s=[[0.2]])
    assert falling.verify_seconds(10, 100) == 0.0  # never a negative time


def test_batched_prices_equal_one_at_a_time():
    costs = hand_made()
    sizes, depths = torch.tensor([0, 1, 2, 3, 7, 2]), torch.tensor([1, 2, 3, 1, 2, 3])
    contexts = torch.tensor([50, 100, 200, 300, 400, 1000])
    assert costs.verify_seconds_batch(sizes, contexts).tolist() == pytest.approx(
        [costs.verify_seconds(int(v), int(c)) for v, c in zip(sizes, contexts)])
    assert costs.draft_seconds_batch(depths, contexts).tolist() == pytest.approx(
        [costs.draft_seconds(int(d), int(c)) for d, c in zip(depths, contexts)])
    assert costs.verify_seconds_batch(torch.tensor([2]), torch.tensor([200])).item() == pytest.approx(2.75)


def test_evaluated_cycles_are_set_against_their_prices():
    """Cycles timed exactly as priced read 1.0; a verification that took twice its price shows in
    its own column and in the ratio; autoregressive steps (depth 0) are not priced."""
    costs = hand_made()
    cycles = pd.DataFrame({"method": ["autoregressive", "ltd", "ltd", "slow"], "depth": [0, 1, 3, 1],
                           "verify_size": [0, 1, 3, 3], "context_length": [100, 100, 300, 100],
                           "draft_s": [0.0, 0.1, 1.7, 0.1], "verify_s": [0.9, 1.0, 5.0, 4.0]})
    ltd, slow = priced_cycles(cycles, costs)
    assert ltd["method"] == "ltd" and ltd["cycles"] == 2
    assert ltd["draft ms"] == pytest.approx(ltd["draft priced"]) == pytest.approx(900.0)
    assert ltd["verify ms"] == pytest.approx(3000.0) and ltd["measured / priced"] == pytest.approx(1.0)
    assert slow["verify priced"] == pytest.approx(2000.0) and slow["verify ms"] == pytest.approx(4000.0)
    assert slow["measured / priced"] == pytest.approx(4.1 / 2.1)
    assert priced_cycles(cycles[cycles["method"] == "autoregressive"], costs) == []


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
    costs = measure_cost_model(target, drafter, kind, 1, [16, 64], [1, 4, 8], top_k=3, max_depth=4, repeats=2,
                               progress=lambda: rounds.append(1))
    assert len(rounds) == 2 * 3
    assert len(costs.verify_s) == 2 and all(len(row) == 3 for row in costs.verify_s)
    assert len(costs.expand_s) == 2 and all(len(row) == 3 for row in costs.expand_s)
    assert all(t > 0 for row in costs.verify_s + costs.expand_s for t in row) and min(costs.update_s) > 0
    assert costs.draft_seconds(4, 40) > costs.draft_seconds(1, 40)
    with pytest.raises(LtdError, match="profiling needs .* positions"):
        measure_cost_model(target, drafter, kind, 1, [250], [64], top_k=3, max_depth=4, repeats=1)


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
