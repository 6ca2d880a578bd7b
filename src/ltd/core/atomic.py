"""Files written whole or not at all: a crash or Ctrl-C never leaves half a file behind. They get
the modes any file the user writes gets (their umask), not the owner-only ones of temporary files,
so result directories can be shared."""
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()
FILE_MODE, DIRECTORY_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK


def write_file(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write` on a temporary sibling of `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(path: str | Path, data) -> None:
    write_file(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def write_directory(path: str | Path, write: Callable[[Path], None]) -> None:
    """Fill a temporary sibling directory with `write`, then rename it to `path`. If `path`
    appeared meanwhile (a concurrent run finished first), that copy is kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        write(tmp)
        os.chmod(tmp, DIRECTORY_MODE)
        if not path.exists():
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
