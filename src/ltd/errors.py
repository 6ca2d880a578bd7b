class LtdError(Exception):
    """A mistake in the user's input or config: entry points print it as one line, no traceback."""
