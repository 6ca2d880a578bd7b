"""Configs compose, and a user's mistake in them or on the command line gets one clear line."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ltd.cli.app import check_choices
from ltd.config.files import CONFIG_PATH
from ltd.config.models import drafter_job
from ltd.config.schema import SCHEMAS, check_config
from ltd.controllers.methods import build_controller
from ltd.core.errors import LtdError
from ltd.core.tasks import load_questions
from ltd.models.decoder import FAMILIES
from ltd.models.targets import load_target

MODELS = sorted(p.stem for p in (Path(CONFIG_PATH) / "model").glob("*.yaml"))
PAPER_MODELS = ["deepseek-r1-distill-llama-8b", "llama-3.1-8b", "qwen3-14b", "qwen3-32b", "vicuna-13b"]


def compose_job(name: str, overrides: list[str] = ()):
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
        return compose(name, overrides=list(overrides))


CPU_MODELS = ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-gguf", "smollm2-135m"]


def test_the_paper_models_and_the_cpu_ones_exist():
    assert MODELS == sorted(PAPER_MODELS + CPU_MODELS)


def test_a_model_chooses_its_drafter_unless_the_user_does():
    """The 1.5B drafts with its 0.5B sibling (a model config of its own, in wheel parts); the others
    with an EAGLE-3 head; drafter= on the command line wins."""
    from ltd.config.models import draft_lm_settings, identities

    cfg = check_config(compose_job("decode", ["model=qwen2.5-coder-1.5b"]), "decode")
    assert (cfg.drafter.kind, cfg.drafter.model) == ("draft_lm", "qwen2.5-coder-0.5b")
    draft = draft_lm_settings(cfg)
    assert draft["source"] == "parts:qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" and draft["parts"].count == 6
    model, drafter = identities(cfg)  # known from the configs alone: nothing is fetched
    assert model["weights"] == "sha256:cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert drafter["kind"] == "draft_lm" and drafter["weights"] == f"sha256:{draft['parts'].sha256}"
    assert compose_job("decode", ["model=qwen2.5-coder-1.5b", "drafter=eagle3"]).drafter.kind == "eagle3"
    assert all(compose_job("decode", [f"model={m}"]).drafter.kind == "eagle3" for m in MODELS
               if not m.startswith("qwen2.5-coder-1.5b"))


def test_the_gguf_model_is_the_same_file_on_its_blocks_with_its_own_name():
    """Every artefact is keyed and named by the model's name: the blocks' tuned tree, traces and
    policies are not the fp32 model's. It drafts with the 0.5B in ltd's Q4_K blocks."""
    from ltd.config.files import model_config
    from ltd.config.models import identities

    dense, blocks = (check_config(compose_job("decode", [f"model={m}"]), "decode")
                     for m in ("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-gguf"))
    assert (blocks.model.name, blocks.model.quantize, blocks.drafter.quantize) == ("qwen2.5-coder-1.5b-gguf", "gguf", "q4_k")
    assert blocks.model.source == dense.model.source and blocks.model.parts == dense.model.parts
    assert model_config("qwen2.5-coder-1.5b-gguf").parts.sha256 == dense.model.parts.sha256
    (model, drafter), (dense_model, dense_drafter) = identities(blocks), identities(dense)
    assert model["quantize"] == "gguf-blocks" and "quantize" not in dense_model
    assert drafter["quantize"] == "q4k-blocks" and dense_drafter["quantize"] == "int8-rows"


@pytest.mark.parametrize("job", ["decode", "bench_decode", "train_drafter"])
@pytest.mark.parametrize("model", MODELS)
def test_every_model_composes_with_every_job(job, model):
    cfg = compose_job(job, [f"model={model}"])
    assert cfg.model.name == model
    assert cfg.model.family in FAMILIES
    if model in PAPER_MODELS:
        assert cfg.model.eagle3 and cfg.model.device == "cuda"
    if "controller" in cfg:
        assert build_controller(OmegaConf.to_container(cfg.controller, resolve=True)).verify == 60


@pytest.mark.parametrize("drafter", ["eagle3", "eagle3_tiny"])
def test_drafter_training_settings_compose(drafter):
    job = drafter_job(compose_job("train_drafter", [f"drafter={drafter}"]).drafter)
    assert all((Path(CONFIG_PATH).parent / path).is_file() for path in job.corpus)
    assert not any("bench" in path for path in job.corpus)  # never train on an evaluation task
    assert job.eval_tree == ((8, 10, 60) if drafter == "eagle3" else (3, 4, 8))
    assert job.train.epochs == (4 if drafter == "eagle3" else 2)


def test_drafter_training_seed_follows_the_drafter_seed():
    job = drafter_job(compose_job("train_drafter", ["drafter=eagle3_tiny", "drafter.seed=7"]).drafter)
    assert job.train.seed == 7


@pytest.mark.parametrize("task", ["mt_bench", "humaneval", "gsm8k", "alpaca", "qa", "sum", "mmlu"])
def test_tasks_point_at_shipped_data(task):
    cfg = compose_job("decode", [f"task={task}"])
    assert set(cfg.task) == {"name", "path", "per_category"}  # every task config has the same keys
    path = Path(CONFIG_PATH).parent / cfg.task.path
    assert path.is_file()
    assert load_questions(path, per_category=cfg.task.per_category)


def test_unknown_group_option_is_one_line():
    with pytest.raises(LtdError, match=r"unknown model 'foo'; choose from: .*smollm2-135m"):
        check_choices(["model=foo"], "results")
    with pytest.raises(LtdError, match="unknown task 'nope'"):
        check_choices(["task=gsm8k,nope"], "results")
    check_choices(["model=smollm2-135m,qwen3-14b", "questions=2", "controller.depth=3"], "results")


def test_entry_point_reports_bad_input_in_one_line():
    result = subprocess.run([sys.executable, "-m", "ltd.cli.decode", "model=foo"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown model 'foo'; choose from: " + ", ".join(MODELS)
    ]


def test_missing_sources_are_one_line(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail fast, no network retries
    with pytest.raises(LtdError, match="GGUF file not found"):
        load_target("x", str(tmp_path / "missing.gguf"))
    with pytest.raises(LtdError, match="model package 'no_such_package' is not installed"):
        load_target("x", "pypi:no_such_package/model.gguf")
    with pytest.raises(LtdError, match="cannot load model 'no-such-org/no-such-model'"):
        load_target("x", "no-such-org/no-such-model")
    with pytest.raises(LtdError, match="asks for a CUDA GPU"):
        load_target("x", "no-such-org/no-such-model", device="cuda")


@pytest.mark.parametrize("job", sorted(SCHEMAS))
def test_every_job_config_passes_its_schema(job):
    """Each entry point's composed config, as a user gets it with no override, passes its check."""
    check_config(compose_job(job), job)


