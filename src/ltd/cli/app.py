"""What every entry point shares: where the configs live, threads, and one-line user errors."""
import contextlib
import os
import sys
from pathlib import Path

import torch

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


def load_model(cfg):
    """The target and drafter a composed config names."""
    from ltd.models.load_drafter import load_drafter
    from ltd.models.loading import load_target

    m, d = cfg.model, cfg.drafter
    target = load_target(m.name, m.source, m.max_context, m.dtype, m.device, m.family, m.chat_template)
    if d.kind == "eagle3":
        drafter = load_drafter(target, "eagle3", d.path or m.eagle3, d.draft_vocab_size, d.seed)
    else:
        drafter = load_drafter(target, d.kind, source=d.get("source"))
    return target, drafter


def build_controller(cfg):
    from ltd.decoding.controller import StaticTree

    if cfg.kind != "static":
        raise LtdError(f"unknown controller kind {cfg.kind!r}")
    return StaticTree(depth=cfg.depth, top_k=cfg.top_k, verify=cfg.verify)


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
