"""What every entry point shares: run directories, threads, one-line user errors, and the checks of a
command line before Hydra composes it."""
import contextlib
import datetime
import os
import secrets
import shutil
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ltd.config.files import CONFIG_PATH, DEFAULT_RESULTS, group_options, search_path_override
from ltd.core.artefacts import hold, release
from ltd.core.console import keep_console
from ltd.core.errors import LtdError, NotLossless
from ltd.jobs.sweeps import clear_failure, in_sweep, record_failure


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
# A sweep's job directory is named after its overrides: a path in one must not nest directories.
OmegaConf.register_new_resolver("ltd.file_name", lambda text: str(text).replace("/", "_"), replace=True)


def run_directory(what: str) -> Path:
    """This job's run directory, held until the job ends (no other live job writes into it), where
    what it prints is kept (console.log)."""
    from hydra.core.hydra_config import HydraConfig

    directory = Path(HydraConfig.get().runtime.output_dir)
    hold(directory, what)
    clear_failure(directory)
    keep_console(directory)
    return directory


def discard_session_files() -> None:
    """After a user error: a run directory this session made goes whole (what the job wrote before
    the mistake showed, a key, too); resuming or in a sweep, what Hydra wrote for this session goes,
    and the directory with it when nothing else is there (an earlier session's files stay)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    config = HydraConfig.get()
    directory = Path(config.runtime.output_dir)
    release(directory)
    resumed = any(o.startswith("resume=") and o != "resume=null" for o in config.overrides.task)
    if not resumed and not in_sweep():  # made by this session alone (what it wrote before the mistake too)
        shutil.rmtree(directory, ignore_errors=True)
    elif config.output_subdir:
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
    no run directory left behind; an output that is not lossless, with one line and exit code 1,
    its records kept. In a sweep either ends that job alone, its line kept for the sweep's report
    (ltd.jobs.sweeps)."""
    try:
        yield
    except LtdError as error:
        discard_session_files()
        if in_sweep():
            record_failure(str(error))
            return
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except NotLossless as error:  # the run's records stay: they show the output that differs
        if in_sweep():
            record_failure(str(error))
            return
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def set_threads(threads: int | None) -> int:
    torch.set_num_threads(threads or os.cpu_count() or 1)
    return torch.get_num_threads()


def check_choices(overrides: list[str], results: str) -> None:
    """Fail in one line on `group=option` overrides naming an option that does not exist (in conf/
    or on the search path of `results`); Hydra's own report of it runs to a dozen lines. Sweeps
    (`model=a,b`) check each option."""
    conf = Path(CONFIG_PATH)
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or "/" in key or not (conf / key).is_dir():
            continue
        options = group_options(key, results)
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


def check_overrides(config_name: str, args: list[str]):
    """A misspelt key or a value the override grammar cannot read is one line here, not Hydra's
    report of it (a dozen lines). Command lines with Hydra's own flags (-m sweeps, --cfg, ...) are
    left to Hydra. Returns the composed config (None when left to Hydra)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    if any(arg.startswith("-") for arg in args):
        return None
    overrides = [arg for arg in args if arg.startswith("hydra.searchpath=")
                 or not arg.startswith(("hydra.", "hydra/", "+hydra", "~hydra"))]
    try:
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
            return compose(config_name, overrides=overrides)
    except HydraException as error:
        lines = str(error).splitlines()
        hint = f" {lines[1]}" if len(lines) > 1 and lines[1].startswith("To append") else ""
        raise LtdError(f"{lines[0]}{hint}") from None


def check_room(cfg) -> None:
    """Before Hydra makes the run directory and any model loads: the run directories' folder, the
    results folder and the model cache can be written, and the cache has room for what a first run
    fetches (ltd.core.preflight). `cfg`: the job's config as check_overrides composed it."""
    from ltd.config.models import cache_bytes_needed
    from ltd.core.fingerprints import cache_root
    from ltd.core.preflight import check_writable

    check_writable(cfg.get("resume") or Path.cwd() / "outputs", "run directories")
    if cfg.get("results"):
        check_writable(cfg.results, "results")
    if cfg.get("model") is not None:
        check_writable(cache_root(), "the model cache (LTD_CACHE)", cache_bytes_needed(cfg))


def experiment_as_chosen(args: list[str]) -> list[str]:
    """`+experiment=<name>` read as `experiment=<name>`: the job configs list the group (optional,
    null by default), and Hydra refuses to append a group its defaults already name."""
    return [arg.removeprefix("+") if arg.startswith("+experiment=") else arg for arg in args]


def chosen_results(args: list[str]) -> str:
    """The results directory a command line names (`results=`; conf/paths/default.yaml's otherwise,
    and for a sweep over several)."""
    chosen = [arg.split("=", 1)[1] for arg in args if arg.lstrip("+").startswith("results=")]
    if chosen and "," not in chosen[-1]:
        return chosen[-1]
    return DEFAULT_RESULTS


def with_search_path(args: list[str]) -> list[str]:
    """The command line with the results' configs and the shipped trees on Hydra's search path
    (ltd.config.files.search_path): hydra.searchpath in a config file cannot follow a `results=`
    override, as Hydra reads it before any override. A search path the user gives stays alone."""
    if any(arg.lstrip("+").startswith("hydra.searchpath") for arg in args):
        return args
    return [*args, *search_path_override(chosen_results(args))]


def launch(main, config_name: str) -> None:
    """Run a Hydra entry point after checking the command line (group options, keys, values' syntax)
    and the folders it will write."""
    sys.argv[1:] = with_search_path(experiment_as_chosen(sys.argv[1:]))
    with user_errors():
        check_choices(sys.argv[1:], chosen_results(sys.argv[1:]))
        check_resume(sys.argv[1:])
        cfg = check_overrides(config_name, sys.argv[1:])
        if cfg is not None:
            check_room(cfg)
    main()


def key_values(argv: list[str], defaults: dict, usage: str) -> dict:
    """`key=value` arguments of the small entry points that compose no config; anything else is
    one line naming `usage`."""
    args = dict(defaults)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in args:
            raise LtdError(f"unknown argument {arg!r}: {usage}")
        args[key] = value
    return args
