"""Webhooks from the registry's outbox, against a real HTTP server on loopback that fails the
first attempts."""

import hashlib
import hmac
import json
import logging
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import free_port, retain, save_npz, wait_for, write_config
from daemon_process import DaemonThread

SECRET = "s3cr3t"


class Receiver:
    """Answers 503 to the first ``failures`` requests of each idempotency key, then 200."""

    def __init__(self, failures: int = 2) -> None:
        self.requests: list[tuple[dict, bytes, int]] = []
        self.tries: dict[str, int] = defaultdict(int)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers["Idempotency-Key"]
                receiver.tries[key] += 1
                code = 503 if receiver.tries[key] <= failures else 200
                receiver.requests.append((dict(self.headers), body, code))
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> dict[str, list]:
        """Each event kind's successful deliveries: (headers, body)."""
        found = defaultdict(list)
        for headers, body, code in self.requests:
            if code == 200:
                found[headers["X-Retain-Event"]].append((headers, json.loads(body), body))
        return found


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.server.shutdown()


def test_events_are_delivered_once_signed_after_retries(workspace, digit_data, receiver):
    x, y = digit_data
    write_config(workspace.parent, gate={"max_forgetting": 1.0, "min_gain": -1.0},
                 webhooks=[{"url": receiver.url, "secret": SECRET, "backoff_seconds": 0.05,
                            "events": ["version.registered", "version.promoted", "batch.rejected"]}])
    with DaemonThread(workspace):
        save_npz(workspace.parent / "inbox" / "good.npz", x[500:700], y[500:700])
        (workspace.parent / "inbox" / "bad.npz").write_bytes(b"not an archive")
        wanted = {"version.registered": 2, "version.promoted": 2, "batch.rejected": 1}  # init's and the batch's
        wait_for(lambda: {k: len(v) for k, v in receiver.delivered().items()} == wanted, timeout=60,
                 message=f"deliveries {wanted}")
    delivered = receiver.delivered()
    for kind, items in delivered.items():
        for headers, body, raw in items:
            expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
            assert headers["X-Retain-Signature"] == expected
            assert receiver.tries[headers["Idempotency-Key"]] == 3  # two 503s, then the 200, same key each time
            assert body["event"] == kind and body["model"] == "default" and body["id"] == headers["Idempotency-Key"]
    registered = [body["data"] for _, body, _ in delivered["version.registered"]]
    assert [d["version"] for d in registered] == [1, 2]
    assert {"forgetting", "acc_new_candidate", "rationale", "strategy"} <= set(registered[1])
    promoted = sorted(body["data"]["version"] for _, body, _ in delivered["version.promoted"])
    assert promoted == [1, 2]
    (rejected,) = delivered["batch.rejected"]
    assert rejected[1]["data"]["name"] == "bad.npz" and "corrupt" in rejected[1]["data"]["reason"]
    assert json.loads(retain(workspace, "webhooks", "--json").stdout) == []  # nothing pending or failed


class Collected(logging.Handler):
    """The records of the loggers it is added to, as JSON log lines (a handler on the child
    loggers themselves: a command run in this process turns the parent's propagation off while
    it runs, and the daemon's threads log meanwhile)."""

    def __init__(self, *names: str) -> None:
        super().__init__(logging.INFO)
        self.names = names
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        from retain.daemon.logs import JsonFormatter

        self.lines.append(json.loads(JsonFormatter().format(record)))

    def __enter__(self) -> "Collected":
        for name in self.names:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        for name in self.names:
            logging.getLogger(name).removeHandler(self)


def test_a_webhook_that_never_answers_ends_failed_and_is_listed(workspace):
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    write_config(workspace.parent, webhooks=[{"url": dead, "max_attempts": 2, "backoff_seconds": 0.05,
                                               "timeout_seconds": 1, "events": ["version.registered"]}])
    with Collected("retain.webhooks", "retain.daemon") as collected, DaemonThread(workspace):
        wait_for(lambda: json.loads(retain(workspace, "webhooks", "--json").stdout)[-1:]
                 and json.loads(retain(workspace, "webhooks", "--json").stdout)[-1]["state"] == "failed",
                 timeout=30, message="the delivery to fail")
    (row,) = json.loads(retain(workspace, "webhooks", "--json").stdout)
    assert (row["event"], row["attempts"], row["url"]) == ("version.registered", 2, dead)
    assert "Connection refused" in row["last_error"] or "URLError" in row["last_error"]
    lines = collected.lines
    failures = [line for line in lines if line["event"] == "webhook delivery failed"]
    assert len(failures) == 2 and failures[0]["webhook_event"] == "version.registered"
    [said] = [line for line in lines if line["event"] == "configured endpoint unreachable"]  # at start, once
    assert said["key"] == "webhooks[0].url" and "IPAddressAllow=" in said["hint"]


def test_a_webhook_url_with_credentials_is_refused_at_load_without_printing_them(workspace):
    write_config(workspace.parent, webhooks=[{"url": "http://alice:PASSWORD@127.0.0.1:9/hook"}])
    result = retain(workspace, "webhooks", check=False)
    assert result.returncode != 0 and "may not hold credentials" in result.stderr
    assert "PASSWORD" not in result.stderr + result.stdout


def test_without_webhooks_events_are_marked_dispatched_not_kept_for_a_later_one(workspace):
    from retain.registry.tables import OutboxEvent
    from sqlmodel import Session, select

    with DaemonThread(workspace) as daemon:
        registry = daemon.registry

        def all_dispatched():
            with Session(registry.engine) as session:
                return all(e.dispatched for e in session.exec(select(OutboxEvent)))

        wait_for(all_dispatched, timeout=20, message="init's events dispatched")
        assert registry.count_deliveries(("pending", "sending", "delivered", "failed")) == 0
