"""The config files by name (conf/<group>/<name>.yaml): what a job reads beside the config Hydra
composed for it (a task of a list, a draft LM's model, a method's controller)."""
from pathlib import Path

from omegaconf import OmegaConf

from ltd.config.schema import ModelSchema, TaskSchema
from ltd.core.errors import LtdError
from ltd.core.project import PROJECT
from ltd.core.results import register_resolvers
from ltd.drafter.ppow import PPOWSettings

CONFIG_PATH = str(PROJECT / "conf")
register_resolvers()  # controller configs name trained weights through them


def group_options(group: str) -> list[str]:
    """The options of a config group (conf/<group>/*.yaml), by name, sorted."""
    return sorted(path.stem for path in (Path(CONFIG_PATH) / group).glob("*.yaml"))


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


def controller_file(name: str, model_name: str) -> Path:
    """The config of a method: `conf/controller/<name>.yaml`; `tuned` is the tree `make sweep-tree`
    found for the model (`tuned-<model>.yaml`)."""
    directory = Path(CONFIG_PATH) / "controller"
    path = directory / f"{f'tuned-{model_name}' if name == 'tuned' else name}.yaml"
    if not path.is_file():
        if name == "tuned":
            raise LtdError(f"no tuned tree for {model_name} ({path.name}): make sweep-tree finds one")
        options = ", ".join(group_options("controller"))
        raise LtdError(f"unknown method {name!r}; choose from: tuned, {options}")
    return path


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
