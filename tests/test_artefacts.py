"""Keys of cached artefacts, directories held by live jobs, file modes, run directories, and
damaged caches made again."""
import json
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import save_tiny_checkpoint
from ltd.cli.app import new_run_id
from ltd.config.files import CONFIG_PATH
from ltd.core.artefacts import Artefact, changes, find, hold, release
from ltd.core.atomic import write_directory, write_file, write_json
from ltd.core.errors import LtdError
from ltd.core.fingerprints import file_digest, machine
from ltd.models import targets

TASK = str(Path(CONFIG_PATH).parent / "data" / "bench" / "mt_bench" / "question.jsonl")


def test_a_directory_is_reused_only_under_its_own_key(tmp_path, capsys):
    key = {"model": {"name": "m", "weights": "sha256:aaaa"}, "max_new_tokens": 16}
    first = Artefact(tmp_path / "traces", key, "traces", directory=True)
    first.open(owned=("*.bin",))
    assert first.stored_key() == key
    (first.path / "a.bin").write_text("made under the first key")
    (first.path / "notes.txt").write_text("not the artefact's")
    release(first.path)
    Artefact(tmp_path / "traces", key, "traces", directory=True).open(owned=("*.bin",))
    assert (first.path / "a.bin").exists() and capsys.readouterr().err == ""  # the same key: kept
    release(first.path)

    other = dict(key, max_new_tokens=200)
    again = Artefact(tmp_path / "traces", other, "traces", directory=True)
    again.open(owned=("*.bin",))
    assert "made under other settings (max_new_tokens 16 -> 200); making them again" in capsys.readouterr().err
    assert not (tmp_path / "traces" / "a.bin").exists() and (tmp_path / "traces" / "notes.txt").exists()
    assert again.stored_key() == other
    release(again.path)


def test_changes_name_what_differs_in_one_line():
    old = {"drafter": {"kind": "eagle3", "weights": "sha256:1a2b3c4d5e6f7a8b"}, "top_k": 10}
    new = {"drafter": {"kind": "eagle3", "weights": "sha256:9f8e7d6c5b4a3f2e"}, "top_k": 4}
    assert changes(old, new) == "drafter.weights 1a2b3c4d -> 9f8e7d6c, top_k 10 -> 4"
    assert changes(None, new).startswith("no key stored")


def test_a_file_artefact_is_fresh_only_when_sealed_with_its_key(tmp_path):
    profile = Artefact(tmp_path / "profile.json", {"machine": machine(2)}, "cost model")
    assert not profile.fresh
    write_json(profile.path, {"verify_s": [0.1]})
    assert not profile.fresh  # written, not yet sealed: a crash here leaves no key
    profile.seal()
    assert profile.fresh and profile.key_path.name == "profile.json.key.json"
    assert not Artefact(profile.path, {"machine": machine(1)}, "cost model").fresh  # another thread count
    assert find([profile.path], {"machine": {"threads": 2}}, directory=False) == [profile.path]
    assert find([profile.path], {"machine": {"threads": 1}}, directory=False) == []