@pytest.mark.parametrize("resps", ["cpu", "paper"])
def test_resps_settings_compose_with_the_papers_ppo(resps):
    from omegaconf import OmegaConf

    settings = OmegaConf.to_object(check_config(compose_job("train_resps", [f"resps={resps}"]), "train_resps").resps)
    settings.validate()
    ppo = settings.ppo
    assert (ppo.epochs, ppo.lr, ppo.gamma, ppo.lmbda, ppo.entropy_coeff) == (4, 3e-4, 0.95, 0.9, 0.1)
    assert settings.hidden == (128, 128) and settings.persistence == 10
    assert settings.bins == ("cost_model" if resps == "cpu" else "paper")
    # The paper's 64 windows an update (32 a minibatch) online; replay collects 64 rows at once.
    assert (settings.environment, ppo.rollout, ppo.minibatch) == (
        ("replay", 1024, 256) if resps == "cpu" else ("online", 64, 32))


def test_make_fetch_prints_where_the_weights_are_and_a_hub_failure_is_one_line(tmp_path):
    """make fetch: the model's weights (here a checkpoint directory, as given; a hub id fetched at
    its revision), nothing loaded; a hub model it cannot reach is one line naming it, exit 2."""
    from conftest import save_tiny_checkpoint

    save_tiny_checkpoint(tmp_path / "model")
    fetch = lambda *args, **env: subprocess.run([sys.executable, "-m", "ltd.cli.fetch", *args], capture_output=True,
                                                text=True, env={**os.environ, **env}, cwd=tmp_path)
    found = fetch("model=smollm2-135m", f"model.source={tmp_path / 'model'}")
    assert found.returncode == 0 and found.stdout == f"smollm2-135m: {tmp_path / 'model'}\n", found.stderr
    gated = fetch("model=llama-3.1-8b", "model.revision=0123abc", HF_HUB_OFFLINE="1")
    lines = gated.stderr.strip().splitlines()
    assert gated.returncode == 2 and len(lines) == 1, gated.stderr
    assert lines[0].startswith("error: cannot load model 'meta-llama/Llama-3.1-8B-Instruct'")
    unknown = fetch("model=nope")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown model 'nope'; choose from: ")
