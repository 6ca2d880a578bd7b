"""The results store: one JSON object per line, appended by every `make train` and `make ablation`
(one row per task and method), so a report can gather every run without knowing where its
outputs went. Appending whole lines with one write keeps the file readable after a crash."""
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


def load_store(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    return pd.read_json(path, lines=True)
