"""The results store survives what ends runs badly: a row cut by a crash or a full disk, garbage,
and writers appending at once (the jobs of a SLURM array sharing one results directory)."""
import errno
import fcntl
import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from ltd.core.errors import LtdError
from ltd.eval.store import append_rows, load_store

ROWS = [{"method": "autoregressive", "task": "gsm8k", "speed-up": 1.0},
        {"method": "ltd", "task": "gsm8k", "speed-up": 2.1}]


def test_a_cut_row_is_skipped_and_the_next_append_ends_it(tmp_path, capsys):
    store = tmp_path / "store.jsonl"
    append_rows(store, ROWS)
    with open(store, "ab") as f:  # a full disk cut the next append in the middle of its row
        f.write(json.dumps(ROWS[1]).encode()[:20])
    assert len(load_store(store)) == 2
    assert "1 line(s) skipped" in capsys.readouterr().err
    append_rows(store, [dict(ROWS[0], task="qa")])
    table = load_store(store)
    assert list(table["task"]) == ["gsm8k", "gsm8k", "qa"]  # nothing glued to the cut row
    assert len(store.read_text().splitlines()) == 4


def test_garbage_lines_are_skipped_and_named(tmp_path, capsys):
    store = tmp_path / "store.jsonl"
    append_rows(store, ROWS[:1])
    with open(store, "ab") as f:
        f.write(b"\xff\xfe not utf-8\n[1, 2]\n{not json\n\n")
    append_rows(store, ROWS[1:])
    assert list(load_store(store)["method"]) == ["autoregressive", "ltd"]
    assert "3 line(s) skipped, not a whole row (line 2, 3, 4" in capsys.readouterr().err


def test_a_store_of_garbage_alone_reads_as_empty(tmp_path):
    store = tmp_path / "store.jsonl"
    store.write_bytes(b"{cut")
    assert load_store(store).empty


def write_many(store: str, writer: int) -> None:
    for batch in range(100):
        append_rows(store, [{"writer": writer, "row": 10 * batch + i, "padding": "x" * 300} for i in range(10)])


def test_eight_writers_of_a_thousand_rows_lose_and_interleave_nothing(tmp_path):
    store = tmp_path / "store.jsonl"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=write_many, args=(str(store), w)) for w in range(8)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    lines = store.read_text().splitlines()
    assert len(lines) == 8000
    rows = [json.loads(line) for line in lines]  # each line one whole row
    assert sorted((r["writer"], r["row"]) for r in rows) == [(w, i) for w in range(8) for i in range(1000)]


def test_an_append_waits_for_the_writer_holding_the_lock(tmp_path):
    """Appends take turns through a POSIX lock, which a shared filesystem (NFS) honours across
    machines, where appending alone would not keep rows apart."""
    store = tmp_path / "store.jsonl"
    append_rows(store, ROWS[:1])
    with open(store, "ab") as held:
        fcntl.lockf(held, fcntl.LOCK_EX)
        writer = subprocess.Popen([sys.executable, "-c", "import sys; from ltd.eval.store import append_rows; "
                                   "append_rows(sys.argv[1], [{'method': 'late'}])", str(store)])
        time.sleep(3)
        still_waiting = writer.poll() is None
        rows_while_held = len(store.read_text().splitlines())
        fcntl.lockf(held, fcntl.LOCK_UN)
    assert writer.wait(timeout=60) == 0
    assert still_waiting and rows_while_held == 1
    assert list(load_store(store)["method"]) == ["autoregressive", "late"]


@pytest.mark.parametrize("reader", ["eval", "analysis"])
def test_jobs_and_reports_read_a_damaged_store(tmp_path, reader):
    """make eval and make sweep (has this job finished before?), make analysis and make table1
    read the store through the same reader."""
    store = tmp_path / "store.jsonl"
    append_rows(store, ROWS)
    with open(store, "ab") as f:
        f.write(b'{"method": "cut')
    if reader == "eval":
        from ltd.jobs.sweeps import finished_before

        assert not finished_before(str(tmp_path), tmp_path / "some-run")
    else:
        from ltd.analysis.sources import Results

        assert len(Results(tmp_path).store) == 2


