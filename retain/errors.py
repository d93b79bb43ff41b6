"""The root of every error retain raises for a user to read: the CLI turns any of them into
one line, ``error: <message>``, in one place (``retain.cli.main``)."""


class RetainError(Exception):
    """Something the user can act on; the message says what and where."""
