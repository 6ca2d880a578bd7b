"""The methods an evaluation compares, by controller config name (conf/controller): their settings,
the controllers they build, and checks that trained weights and tuned trees fit the run."""
from pathlib import Path

from omegaconf import OmegaConf

from ltd.config.files import controller_file
from ltd.controllers.registry import make_controller
from ltd.core.artefacts import changes, normalised, note, read_key
from ltd.core.errors import LtdError
from ltd.core.fingerprints import describe_machine, file_digest
from ltd.core.provenance import Provenance
from ltd.eval.runner import AUTOREGRESSIVE, Method


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


def tuned_here(path: Path, who: Provenance) -> bool:
    """Whether the tuned tree at `path` was measured on this machine with this model and drafter."""
    stored = read_key(path, directory=False) if path.is_file() else None
    wanted = normalised(who.parts())
    return stored is not None and all(stored.get(part) == wanted[part] for part in wanted)


def check_tuned(path: Path, who: Provenance) -> None:
    """A tuned tree is the best static tree of the machine, model and drafter it was measured on:
    anywhere else it runs (still lossless) but is no fair baseline, which a note says."""
    stored = read_key(path, directory=False)
    if stored is None:
        note(f"{path.name} was tuned on a machine, model and drafter ltd has no record of: no fair baseline "
             f"on {who.describe_machine()}; make sweep-tree tunes one here")
        return
    wanted = normalised(who.parts())
    differ = [part for part in wanted if stored.get(part) != wanted[part]]
    if differ:
        note(f"{path.name} was tuned on {describe_machine(stored.get('machine', {}))} with another "
             f"{' and '.join(differ)} than this run's ({who.describe_machine()}): no fair baseline here; "
             f"make sweep-tree tunes one here")


def method_settings(settings: dict, cfg) -> dict:
    """A controller's settings with the paths of trained weights resolved (`${ltd.policy:...}`,
    `${ltd.baseline:...}`: ltd.core.results) for the model and drafter in use and the job's results."""
    root = OmegaConf.create({"results": cfg.results, "model": {"name": cfg.model.name},
                             "drafter": {"kind": cfg.drafter.kind}, "settings": settings})
    return OmegaConf.to_container(root.settings, resolve=True)


def build_controller(settings: dict, made_for: Provenance | None = None):
    """The controller `settings` describe (None for autoregressive decoding). With `made_for`, the
    weights it names must have been trained for its model and drafter. `settings` come resolved
    (method_config, or a composed config's controller)."""
    settings = dict(settings)
    if settings.get("kind") == AUTOREGRESSIVE:
        return None
    if made_for is not None:
        for value in settings.values():
            if isinstance(value, str) and Path(value).is_file():
                check_trained_for(Path(value), made_for.model, made_for.drafter)
    settings.pop(FROM, None)
    return make_controller(settings)


FROM = "from"  # a controller config whose settings another job writes: conf/controller/best-constant.yaml


def method_config(name: str, cfg) -> dict:
    """The settings of method `name` (conf/controller), the paths of trained weights resolved.
    A config that names a file `from` gets that file's settings (and keeps `from`: the file says
    whom it was made for, and its digest is part of the method's identity)."""
    path = controller_file(name, cfg.model.name, cfg.results)
    settings = method_settings(OmegaConf.to_container(OmegaConf.load(path)), cfg)
    if FROM not in settings:
        return settings
    source = Path(settings[FROM])
    if not source.is_file():
        raise LtdError(f"{name} reads its settings from {source}, which is not there yet ({settings.get('made_by')} "
                       f"writes it)")
    return {**OmegaConf.to_container(OmegaConf.load(source), resolve=True), FROM: str(source)}


def build_methods(names: list[str], cfg, made_for: Provenance | None = None):
    """The methods an evaluation compares, by controller config name (see build_controller)."""

    return [Method(name, build_controller(method_config(name, cfg), made_for)) for name in names]


def method_files(name: str, cfg) -> list[Path]:
    """The files a method decodes with: its controller config (a tuned tree's is stored with a key)
    and the weights or settings files it names (policies, classifiers, best-constant's tree)."""
    settings = method_config(name, cfg)
    named = [Path(value) for value in settings.values() if isinstance(value, str) and Path(value).is_file()]
    return [controller_file(name, cfg.model.name, cfg.results), *named]


def read_methods(tracker, names: list[str], cfg) -> None:
    """What the methods `names` decode with, as the tracked run's inputs (W&B lineage)."""
    for name in names:
        for file in method_files(name, cfg):
            tracker.read(file)


def method_identity(name: str, cfg) -> dict:
    """What a method is, for the key of an evaluation: its settings and the digests of any weights
    they name (retrained policies make another method)."""
    settings = method_config(name, cfg)
    weights = {key: file_digest(value) for key, value in settings.items()
               if isinstance(value, str) and Path(value).is_file()}
    return {"name": name, "settings": settings, "weights": weights}


def check_tuned_methods(names: list[str], cfg, who: Provenance) -> None:
    """A note for each tuned tree among `names` measured elsewhere (see check_tuned)."""
    for name in names:
        if name == "tuned" or name.startswith("tuned-"):
            check_tuned(controller_file(name, cfg.model.name, cfg.results), who)


def methods_there(names: list[str], cfg, who: Provenance) -> list[Method]:
    """Every method of `names` that is there (a tuned tree found, policies trained for this model
    and drafter); the others are left out with a note."""
    methods = []
    for name in names:
        try:
            methods += build_methods([name], cfg, who)
        except LtdError as error:
            note(f"{name} left out: {error}")
            continue
        check_tuned_methods([name], cfg, who)
    return methods


def compared_methods(cfg, choice: str | None, who: Provenance) -> list[Method]:
    """Autoregressive decoding and the controller config chosen (`choice`, the name of
    cfg.controller), or else every method of `methods` that is there (a tuned tree found, policies
    trained for this model and drafter); the others are left out with a note."""

    if cfg.controller is not None:
        check_tuned_methods([choice], cfg, who)
        controller = build_controller(OmegaConf.to_container(cfg.controller, resolve=True), who)
        return [Method(AUTOREGRESSIVE), Method(choice, controller)]
    methods = [Method(AUTOREGRESSIVE)] + methods_there(list(cfg.methods), cfg, who)
    if len(methods) == 1:
        raise LtdError("nothing to compare with autoregressive decoding: name methods=[...] or controller=")
    return methods