def test_a_full_disk_during_the_append_keeps_the_rows_and_the_store_as_it_was(tmp_path, monkeypatch):
    store, run_dir = tmp_path / "results" / "store.jsonl", tmp_path / "run"
    run_dir.mkdir()
    append_rows(store, ROWS)
    before = store.read_bytes()
    real_write = os.write

    def full_after_a_few_bytes(fd, data):  # the disk fills in the middle of the rows
        if fd > 2 and len(data) > 30:
            real_write(fd, data[:30])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr("ltd.eval.store.os.write", full_after_a_few_bytes)
    late = [dict(row, run_dir=str(run_dir)) for row in ROWS]
    with pytest.raises(LtdError) as error:
        append_rows(store, late)
    kept = run_dir / "unstored-rows.jsonl"
    assert str(error.value) == (f"could not append 2 rows to {store} (No space left on device): they are in {kept}; "
                                f"once there is room: (echo; cat {kept}) >> {store}")
    assert store.read_bytes() == before
    assert [json.loads(line) for line in kept.read_text().splitlines()] == late


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KiB filesystem (a tmpfs: root, or wherever mounting is allowed), so that a full disk
    is the kernel's ENOSPC, not an injected one; skipped where no tmpfs can be mounted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("no tmpfs can be mounted here; the injected ENOSPC above stands in for a full disk")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_store_on_a_disk_that_fills_up_is_put_back_and_its_rows_append_later(tmp_path, small_disk):
    """The disk fills in the middle of an append: the store is as it was, the rows wait in the run
    directory, and the command the error prints appends them once there is room."""
    store, run_dir = small_disk / "results" / "store.jsonl", tmp_path / "run"
    run_dir.mkdir()
    append_rows(store, ROWS)
    before = store.read_bytes()
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # all the room but 2 KB
        f.write(b"x" * (os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize - 2048))
    late = [dict(row, run_dir=str(run_dir), padding="y" * 3000) for row in ROWS]  # 6 KB: more than is left
    with pytest.raises(LtdError, match="No space left on device") as error:
        append_rows(store, late)
    assert store.read_bytes() == before
    filler.unlink()
    command = str(error.value).split("once there is room: ")[1]
    subprocess.run(["bash", "-c", command], check=True)
    rows = load_store(store)
    assert rows[["method", "task", "speed-up"]].values.tolist() == [list(row.values()) for row in ROWS] * 2
    assert rows["padding"].iloc[2:].tolist() == ["y" * 3000] * 2


def test_eval_on_a_store_cut_by_a_full_disk_runs_and_keeps_every_row(tmp_path, tiny_model_dir):
    """A store whose last row a full disk cut (the old append): the next make eval on it runs, and the
    store holds every earlier row and the new ones."""
    results = tmp_path / "results"
    append_rows(results / "store.jsonl", ROWS)
    with open(results / "store.jsonl", "ab") as f:
        f.write(b'{"method": "ltd", "task": "mt_bench", "spe')
    result = subprocess.run(
        [sys.executable, "-m", "ltd.cli.eval", "model=smollm2-135m", "model.name=tiny", f"model.source={tiny_model_dir}",
         "model.max_context=256", "drafter.draft_vocab_size=64", f"drafter.root={tmp_path}", "logger=none",
         f"results={results}", "threads=1", "questions=1", "max_new_tokens=4", "methods=[autoregressive]",
         "task=gsm8k", f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    store = load_store(results / "store.jsonl")
    assert store[["method", "task"]].values.tolist()[:2] == [["autoregressive", "gsm8k"], ["ltd", "gsm8k"]]
    assert len(store) > 2 and set(store["run_dir"].iloc[2:]) == {str(tmp_path / "run")}
