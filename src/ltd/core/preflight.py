"""Checks before the work: every folder a job will write can be written and has room, so that a
mistake costs one line at start-up rather than an hour of decoding lost at the end."""
import shutil
import tempfile
from pathlib import Path

from ltd.core.errors import LtdError

# What a job writes outside the model cache (records, tables, policies): rarely more than this.
SMALL = 64 * 2**20


def nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (a folder made later is made there)."""
    path = path.expanduser().absolute()
    while not path.exists():
        path = path.parent
    return path


def check_writable(path: str | Path, what: str, need_bytes: int = SMALL) -> None:
    """One LtdError line when `what` at `path` (a folder, made later when missing) could not be
    written: a file in the way, no permission, a read-only filesystem, or less room than
    `need_bytes`. A file is created and removed to find out: permissions alone say nothing to root
    or of a read-only mount."""
    path = Path(path)
    existing = nearest_existing(path)
    if not existing.is_dir():
        raise LtdError(f"cannot write {what} at {path}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise LtdError(f"cannot write {what} at {path}: {error.strerror} ({existing})") from None
    free = shutil.disk_usage(existing).free
    if free < need_bytes:
        raise LtdError(f"not enough room for {what} at {path}: {free / 2**30:.2f} GiB free in {existing}, "
                       f"about {need_bytes / 2**30:.2f} GiB needed")
