"""The results store: one JSON object per line, appended by every `make train`, `make ablation` and
`make eval` (one row per task and method, with the run's experiment and overrides), so a report can
gather every run without knowing where its outputs went.

A store outlives the runs that write it, so it is written and read to survive them: each append
takes a lock on the file (POSIX, which NFS honours: jobs of a SLURM array may share a store), first
ends a line a crash or a full disk cut short, and writes its rows whole; a reader skips a line that
is not a whole JSON object, saying so once, instead of failing on it."""
import contextlib
import datetime
import fcntl
import io
import json
import os
from pathlib import Path

import pandas as pd

from ltd.core.artefacts import note
from ltd.core.atomic import write_file
from ltd.core.errors import LtdError


def append_rows(path: str | Path, rows: list[dict]) -> None:
    """Append `rows` whole, in turn with other writers. Where the append fails (a full disk), the
    store is put back as it was and one LtdError line says where the rows were kept instead."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, default=str) + "\n" for row in rows).encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        end = os.fstat(fd).st_size
        lead = b"\n" if end and os.pread(fd, 1, end - 1) != b"\n" else b""  # end a cut last line
        try:
            written = lead + text
            while written:
                written = written[os.write(fd, written):]
            os.fsync(fd)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)  # no half row left behind, no row stored twice
            raise LtdError(unstored(path, rows, text, error)) from None
    finally:
        os.close(fd)  # releases the lock


def unstored(path: Path, rows: list[dict], text: bytes, error: OSError) -> str:
    """Where rows that could not be appended went (their run directory, if it can be written), and
    how to append them later."""
    run_dir = rows[0].get("run_dir") if rows else None
    if run_dir:
        kept = Path(run_dir) / "unstored-rows.jsonl"
        with contextlib.suppress(OSError):
            write_file(kept, lambda tmp: tmp.write_bytes(text))
            return (f"could not append {len(rows)} rows to {path} ({error.strerror}): they are in {kept}; "
                    f"once there is room: (echo; cat {kept}) >> {path}")
    return f"could not append {len(rows)} rows to {path} ({error.strerror}), nor keep them elsewhere"


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
