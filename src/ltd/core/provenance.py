"""Who makes a result: the model and the drafter, each with the identity of its weights, and the
machine it runs on. Keys of artefacts record them; a tuned tree, a profile or a policy made under
another provenance is not this run's."""
from dataclasses import dataclass

from ltd.core.fingerprints import describe_machine


@dataclass(frozen=True)
class Provenance:
    model: dict  # ltd.models.targets.model_identity: name, source, weights' digest, precision
    drafter: dict  # ltd.models.drafters.drafter_identity
    machine: dict  # ltd.core.fingerprints.machine: CPU, vector extensions, threads, torch, GPU

    def parts(self) -> dict:
        """{model, drafter, machine}: as keys hold them."""
        return {"model": self.model, "drafter": self.drafter, "machine": self.machine}

    def describe_machine(self) -> str:
        return describe_machine(self.machine)
