"""Log lines: one per event, structured fields, JSON for shippers, no colour for journald."""

import json
import logging

from conftest import logging_restored, retain
from retain.daemon.logs import JsonFormatter, TextFormatter, configure_logging, fields
from daemon_process import DaemonProcess, drop_atomically, npz_bytes, wait_for_batches


def record(message: str, **values) -> logging.LogRecord:
    item = logging.LogRecord("retain.test", logging.INFO, __file__, 1, message, None, None)
    item.fields = fields(**values)["fields"]
    return item


def test_text_lines_carry_key_value_fields_quoted_when_needed():
    line = TextFormatter(timestamps=False).format(record("batch rejected", batch=3, reason="NaN values found"))
    assert line == 'info retain.test "batch rejected" batch=3 reason="NaN values found"'


def test_json_lines_carry_the_same_fields():
    payload = json.loads(JsonFormatter().format(record("candidate registered", batch=2, version=5)))
    assert (payload["event"], payload["batch"], payload["version"], payload["level"]) == (
        "candidate registered", 2, 5, "info")


def test_another_librarys_records_come_out_in_the_json_format_too(capsys):
    with logging_restored():
        configure_logging("info", "json")
        logging.getLogger("watchdog.observers.inotify").error("InotifyEmitter.queue_events() called")
    [line] = capsys.readouterr().err.splitlines()
    payload = json.loads(line)
    assert (payload["event"], payload["level"], payload["logger"]) == (
        "InotifyEmitter.queue_events() called", "error", "watchdog.observers.inotify")


def test_daemon_json_logs_name_batch_version_strategy_and_decision(workspace, digit_data):
    x, y = digit_data
    with DaemonProcess(workspace, "--log-format", "json") as daemon:
        drop_atomically(npz_bytes(x[500:700], y[500:700]), workspace.parent / "inbox", "b.npz")
        wait_for_batches(workspace, 1)
        daemon.stop()
    events = [json.loads(line) for line in daemon.output().splitlines() if line.strip()]
    registered = next(e for e in events if e["event"] == "candidate registered")
    assert {"batch", "version", "strategy", "decision"} <= set(registered)
    assert "\x1b[" not in daemon.output()


def test_cli_errors_have_no_colour_codes_off_a_terminal(workspace):
    result = retain(workspace, "show", "99", check=False, process=True)
    assert result.returncode != 0 and "\x1b[" not in result.stderr
