"""The results store: one JSON object per line, appended by every `make train`, `make ablation` and
`make eval` (one row per task and method, with the run's experiment and overrides), so a report can
gather every run without knowing where its outputs went.

A store outlives the runs that write it, so it is written and read to survive them: each append
takes a lock on the file (POSIX, which NFS honours: jobs of a SLURM array may share a store), first
ends a line a crash or a full disk cut short, and writes its rows whole; a reader skips a line that
is not a whole JSON object, saying so once, instead of failing on it."""
import datetime
import fcntl
import io
import json
import os
from pathlib import Path

import pandas as pd

from ltd.artefacts import note


def append_rows(path: str | Path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, default=str) + "\n" for row in rows).encode()
    with open(path, "a+b") as f:  # read too: is the last byte a newline?
        fcntl.lockf(f, fcntl.LOCK_EX)
        try:
            end = os.fstat(f.fileno()).st_size
            if end and os.pread(f.fileno(), 1, end - 1) != b"\n":
                text = b"\n" + text  # the last line was cut: end it, so that no row is glued to it
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)


def stamped(rows: list[dict], run_dir: str | Path, **run) -> list[dict]:
    """Rows for the store: each with the time, the run directory and what `run` says of the run."""
    time = datetime.datetime.now().isoformat(timespec="seconds")
    return [dict(time=time, run_dir=str(run_dir), **run, **row) for row in rows]


def stored_run(path: str | Path, run_dir: str | Path) -> int:
    """How many rows of the store came from `run_dir` (a sweep's job that finished has some)."""
    store = load_store(path)
    return int((store["run_dir"] == str(run_dir)).sum()) if "run_dir" in store else 0


def readable_lines(path: Path) -> list[str]:
    """The store's lines that hold a whole JSON object; one note names the others (a row cut by a
    crash or a full disk, bytes that are not UTF-8, anything else)."""
    lines, skipped = [], []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            if isinstance(json.loads(raw), dict):
                lines.append(raw.decode())
                continue
        except (ValueError, UnicodeDecodeError):
            pass
        skipped.append(number)
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
        note(f"{path}: {len(skipped)} line(s) skipped, not a whole row (line {shown}; a run cut short?)")
    return lines


def load_store(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    lines = readable_lines(path)
    if not lines:
        return pd.DataFrame()
    return pd.read_json(io.StringIO("\n".join(lines)), lines=True)
