"""What every entry point shares: where the configs live, run directories, threads, the model and
drafter a config names (and who they are, for the keys of what is derived from them), and one-line
user errors."""
import contextlib
import datetime
import os
import secrets
import shutil
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ltd.artefacts import changes, hold, normalised, note, read_key, release
from ltd.errors import LtdError
from ltd.fingerprints import describe_machine, file_digest

CONFIG_PATH = str(Path(__file__).resolve().parents[3] / "conf")


def new_run_id() -> str:
    """The time to the second and a random suffix: runs started in the same second still differ."""
    return f"{datetime.datetime.now():%Y-%m-%d_%H-%M-%S}-{secrets.token_hex(3)}"


def hydra_subdir(run_dir: str, run_id: str) -> str:
    """Where Hydra writes a session's config: `.hydra`, unless an earlier session's files are there."""
    return f".hydra/session-{run_id}" if (Path(run_dir) / ".hydra").exists() else ".hydra"


# conf/hydra/default.yaml names run directories with these. Cached: one value per composed config
# (Hydra copies the cache into each job of a multirun, so a sweep shares its directory).
OmegaConf.register_new_resolver("ltd.run_id", new_run_id, use_cache=True, replace=True)
OmegaConf.register_new_resolver("ltd.run_dir", lambda fresh, resume: resume or fresh, replace=True)
OmegaConf.register_new_resolver("ltd.hydra_subdir", hydra_subdir, use_cache=True, replace=True)


def run_directory(what: str) -> Path:
    """This job's run directory, held until the job ends: no other live job writes into it."""
    from hydra.core.hydra_config import HydraConfig

    directory = Path(HydraConfig.get().runtime.output_dir)
    hold(directory, what)
    return directory


