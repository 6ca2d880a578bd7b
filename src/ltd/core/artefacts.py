"""Artefacts ltd keeps and reuses across runs, each stored with its key.

A key is a JSON description of everything that changes an artefact: the model and its weights, the
drafter and its weights, the settings that shape it and, for anything timed, the machine. It is
written beside the artefact (`key.json` inside a directory, `<name>.key.json` next to a file). A
run that wants the artefact compares keys: equal, the artefact is reused; different, it is rebuilt
with a one-line note saying what changed, or refused with one line. Nothing made under other
settings or weights is ever served.

Directories being written are held (`hold`) by their job: a second live job is refused instead of
writing into them too. The hold is an OS lock, so a job killed outright leaves nothing to clean up.
"""
import atexit
import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
from pathlib import Path

from ltd.core.atomic import write_json
from ltd.core.errors import LtdError, reason


def note(message: str) -> None:
    """A line for the user that is not an error (stderr, like tqdm's bars)."""
    print(f"note: {message}", file=sys.stderr, flush=True)


def flatten(value, prefix: str = "") -> dict:
    """{'a': {'b': 1}, 'c': [{'d': 2}]} -> {'a.b': 1, 'c.0.d': 2}: keys compared entry by entry."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        value = dict(enumerate(value))
    if isinstance(value, dict) and value:
        out = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    head = text.split(":", 1)[-1]
    if isinstance(value, str) and len(head) >= 16 and all(c in "0123456789abcdef" for c in head):
        return head[:8]  # a digest: its head is enough
    return text if len(text) <= 24 else text[:21] + "..."


def changes(stored: dict | None, wanted: dict) -> str:
    """What differs between two keys, in one line: `max_new_tokens 16 -> 200, drafter.weights 1a2b -> 3c4d`."""
    if stored is None:
        return "no key stored (made by an older ltd, or cut short)"
    old, new = flatten(stored), flatten(wanted)
    diffs = [f"{k} {_short(old.get(k, 'unset'))} -> {_short(new.get(k, 'unset'))}"
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    shown = ", ".join(diffs[:4])
    return shown + (f" and {len(diffs) - 4} more" if len(diffs) > 4 else "")


def normalised(key: dict) -> dict:
    """The key as it reads back from JSON (tuples become lists), so a stored key compares equal."""
    return json.loads(json.dumps(key, default=str))


def key_path(path: Path, directory: bool) -> Path:
    """Where the key of the artefact at `path` is kept."""
    return path / "key.json" if directory else path.with_name(path.name + ".key.json")


def read_key(path: Path, directory: bool) -> dict | None:
    """The key stored beside an artefact; None when there is none (or it cannot be read)."""
    try:
        return json.loads(key_path(Path(path), directory).read_text())
    except (OSError, ValueError):
        return None


def agrees(stored: dict | None, parts: dict) -> bool:
    """Whether a stored key holds every entry of `parts` (nested dicts compared entry by entry)."""
    if stored is None:
        return False
    have = flatten(stored)
    return all(have.get(k) == v for k, v in flatten(normalised(parts)).items())


def find(paths, parts: dict, directory: bool = True) -> list[Path]:
    """The artefacts among `paths` whose stored key agrees with `parts`, newest first: what a job
    that only reads an artefact may use."""
    found = [Path(p) for p in paths if agrees(read_key(Path(p), directory), parts)]
    return sorted(found, key=lambda p: key_path(p, directory).stat().st_mtime, reverse=True)


class Artefact:
    """A file or directory on disk and the key it must have been made under.

    Producers of a file check `fresh`, build, then `seal` (the key goes last, after any old key was
    removed, so a crash in between leaves no key and the next run rebuilds). Producers of a
    directory filled piece by piece (traces, features, policies, an evaluation) call `open`, which
    keeps what a run with the same key left there, or clears it first, then stamps the key.
    """

    def __init__(self, path: str | Path, key: dict, what: str, directory: bool = False):
        self.path, self.key, self.what, self.directory = Path(path), normalised(key), what, directory

    @property
    def key_path(self) -> Path:
        return key_path(self.path, self.directory)

    def stored_key(self) -> dict | None:
        return read_key(self.path, self.directory)

    @property
    def fresh(self) -> bool:
        return self.path.exists() and self.stored_key() == self.key

    def changes(self) -> str:
        return changes(self.stored_key(), self.key)

    def seal(self) -> None:
        """Record the key beside the artefact just written."""
        write_json(self.key_path, self.key)

    def unseal(self) -> None:
        """Forget the key before the artefact is rewritten."""
        self.key_path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def rewrite(self):
        """`with artefact.rewrite(): <write artefact.path>`: the key is forgotten first and recorded
        only once the block is done, so a crash in between leaves no key and the next run makes the
        artefact again."""
        self.unseal()
        yield self.path
        self.seal()

    def open(self, owned: tuple[str, ...]) -> None:
        """Hold the directory and make it this key's: what a run with the same key left is kept;
        the files it `owned` (glob patterns) that another key made are deleted first. Files it does
        not own are never touched."""
        hold(self.path, self.what)
        if self.stored_key() == self.key:
            return
        old = [p for pattern in owned for p in self.path.glob(pattern)]
        if old:
            note(f"{self.path} holds {self.what} made under other settings ({self.changes()}); making them again")
            self.unseal()
            for p in old:
                remove(p)
        self.seal()


def remove(path: Path) -> None:
    """Delete a file or a directory tree (renamed aside first, so no half-deleted tree is ever read)."""
    if path.is_dir() and not path.is_symlink():
        doomed = path.with_name(f".{path.name}.deleting-{os.getpid()}")
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def damaged(path: Path, error: BaseException, action: str) -> None:
    """Say that a cached file could not be read and what happens now, then delete it."""
    why = reason(error)
    why = why.split(f"{path}: ", 1)[-1]  # the reader's own message names the file too
    note(f"{path} is damaged ({why}); {action}")
    remove(path)


def read_or_drop(path: Path, read, action: str):
    """`read(path)`, or None when the file is not there, or is damaged (then named, with `action`,
    and deleted): a cache's reader fails in many ways on a cut or garbled file, all meaning this."""
    if not path.is_file():
        return None
    try:
        return read(path)
    except Exception as error:
        damaged(path, error, action)
        return None


_held: dict[Path, int] = {}  # directories this process holds: their lock files' descriptors


def hold(directory: str | Path, what: str) -> None:
    """Mark `directory` as written by this process until it exits, however it exits: another live
    process holding it is one LtdError line."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    real = directory.resolve()
    if real in _held:
        return
    fd = os.open(real / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise LtdError(f"{directory} ({what}) is in use by a live job ({owner}): wait for it to end or choose "
                       f"another directory") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    _held[real] = fd


def release(directory: str | Path) -> None:
    """Let go of a held directory (and its lock file)."""
    real = Path(directory).resolve()
    fd = _held.pop(real, None)
    if fd is not None:
        (real / ".lock").unlink(missing_ok=True)
        os.close(fd)


@atexit.register
def _release_all() -> None:
    for directory in list(_held):
        release(directory)
