"""The results store: one JSON object per line, appended by every `make train`, `make ablation` and
`make eval` (one row per task and method, with the run's experiment and overrides), so a report can gather every run without knowing where its
outputs went. Appending whole lines with one write keeps the file readable after a crash."""
import datetime
import json
import os
from pathlib import Path

import pandas as pd


def append_rows(path: str | Path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, default=str) + "\n" for row in rows)
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def stamped(rows: list[dict], run_dir: str | Path, **run) -> list[dict]:
    """Rows for the store: each with the time, the run directory and what `run` says of the run."""
    time = datetime.datetime.now().isoformat(timespec="seconds")
    return [dict(time=time, run_dir=str(run_dir), **run, **row) for row in rows]


def stored_run(path: str | Path, run_dir: str | Path) -> int:
    """How many rows of the store came from `run_dir` (a sweep's job that finished has some)."""
    store = load_store(path)
    return int((store["run_dir"] == str(run_dir)).sum()) if "run_dir" in store else 0


def load_store(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    return pd.read_json(path, lines=True)