def discard_session_files() -> None:
    """After a user error: what Hydra wrote for this session goes, and the run directory with it
    when nothing else is there (an earlier session's files, when resuming, stay)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    config = HydraConfig.get()
    directory = Path(config.runtime.output_dir)
    release(directory)
    if config.output_subdir:
        shutil.rmtree(directory / config.output_subdir, ignore_errors=True)
    # Then the directories that leaves empty: `.hydra`, the run directory, its parents up to the
    # working directory (outputs/<job>).
    cwd = Path.cwd().resolve()
    parents = [p for p in directory.resolve().parents if p != cwd and p.is_relative_to(cwd)]
    for path in (directory / ".hydra", directory, *parents):
        with contextlib.suppress(OSError):
            path.rmdir()  # only when empty


@contextlib.contextmanager
def user_errors():
    """A user's mistake ends the run with one line on stderr and exit code 2, no traceback, and
    no run directory left behind."""
    try:
        yield
    except LtdError as error:
        discard_session_files()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def set_threads(threads: int | None) -> int:
    torch.set_num_threads(threads or os.cpu_count() or 1)
    return torch.get_num_threads()


def parts_of(model_cfg):
    """The wheels a `parts:` source is assembled from (None for other sources)."""
    from ltd.models.wheel_parts import WheelParts

    if not model_cfg.get("parts"):
        return None
    return WheelParts(file=model_cfg.source.removeprefix("parts:"), **OmegaConf.to_container(model_cfg.parts))


def load_target_of(cfg):
    from ltd.models.loading import load_target

    m = cfg.model
    return load_target(m.name, m.source, m.max_context, m.dtype, m.device, m.family, m.chat_template, parts_of(m))


def model_identity_of(cfg) -> dict:
    from ltd.models.loading import model_identity

    m = cfg.model
    return model_identity(m.name, m.source, m.dtype, m.device, m.max_context, m.chat_template, parts_of(m))


def group_option(group: str, name: str):
    """An option of a config group by name (conf/<group>/<name>.yaml), as loaded."""
    path = Path(CONFIG_PATH) / group / f"{name}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise LtdError(f"unknown {group} {name!r}; choose from: {', '.join(options)}")
    return OmegaConf.load(path)


def task_config(name: str):
    """A task config by name (conf/task/<name>.yaml), checked."""
    from ltd.cli.schema import TaskSchema

    return TaskSchema(**OmegaConf.to_container(group_option("task", name)))


def model_config(name: str):
    """A model config by name (as a draft LM names one): its `model` node (the file is global)."""
    from ltd.cli.schema import ModelSchema

    return OmegaConf.merge(OmegaConf.structured(ModelSchema), group_option("model", name).model)


def draft_lm_settings(cfg) -> dict:
    """How to load a draft LM (load_drafter's source, parts, dtype, quantize): the model config it
    names, or its source in the target's dtype; quantised as the drafter config says."""
    d = cfg.drafter
    if d.model:
        m = model_config(d.model)
        return dict(source=m.source, parts=parts_of(m), dtype=m.dtype, quantize=d.quantize)
    return dict(source=d.source, parts=None, dtype=cfg.model.dtype, quantize=d.quantize)


def drafter_job(drafter_cfg):
    """The plain settings of `make drafter` from the drafter config."""
    from ltd.drafter_training.pipeline import DrafterJob
    from ltd.drafter_training.train import TrainSettings

    t = drafter_cfg.train
    settings = TrainSettings(ttt_steps=t.ttt_steps, epochs=t.epochs, lr=t.lr, warmup=t.warmup,
                             batch_tokens=t.batch_tokens, grad_clip=t.grad_clip,
                             checkpoint_every=t.checkpoint_every, seed=drafter_cfg.seed)
    return DrafterJob(corpus=list(t.corpus), responses=t.responses, answer_tokens=t.answer_tokens,
                      max_tokens=t.max_tokens, max_length=t.max_length, held_out=t.held_out,
                      target_top_k=t.target_top_k, draft_vocab_size=drafter_cfg.draft_vocab_size,
                      target_batch=t.target_batch,
                      shard_size=t.shard_size, eval_prompts=t.eval_prompts, eval_new_tokens=t.eval_new_tokens,
                      eval_tree=tuple(t.eval_tree), train=settings)


def eagle3_weights(cfg, model: dict | None = None) -> str | None:
    """Which EAGLE-3 weights a config means (see conf/drafter/eagle3.yaml); None: untrained.
    `model`: the target's identity, when the caller has it already."""
    from ltd.drafter_training.pipeline import head_directory

    d, m = cfg.drafter, cfg.model
    if d.path or m.eagle3:
        return d.path or m.eagle3
    trained = head_directory(Path(d.root), m.name, model or model_identity_of(cfg), drafter_job(d))
    return str(trained) if (trained / "metrics.json").exists() else None


def identities(cfg) -> tuple[dict, dict]:
    """Who the model and the drafter of a config are (their weights included), without loading them."""
    from ltd.models.load_drafter import drafter_identity

    d, model = cfg.drafter, model_identity_of(cfg)
    if d.kind == "eagle3":
        return model, drafter_identity(d.kind, eagle3_weights(cfg, model), d.seed, d.draft_vocab_size)
    draft = draft_lm_settings(cfg)
    return model, drafter_identity(d.kind, draft.pop("source"), **draft)


def load_model(cfg):
    """The target and drafter a composed config names."""
    from ltd.models.load_drafter import load_drafter

    target, d = load_target_of(cfg), cfg.drafter
    if d.kind == "eagle3":
        weights = eagle3_weights(cfg)
        if weights is None:
            print("note: no trained EAGLE-3 head for this model and drafter config (make drafter trains one); "
                  "drafting with an untrained head", file=sys.stderr)
        try:
            drafter = load_drafter(target, "eagle3", weights, d.draft_vocab_size, d.seed)
        except LtdError as error:
            if d.path or cfg.model.eagle3:
                raise
            raise LtdError(f"{error} (make drafter makes it again)") from None
    else:
        drafter = load_drafter(target, d.kind, **draft_lm_settings(cfg))
    return target, drafter


def controller_file(name: str, model_name: str) -> Path:
    """The config of a method: `conf/controller/<name>.yaml`; `tuned` is the tree `make sweep-tree`
    found for the model (`tuned-<model>.yaml`)."""
    directory = Path(CONFIG_PATH) / "controller"
    path = directory / f"{f'tuned-{model_name}' if name == 'tuned' else name}.yaml"
    if not path.is_file():
        if name == "tuned":
            raise LtdError(f"no tuned tree for {model_name} ({path.name}): make sweep-tree finds one")
        options = sorted(p.stem for p in directory.glob("*.yaml"))
        raise LtdError(f"unknown method {name!r}; choose from: tuned, {', '.join(options)}")
    return path


def check_trained_for(path: Path, model: dict, drafter: dict) -> None:
    """Trained weights (policies, classifiers) are for the model and drafter whose features they
    read: another pair's are refused; weights with no key beside them get a note."""
    stored = read_key(path.parent, directory=True)
    if stored is None:
        note(f"{path} has no key beside it: ltd cannot tell which model and drafter it was trained for")
        return
    wanted = normalised({"model": model, "drafter": drafter})
    for part in ("model", "drafter"):
        if stored.get(part) != wanted[part]:
            raise LtdError(f"{path} was trained for another {part} ({changes(stored.get(part), wanted[part])}): "
                           f"train it again for this one")


def check_tuned(path: Path, model: dict, drafter: dict, here: dict) -> None:
    """A tuned tree is the best static tree of the machine, model and drafter it was measured on:
    anywhere else it runs (still lossless) but is no fair baseline, which a note says."""
    stored = read_key(path, directory=False)
    if stored is None:
        note(f"{path.name} was tuned on a machine, model and drafter ltd has no record of: no fair baseline "
             f"on {describe_machine(here)}; make sweep-tree tunes one here")
        return
    wanted = normalised({"model": model, "drafter": drafter, "machine": here})
    differ = [part for part in wanted if stored.get(part) != wanted[part]]
    if differ:
        note(f"{path.name} was tuned on {describe_machine(stored.get('machine', {}))} with another "
             f"{' and '.join(differ)} than this run's ({describe_machine(here)}): no fair baseline here; "
             f"make sweep-tree tunes one here")


def method_settings(settings: dict, model_name: str, drafter_name: str) -> dict:
    """A controller's settings with `{model}` and `{drafter}` in its strings (the paths of trained
    weights) naming the model and drafter in use."""
    return {key: value.format(model=model_name, drafter=drafter_name) if isinstance(value, str) else value
            for key, value in settings.items()}


def build_controller(settings: dict, cfg, made_for: tuple[dict, dict] | None = None):
    """The controller `settings` describe (None for autoregressive decoding). With `made_for`
    (model and drafter identities), the weights it names must have been trained for them."""
    from ltd.controllers.registry import make_controller
    from ltd.eval.runner import AUTOREGRESSIVE

    settings = method_settings(settings, cfg.model.name, cfg.drafter.kind)
    if settings.get("kind") == AUTOREGRESSIVE:
        return None
    if made_for is not None:
        for value in settings.values():
            if isinstance(value, str) and Path(value).is_file():
                check_trained_for(Path(value), *made_for)
    return make_controller(settings)


def method_config(name: str, cfg) -> dict:
    """The settings of method `name` (conf/controller), `{model}` and `{drafter}` filled in."""
    settings = OmegaConf.to_container(OmegaConf.load(controller_file(name, cfg.model.name)), resolve=True)
    return method_settings(settings, cfg.model.name, cfg.drafter.kind)


def build_methods(names: list[str], cfg, made_for: tuple[dict, dict] | None = None):
    """The methods an evaluation compares, by controller config name (see build_controller)."""
    from ltd.eval.runner import Method

    return [Method(name, build_controller(method_config(name, cfg), cfg, made_for)) for name in names]


def method_identity(name: str, cfg) -> dict:
    """What a method is, for the key of an evaluation: its settings and the digests of any weights
    they name (retrained policies make another method)."""
    settings = method_config(name, cfg)
    weights = {key: file_digest(value) for key, value in settings.items()
               if isinstance(value, str) and Path(value).is_file()}
    return {"name": name, "settings": settings, "weights": weights}


def task_identity(task) -> dict:
    """A task's name and the digest of its questions."""
    return {"name": task.name, "questions": file_digest(task.path) if Path(task.path).is_file() else None,
            "per_category": task.per_category}


def check_tuned_methods(names: list[str], cfg, model: dict, drafter: dict, here: dict) -> None:
    """A note for each tuned tree among `names` measured elsewhere (see check_tuned)."""
    for name in names:
        if name == "tuned" or name.startswith("tuned-"):
            check_tuned(controller_file(name, cfg.model.name), model, drafter, here)


def check_choices(overrides: list[str]) -> None:
    """Fail in one line on `group=option` overrides naming an option that does not exist; Hydra's
    own report of it runs to a dozen lines. Sweeps (`model=a,b`) check each option."""
    conf = Path(CONFIG_PATH)
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or "/" in key or not (conf / key).is_dir():
            continue
        options = sorted(p.stem for p in (conf / key).glob("*.yaml"))
        for choice in value.split(","):
            if choice and choice not in options and not any(c in choice for c in "()[]{}*$"):
                raise LtdError(f"unknown {key} {choice!r}; choose from: {', '.join(options)}")


def check_resume(overrides: list[str]) -> None:
    """`resume=` becomes the run directory, which Hydra makes before ltd sees the config: a
    directory that is not there is one line now, not a directory made by mistake."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key == "resume" and value not in ("", "null") and not Path(value).is_dir():
            raise LtdError(f"nothing to resume at {value} (not a directory)")


def check_overrides(config_name: str, args: list[str]) -> None:
    """A misspelt key or a value the override grammar cannot read is one line here, not Hydra's
    report of it (a dozen lines). Command lines with Hydra's own flags (-m sweeps, --cfg, ...) are
    left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    if any(arg.startswith("-") for arg in args):
        return
    overrides = [arg for arg in args if not arg.startswith(("hydra.", "hydra/", "+hydra", "~hydra"))]
    try:
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
            compose(config_name, overrides=overrides)
    except HydraException as error:
        lines = str(error).splitlines()
        hint = f" {lines[1]}" if len(lines) > 1 and lines[1].startswith("To append") else ""
        raise LtdError(f"{lines[0]}{hint}") from None


def launch(main, config_name: str) -> None:
    """Run a Hydra entry point after checking the command line: group options, keys, values' syntax."""
    with user_errors():
        check_choices(sys.argv[1:])
        check_resume(sys.argv[1:])
        check_overrides(config_name, sys.argv[1:])
    main()
