"""What every entry point shares: where the configs live, threads, and one-line user errors."""
import contextlib
import os
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ltd.errors import LtdError

CONFIG_PATH = str(Path(__file__).resolve().parents[3] / "conf")


@contextlib.contextmanager
def user_errors():
    """A user's mistake ends the run with one line on stderr and exit code 2, no traceback."""
    try:
        yield
    except LtdError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def set_threads(threads: int | None) -> int:
    torch.set_num_threads(threads or os.cpu_count() or 1)
    return torch.get_num_threads()


def load_target_of(cfg):
    from ltd.models.loading import load_target

    m = cfg.model
    return load_target(m.name, m.source, m.max_context, m.dtype, m.device, m.family, m.chat_template)


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


def eagle3_weights(cfg) -> str | None:
    """Which EAGLE-3 weights a config means (see conf/drafter/eagle3.yaml); None: untrained."""
    from ltd.drafter_training.pipeline import head_directory

    d, m = cfg.drafter, cfg.model
    if d.path or m.eagle3:
        return d.path or m.eagle3
    trained = head_directory(Path(d.root), m.name, m.source, drafter_job(d))
    return str(trained) if (trained / "metrics.json").exists() else None


def load_model(cfg):
    """The target and drafter a composed config names."""
    from ltd.models.load_drafter import load_drafter

    target, d = load_target_of(cfg), cfg.drafter
    if d.kind == "eagle3":
        weights = eagle3_weights(cfg)
        if weights is None:
            print("note: no trained EAGLE-3 head for this model and drafter config (make drafter trains one); "
                  "drafting with an untrained head", file=sys.stderr)
        drafter = load_drafter(target, "eagle3", weights, d.draft_vocab_size, d.seed)
    else:
        drafter = load_drafter(target, d.kind, source=d.get("source"))
    return target, drafter


def build_controller(cfg):
    from ltd.decoding.controller import make_controller

    return make_controller(OmegaConf.to_container(cfg, resolve=True))


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


def build_methods(names: list[str], model_name: str, drafter_name: str):
    """The methods an evaluation compares, by controller config name. `{model}` and `{drafter}` in
    a config's string settings (the paths of trained weights) name the model and drafter in use."""
    from ltd.decoding.controller import make_controller
    from ltd.eval.runner import AUTOREGRESSIVE, Method

    methods = []
    for name in names:
        settings = OmegaConf.to_container(OmegaConf.load(controller_file(name, model_name)), resolve=True)
        settings = {key: value.format(model=model_name, drafter=drafter_name) if isinstance(value, str) else value
                    for key, value in settings.items()}
        if settings.get("kind") == AUTOREGRESSIVE:
            methods.append(Method(name))
        else:
            methods.append(Method(name, make_controller(settings)))
    return methods


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


def launch(main) -> None:
    """Run a Hydra entry point after checking its config-group choices."""
    with user_errors():
        check_choices(sys.argv[1:])
    main()
