class LtdError(Exception):
    """A mistake in the user's input or config: entry points print it as one line, no traceback."""


def reason(error: BaseException) -> str:
    """What went wrong, short enough for one line: the first sentence of the error's first line
    (readers of damaged files go on for a paragraph)."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    return text.splitlines()[0].split(". ")[0].rstrip(".")


class NotLossless(Exception):
    """A decoded output that is not the target's own: a bug, not a user's mistake. Entry points print
    it as one line naming the method, task and question, keep what the run wrote, and exit 1."""
