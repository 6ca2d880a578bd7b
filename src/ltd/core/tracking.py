"""W&B, mirroring what a run writes locally (local files stay the source of truth).

Conventions: one project; a group per experiment; `job_type` says what the run does (eval,
sweep, train, ...); tags name the model, drafter, task and methods; the run's name is readable
(`eval-smollm2-135m-mt_bench-...`); the full resolved config is attached. Offline unless the
logger config says otherwise, so no account is needed anywhere by default. Metric keys are
`<method, stage or head>/<metric>`, the metric in snake case (metric_name): `ltd/speedup`,
`tuned/tokens_per_s`, `stage1-size/reward_per_step`. What a run read and made of ltd's stored
artefacts goes to W&B as artifacts and to the run directory's lineage.json (ltd.core.lineage).
"""
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ltd.core.artefacts import note
from ltd.core.atomic import write_json
from ltd.core.errors import LtdError, reason
from ltd.core.lineage import artifact_name, kind_of, reference, stored_artefact

MODES = ("offline", "online", "disabled")


def metric_name(column: str) -> str:
    """A table's column as a metric key's last part: `speed-up low` -> `speedup_low`, `tok/s` ->
    `tokens_per_s`."""
    words = column.lower().replace("speed-up", "speedup").replace("tok/s", "tokens per s")
    return re.sub(r"[^a-z0-9]+", "_", words).strip("_")


@dataclass
class LoggerSettings:
    kind: str = "wandb"  # wandb | none
    project: str = "ltd"
    entity: str | None = None
    mode: str = "offline"
    tags: list[str] = field(default_factory=list)  # added to the ones a job derives

    def validate(self) -> None:
        if self.kind not in ("wandb", "none"):
            raise LtdError(f"logger kind must be wandb or none, got {self.kind!r}")
        if self.mode not in MODES:
            raise LtdError(f"wandb mode must be one of {', '.join(MODES)}, got {self.mode!r}")


class Tracker:
    """A W&B run, or nothing (kind none): the same calls either way."""

    def __init__(self, settings: LoggerSettings, directory: Path, job_type: str, name: str, group: str,
                 tags: list[str], config: dict):
        settings.validate()
        self.run, self.lineage_file = None, directory / "lineage.json"
        self.inputs, self.outputs = {}, {}
        if settings.kind == "none":
            return
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        if settings.mode == "offline":
            os.environ.setdefault("WANDB_MODE", "offline")  # wandb's own helpers read it too
        self.run = wandb.init(
            project=settings.project, entity=settings.entity, mode=settings.mode, dir=str(directory),
            job_type=job_type, name=name, group=group, tags=sorted(set(tags) | set(settings.tags)),
            config=config, settings=wandb.Settings(silent=True, console="off"),
        )

    @property
    def directory(self) -> Path | None:
        """The run's own directory (offline: where `wandb sync` finds it)."""
        return Path(self.run.dir).parent if self.run is not None else None

    def step_axis(self, prefix: str, step_key: str) -> None:
        """Plot every `<prefix>/...` metric against `<prefix>/<step_key>` (a PPO stage against its own
        batches), not against the run's shared step."""
        if self.run is not None:
            self.run.define_metric(f"{prefix}/{step_key}", hidden=True)
            self.run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/{step_key}")

    def log(self, values: dict, step: int | None = None) -> None:
        """Numbers as they are; tensors and lists (a distribution, e.g. the depths a policy chose) as
        histograms."""
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Histogram(value.tolist() if hasattr(value, "tolist") else value)
                          if hasattr(value, "__len__") else value for key, value in values.items()}, step=step)

    def read(self, path: str | Path) -> str | None:
        """The run decodes with the stored artefact holding `path` (a policy's file, a tuned tree): its
        reference, in the run's config (`inputs`) and lineage.json; online, used as a W&B artifact
        too. None for a file ltd did not store with a key."""
        found = stored_artefact(path)
        if found is None:
            return None
        ref = reference(*found)
        if ref in self.inputs:
            return ref
        self.inputs[ref] = str(found[0])
        if self.run is not None:
            self.run.config.update({"inputs": sorted(self.inputs)}, allow_val_change=True)
            if not self.run.offline:
                try:
                    self.run.use_artifact(ref)
                except Exception as error:  # made offline or by another project: the config still names it
                    note(f"W&B has no artifact {ref} to link this run to ({reason(error)}); its config names it")
        return ref

    def made(self, path: str | Path, inputs: list[str] | None = None, files: list[Path] | None = None,
             reference_only: bool = False) -> str | None:
        """The run made the stored artefact at `path` from the artifacts `inputs` (None: what it read so
        far): logged as a W&B
        artifact whose alias is its key's digest and whose metadata holds the key and the inputs
        (`files`: only those of a directory; `reference_only`: checksums of the files, not copies:
        traces run to gigabytes). None when `path` has no key."""
        found = stored_artefact(path)
        if found is None:
            return None
        path, key = found
        ref, inputs = reference(path, key), sorted(self.inputs) if inputs is None else inputs
        self.outputs[ref] = {"path": str(path), "inputs": list(inputs)}
        if self.run is not None:
            import wandb

            artifact = wandb.Artifact(artifact_name(path, key), type=kind_of(key),
                                      metadata={"key": key, "inputs": list(inputs), "path": str(path)})
            if reference_only:
                artifact.add_reference(path.resolve().as_uri(), checksum=True)
            elif files is not None:
                for file in files:
                    artifact.add_file(str(file), name=Path(file).name)
            elif path.is_dir():
                artifact.add_dir(str(path))
            else:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact, aliases=[ref.split(":")[1]])
        return ref

    def summarise(self, values: dict) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def table(self, key: str, frame) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Table(dataframe=frame)})

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def finish(self) -> None:
        if self.inputs or self.outputs:
            write_json(self.lineage_file, {"inputs": self.inputs, "outputs": self.outputs})
        if self.run is not None:
            self.run.finish()
            self.run = None
