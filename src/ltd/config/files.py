"""The config files by name (conf/<group>/<name>.yaml): what a job reads beside the config Hydra
composed for it (a task of a list, a draft LM's model, a method's controller), and where Hydra looks
for them: conf/, then the configs jobs wrote into the results directory (make sweep-tree's tuned
trees), then the tuned trees ltd ships (measured on the machine the README names)."""
from pathlib import Path

from omegaconf import OmegaConf

from ltd.config.schema import ModelSchema, TaskSchema
from ltd.core.errors import LtdError
from ltd.core.project import PROJECT
from ltd.core.results import ResultPaths, register_resolvers, tuned_name
from ltd.drafter.ppow import PPOWSettings

CONFIG_PATH = str(PROJECT / "conf")
SHIPPED_TREES = PROJECT / "data" / "tuned"  # controller/tuned-<model>.yaml: make run's trees on a fresh clone
# `results=` when a command line names none (the one default: conf/paths/default.yaml)
DEFAULT_RESULTS = OmegaConf.load(Path(CONFIG_PATH) / "paths" / "default.yaml").results
register_resolvers()  # controller configs name trained weights through them


def search_path(results: str | Path) -> list[Path]:
    """Where configs are found after conf/, in Hydra's order (the first found wins): `results`'s own
    (ltd.core.results), then the shipped trees."""
    return [ResultPaths(results).configs, SHIPPED_TREES]


def search_path_override(results: str | Path) -> list[str]:
    """search_path as the Hydra override an entry point adds to its command line: its folders that
    are there (Hydra warns of the others); none when none is."""
    there = [f"file://{path.resolve()}" for path in search_path(results) if path.is_dir()]
    return [f"hydra.searchpath=[{','.join(there)}]"] if there else []


def group_options(group: str, results: str | Path | None = None) -> list[str]:
    """The options of a config group (conf/<group>/*.yaml, and with `results` its search path's),
    by name, sorted."""
    directories = [Path(CONFIG_PATH), *(search_path(results) if results is not None else [])]
    return sorted({path.stem for directory in directories for path in (directory / group).glob("*.yaml")})


def group_option(group: str, name: str):
    """An option of a config group by name (conf/<group>/<name>.yaml), as loaded."""
    path = Path(CONFIG_PATH) / group / f"{name}.yaml"
    if not path.is_file():
        raise LtdError(f"unknown {group} {name!r}; choose from: {', '.join(group_options(group))}")
    return OmegaConf.load(path)


def task_config(name: str):
    """A task config by name (conf/task/<name>.yaml), checked."""
    return TaskSchema(**OmegaConf.to_container(group_option("task", name)))


def chosen_tasks(cfg) -> list:
    """The tasks a job reads: its `tasks` by name, or, when that is null, its `task` group's one."""
    return [task_config(name) for name in cfg.tasks] if cfg.tasks else [TaskSchema(**OmegaConf.to_container(cfg.task))]


def model_config(name: str):
    """A model config by name (as a draft LM names one): its `model` node (the file is global), over
    the model configs it names in its defaults (qwen2.5-coder-1.5b-gguf: qwen2.5-coder-1.5b's)."""
    option = group_option("model", name)
    bases = [model_config(entry) for entry in option.get("defaults", []) if isinstance(entry, str)]
    return OmegaConf.merge(OmegaConf.structured(ModelSchema), *bases, option.model)


def found_config(group: str, name: str, results: str | Path) -> Path | None:
    """`<group>/<name>.yaml` where Hydra finds it (conf/, then search_path); None where it is not."""
    for directory in (Path(CONFIG_PATH), *search_path(results)):
        if (directory / group / f"{name}.yaml").is_file():
            return directory / group / f"{name}.yaml"
    return None


def found_tuned(model_name: str, results: str | Path) -> Path | None:
    """The tuned tree of a model where Hydra finds it (the results' own, else the shipped one); None: none."""
    return found_config("controller", tuned_name(model_name), results)


def controller_file(name: str, model_name: str, results: str | Path) -> Path:
    """The config of a method, found where Hydra finds `controller=<name>`; `tuned` is the tree
    `make sweep-tree` found for the model (`tuned-<model>.yaml`: the results' own, else the shipped one)."""
    path = found_tuned(model_name, results) if name == "tuned" else found_config("controller", name, results)
    if path is not None:
        return path
    if name == "tuned":
        raise LtdError(f"no tuned tree for {model_name} ({tuned_name(model_name)}.yaml): make sweep-tree finds one")
    options = ", ".join(option for option in group_options("controller", results) if not option.startswith("tuned-"))
    raise LtdError(f"unknown method {name!r}; choose from: tuned, {options}")


def ppow_variants(cfg) -> list[PPOWSettings]:
    """The PPOW variants a job names (`variants`), each `ppow` with its own changes (conf/ppow/<name>.yaml), checked."""
    if not cfg.variants or len(set(cfg.variants)) != len(cfg.variants):
        raise LtdError(f"variants must name each variant of conf/ppow once, got {list(cfg.variants)}")
    variants = []
    for name in cfg.variants:
        merged = OmegaConf.merge(OmegaConf.structured(PPOWSettings), cfg.ppow, group_option("ppow", name), {"name": name})
        settings = OmegaConf.to_object(merged)
        settings.validate()
        variants.append(settings)
    return variants
