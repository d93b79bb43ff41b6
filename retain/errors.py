"""The root of every error retain raises for a user to read: the CLI turns any of them into
one line, ``error: <message>``, in one place (``retain.cli.main``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class RetainError(Exception):
    """Something the user can act on; the message says what and where."""


def system_error(exc: BaseException) -> str | None:
    """One line for an error of something retain talks to (the registry's database, the
    bucket, the file system); ``None`` for anything else (a bug: its traceback is wanted)."""
    kind = type(exc)
    if kind.__module__.startswith("sqlalchemy"):
        cause = getattr(exc, "orig", None) or exc
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return f"the registry's database cannot be used: {first}"
    if kind.__module__.startswith(("botocore", "boto3")):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else kind.__name__
        return f"the bucket (artifacts.url) refused or could not be reached: {kind.__name__}: {first}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return None


@contextmanager
def as_retain_errors() -> Iterator[None]:
    """Errors of the database, the bucket or the file system raised inside, as ``RetainError``."""
    try:
        yield
    except RetainError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated where it is a system's; re-raised otherwise
        message = system_error(exc)
        if message is None:
            raise
        raise RetainError(message) from exc