def test_a_held_directory_refuses_another_live_job_until_it_ends(tmp_path):
    held = tmp_path / "run"
    code = (f"import time; from ltd.core.artefacts import hold; hold({str(held)!r}, 'a test'); print('held', flush=True); "
            f"time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LtdError, match=rf"{held} \(a test\) is in use by a live job \(pid {holder.pid} on "):
            hold(held, "a test")
    finally:
        holder.send_signal(signal.SIGKILL)  # killed outright: the OS drops its lock
        holder.wait()
    hold(held, "a test")
    release(held)


def test_files_get_the_users_umask(tmp_path):
    code = ("import os, sys; os.umask(int(sys.argv[2], 8)); from ltd.core.atomic import write_file, write_directory; "
            "write_file(sys.argv[1] + '/f', lambda p: p.write_text('x')); "
            "write_directory(sys.argv[1] + '/d', lambda p: (p / 'g').write_text('y'))")
    for umask, file_mode, directory_mode in (("022", 0o644, 0o755), ("002", 0o664, 0o775), ("077", 0o600, 0o700)):
        out = tmp_path / umask
        out.mkdir()
        subprocess.run([sys.executable, "-c", code, str(out), umask], check=True)
        assert stat.S_IMODE((out / "f").stat().st_mode) == file_mode
        assert stat.S_IMODE((out / "d").stat().st_mode) == directory_mode
        assert stat.S_IMODE((out / "d" / "g").stat().st_mode) == file_mode


def test_file_digests_follow_the_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("LTD_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    first = file_digest(path)
    assert file_digest(path) == first and (tmp_path / "cache" / "digests.json").is_file()
    write_file(path, lambda tmp: tmp.write_bytes(b"b" * 1000))  # same size, new bytes
    assert file_digest(path) != first


def test_run_ids_differ_within_a_second():
    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50 and len({i[:19] for i in ids}) <= 2


def test_two_jobs_started_together_get_two_run_directories(tmp_path):
    model = tmp_path / "model"
    save_tiny_checkpoint(model)
    work = tmp_path / "work"
    work.mkdir()
    command = [sys.executable, "-m", "ltd.cli.eval", "model=smollm2-135m", "model.name=tiny",
               f"model.source={model}", "model.max_context=256", "drafter.draft_vocab_size=64",
               f"drafter.root={tmp_path}", f"task.path={TASK}", "task.name=mt_bench", "questions=1",
               "max_new_tokens=4", "warmup_tokens=2", "logger=none", "threads=1",
               "methods=[autoregressive,eagle3_default]", f"results={tmp_path / 'results'}"]
    jobs = [subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [job.communicate() for job in jobs]
    assert all(job.returncode == 0 for job in jobs), outputs
    runs = sorted((work / "outputs" / "eval").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert (run / "summary.json").is_file() and (run / ".hydra" / "config.yaml").is_file()
        assert json.loads((run / "summary.json").read_text())["questions_done"] == 1


def fake_dequantise(tiny_dir: Path, calls: list):
    """A stand-in for dequantising a GGUF: the tiny checkpoint's files, with the cache's key."""
    def write(cache, gguf):
        calls.append(gguf)

        def fill(tmp: Path):
            for f in tiny_dir.iterdir():
                shutil.copy(f, tmp / f.name)
            (tmp / "ltd.json").write_text(json.dumps({"stop_token_ids": [1]}))
            (tmp / "key.json").write_text(json.dumps(cache.key))

        write_directory(cache.path, fill)
    return write


def test_a_damaged_or_stale_model_cache_is_named_and_made_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LTD_CACHE", str(tmp_path / "cache"))
    tiny = tmp_path / "tiny"
    save_tiny_checkpoint(tiny)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    calls = []
    monkeypatch.setattr(targets, "write_dense_cache", fake_dequantise(tiny, calls))
    load = lambda: targets.load_gguf("tiny", str(gguf), gguf=gguf, max_context=256, dtype=torch.float32, device="cpu",
                                     quantize=None)

    first = load()
    cache = Path(first.hf_path)
    assert len(calls) == 1 and cache.name == f"tiny-{file_digest(gguf)[:12]}"
    assert load().decoder.spec.vocab_size == 101 and len(calls) == 1  # reused

    weights = cache / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # cut short
    capsys.readouterr()
    assert load().decoder.spec.vocab_size == 101 and len(calls) == 2
    err = capsys.readouterr().err
    assert f"note: {weights} is damaged (" in err and f"making the model cache {cache} again" in err

    (cache / "key.json").write_text(json.dumps({"artefact": "dense model", "format": 0}))
    load()
    assert len(calls) == 3 and "is not the dequantised tiny.gguf (format 0 -> 1" in capsys.readouterr().err


def test_a_killed_evaluation_resumes_to_the_uninterrupted_summary(tmp_path):
    model = tmp_path / "model"
    save_tiny_checkpoint(model)
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"question_id": i, "category": "c", "turns": [f"hello w{i} w{i + 7} world"]})
                            + "\n" for i in range(10, 18)))
    command = [sys.executable, "-m", "ltd.cli.eval", "model=smollm2-135m", "model.name=tiny",
               f"model.source={model}", "model.max_context=256", "drafter.draft_vocab_size=64",
               f"drafter.root={tmp_path}", f"task.path={task}", "task.name=tiny", "max_new_tokens=48",
               "warmup_tokens=2", "logger=none", "threads=1", "methods=[autoregressive,eagle3_default,gammatune]",
               f"results={tmp_path / 'results'}"]
    whole = subprocess.run([*command, f"hydra.run.dir={tmp_path / 'whole'}"], capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-2000:]

    cut = tmp_path / "cut"
    job = subprocess.Popen([*command, f"hydra.run.dir={cut}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while job.poll() is None and not (cut / "summary.json").exists():
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait()

    resumed = subprocess.run([*command, f"resume={cut}"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    done = int(resumed.stdout.split(f"resuming {cut}: ")[1].split(" of 8 questions already decoded")[0])
    assert 1 <= done < 8, "the evaluation finished before it could be killed: give it more to do"
    summary = lambda run: json.loads((run / "summary.json").read_text())
    same = ("method", "questions", "tokens", "tau", "lossless")
    assert ([{k: row[k] for k in same} for row in summary(cut)["methods"]]
            == [{k: row[k] for k in same} for row in summary(tmp_path / "whole")["methods"]])
    assert summary(cut)["questions_done"] == 8
    import pandas as pd

    rows = lambda run: pd.read_parquet(run / "questions.parquet")[["method", "question_id", "tokens", "cycles"]]
    pd.testing.assert_frame_equal(rows(cut), rows(tmp_path / "whole"))
    cycles = pd.read_parquet(cut / "cycles.parquet")
    assert len(cycles) == len(pd.read_parquet(tmp_path / "whole" / "cycles.parquet"))

    again = subprocess.run([*command, f"resume={cut}", "max_new_tokens=40"], capture_output=True, text=True)
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1] == (
        f"error: cannot resume {cut}: it ran under other settings (max_new_tokens 48 -> 40)")
    sessions = [p for p in (cut / ".hydra").iterdir() if p.is_dir()]
    assert len(sessions) == 1 and (cut / ".hydra" / "config.yaml").is_file()  # the refused session left nothing
    fresh = subprocess.run([*command, f"hydra.run.dir={cut}"], capture_output=True, text=True)
    assert fresh.returncode == 2 and f"already holds an evaluation: resume={cut} goes on with it" in fresh.stderr


def test_a_rewrite_that_crashes_leaves_no_key(tmp_path):
    """with artefact.rewrite(): the old key goes before the writing, the new one after it."""
    artefact = Artefact(tmp_path / "file.txt", {"v": 1}, "a file")
    with artefact.rewrite():
        artefact.path.write_text("one")
    assert artefact.fresh
    changed = Artefact(artefact.path, {"v": 2}, "a file")
    with pytest.raises(RuntimeError), changed.rewrite():
        artefact.path.write_text("half")
        raise RuntimeError("killed")
    assert not changed.key_path.exists() and not artefact.fresh and not changed.fresh
