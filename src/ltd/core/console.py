"""What a job prints, kept beside its records."""
import io
import sys
from pathlib import Path


class Console(io.TextIOBase):
    """stdout, also appended to the run directory's console.log: the tables a job prints stay with
    its records (progress bars go to stderr, and stay out)."""

    def __init__(self, stream, path: Path):
        self.stream, self.file = stream, open(path, "a", encoding="utf-8")

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.file.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.file.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


def keep_console(directory: Path) -> None:
    """What this job prints from now on also goes to <directory>/console.log (a sweep's next job
    moves it to its own directory)."""
    stream = sys.stdout
    if isinstance(stream, Console):
        stream.file.close()
        stream = stream.stream
    sys.stdout = Console(stream, directory / "console.log")
