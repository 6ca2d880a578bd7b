"""Lineage: which stored artefacts a run read and which it made, as W&B artifacts and in the run's
own `lineage.json`, so a speed-up traces back to the policy, traces, cost model or tuned tree
behind it.

An artefact's W&B name is its kind and its file or directory name (`ltd-policies-<model>-<drafter>-
<name>`), its version's alias the digest of its key (`k<digest>`): the run that makes it and every
run that reads it name the same version without asking W&B, offline too. Offline, W&B records what
a run logs but refuses `use_artifact`; what a run read is then in its config (`inputs`) and its
lineage.json, and each artifact's metadata names the artifacts it was made from.
"""
import re
from pathlib import Path

from ltd.core.artefacts import read_key
from ltd.core.fingerprints import digest


def stored_artefact(path: str | Path) -> tuple[Path, dict] | None:
    """The artefact `path` belongs to, with its key: the file itself (`<name>.key.json` beside it) or
    the directory holding it (`key.json`); None for a file ltd did not store with a key."""
    path = Path(path)
    for candidate, directory in ((path, path.is_dir()), (path.parent, True)):
        key = read_key(candidate, directory)
        if key is not None:
            return candidate, key
    return None


def kind_of(key: dict) -> str:
    """The W&B type of an artefact: what its key says it is (`ltd policies` -> `ltd-policies`)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(key.get("artefact", "artefact"))).strip("-")


def artifact_name(path: Path, key: dict) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{kind_of(key)}-{Path(path).name}")


def reference(path: str | Path, key: dict) -> str:
    """`<name>:<alias>`: the W&B artifact version an artefact with this key is."""
    return f"{artifact_name(Path(path), key)}:k{digest(key, 12)}"
