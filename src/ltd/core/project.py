"""Where ltd's own files are: conf/, data/ (prompt sets, drafter corpora), sweeps/ and analysis/ of
the project. In a checkout (and an editable install) src/ltd/project links to them; an installed
wheel carries copies there (pyproject.toml's package data). Either way, found from the package,
whatever the working directory."""
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1] / "project"


def project_file(path: str | Path) -> Path:
    """A file as a config or a user names it: as given when it is there (absolute, or relative to the
    working directory), else the project's own (`data/bench/...` from any directory). The name a
    config gives stays what keys record, so moving the working directory changes no key."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    shipped = PROJECT / given
    return shipped if shipped.exists() else given
