"""Checks before the work: a folder a job cannot write, or without room, is one line at start-up."""
import collections
import errno
import os
import subprocess
import sys

import pytest

from ltd.core.errors import LtdError
from ltd.core.preflight import check_writable


def test_a_folder_to_be_made_is_checked_where_it_would_be_made(tmp_path):
    check_writable(tmp_path / "a" / "b", "results")
    assert list(tmp_path.iterdir()) == []  # nothing made to find out


def test_a_file_in_the_way_is_one_line(tmp_path):
    (tmp_path / "results").write_text("")
    with pytest.raises(LtdError, match=f"cannot write results at {tmp_path}/results/x: {tmp_path}/results is a file"):
        check_writable(tmp_path / "results" / "x", "results")


def test_a_read_only_filesystem_is_one_line(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("ltd.core.preflight.tempfile.TemporaryFile", read_only)
    with pytest.raises(LtdError, match=f"cannot write results at {tmp_path}: Read-only file system"):
        check_writable(tmp_path, "results")


def test_too_little_room_is_one_line(tmp_path, monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr("ltd.core.preflight.shutil.disk_usage", lambda path: usage(2**40, 2**40 - 2**30, 2**30))
    with pytest.raises(LtdError, match=r"not enough room for the model cache at .*: 1.00 GiB free in .*, about "
                                       r"3.00 GiB needed"):
        check_writable(tmp_path, "the model cache", 3 * 2**30)


@pytest.mark.parametrize("setting", ["results", "cache"])
def test_a_job_stops_before_the_work_and_leaves_nothing(tmp_path, setting):
    """make eval with results= or LTD_CACHE on a file: one line, exit 2, before any model loads."""
    work, blocker = tmp_path / "work", tmp_path / "blocker"
    work.mkdir()
    blocker.write_text("")
    env = dict(os.environ, **({"LTD_CACHE": str(blocker)} if setting == "cache" else {}))
    args = [sys.executable, "-m", "ltd.cli.eval", "model=smollm2-135m", "logger=none"]
    if setting == "results":
        args.append(f"results={blocker}/results")
    result = subprocess.run(args, capture_output=True, text=True, cwd=work, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    what = "results" if setting == "results" else "the model cache (LTD_CACHE)"
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write {what} at {blocker}{'/results' if setting == 'results' else ''}: {blocker} is a file, "
        f"not a folder"]
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("command, what", [
    (["ltd.cli.table1", "sweep=cpu_table1", "results={blocker}/results"], "the table at {blocker}/results/tables"),
    (["ltd.cli.analysis", "results={work}/results", "out={blocker}/analysis"], "the analysis at {blocker}/analysis"),
    (["ltd.cli.dashboard", "out={blocker}/dashboard"], "the dashboard's specs at {blocker}/dashboard"),
])
def test_a_report_stops_before_the_work_when_its_output_cannot_be_written(tmp_path, command, what):
    """make table1, make analysis and make dashboard: one line, exit 2, nothing written."""
    work, blocker = tmp_path / "work", tmp_path / "blocker"
    (work / "results").mkdir(parents=True)
    (work / "results" / "store.jsonl").write_text('{"method": "ltd", "task": "gsm8k", "speedup": 1.5}\n')
    blocker.write_text("")
    args = [part.format(work=work, blocker=blocker) for part in command]
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=work,
                            env=dict(os.environ, WANDB_MODE="offline"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write {what.format(blocker=blocker)}: {blocker} is a file, not a folder"]
    assert sorted(p.name for p in work.rglob("*")) == ["results", "store.jsonl"]
