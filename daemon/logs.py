"""Logging: one line per event with structured fields, as ``key=value`` text or JSON.

Code logs ``logger.info("batch processed", extra=fields(batch=3, version=7))``. The text
format never colours its output, so journald stores plain lines.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]


def fields(**values: Any) -> dict[str, dict[str, Any]]:
    """``extra=`` payload carrying structured fields for one log line."""
    return {"fields": values}


def _format_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    def __init__(self, timestamps: bool = True) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        parts = []
        if self.timestamps:
            parts.append(datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z")
        parts += [record.levelname.lower(), record.name, _format_value(record.getMessage())]
        for key, value in getattr(record, "fields", {}).items():
            parts.append(f"{key}={_format_value(value)}")
        line = " ".join(parts)
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # The line's own keys last: a field of the same name cannot hide what the line is.
        payload = {
            **getattr(record, "fields", {}),
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str = "info", log_format: LogFormat = "text") -> None:
    """Send ``retain.*`` logs to stderr. Under systemd (``JOURNAL_STREAM`` set) the text
    format drops its own timestamps: the journal records them."""
    import os

    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(timestamps="JOURNAL_STREAM" not in os.environ))
    for name in ("retain", "py.warnings"):  # library warnings become log lines too
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    # Other libraries' records (watchdog's, say) in the same format: without a handler, Python
    # prints them bare, which breaks a JSON log stream.
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
