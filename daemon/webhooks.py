"""Webhook deliveries: a thread beside the daemon's loop that fans the registry's outbox out to
``[[webhooks]]`` and POSTs each event, signed, retried with backoff until a 2xx or its last
attempt. It never blocks training; the queue is in the registry, so a delivery survives a
restart and several workers share it (each delivery is leased to one of them at a time)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import urllib.error
import urllib.request

from retain.daemon.config import WebhookConfig
from retain.daemon.logs import fields
from retain.daemon.outage import Outages
from retain.registry import Registry
from retain.registry.tables import OutboxEvent, WebhookDelivery, as_utc

log = logging.getLogger("retain.webhooks")

SIGNATURE_HEADER = "X-Retain-Signature"
_POLL_SECONDS = 0.5


def envelope(event: OutboxEvent) -> bytes:
    """The JSON body: the event's kind, id (its idempotency key), time and data."""
    body = {"event": event.kind, "id": event.key, "at": as_utc(event.created_at).isoformat(),
            "model": event.model, "data": json.loads(event.payload)}
    return json.dumps(body, sort_keys=True).encode()


def signature(key: bytes, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the body; a receiver recomputes it with the shared secret."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class WebhookSender:
    def __init__(self, registry: Registry, webhooks: list[WebhookConfig], outages: Outages | None = None) -> None:
        self.registry = registry
        self.outages = outages or Outages()  # the daemon's: one outage is said once, whoever meets it
        self.webhooks = {hook.url: hook for hook in reversed(webhooks)}  # the first table for a URL wins
        self.targets = [(hook.url, frozenset(hook.events)) for hook in webhooks]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send_due(self) -> int:
        """Fan out new events, then try every delivery due now; returns how many were tried."""
        self.registry.dispatch_events(self.targets)
        if not self.webhooks:
            return 0
        lease = max(hook.timeout_seconds for hook in self.webhooks.values()) * 3
        claimed = self.registry.claim_deliveries(lease)
        for delivery, event in claimed:
            self._send(delivery, event)
        return len(claimed)

    def _send(self, delivery: WebhookDelivery, event: OutboxEvent) -> None:
        hook = self.webhooks.get(delivery.url)
        if hook is None:  # the webhook left the config: nothing to send it with
            self.registry.delivery_failed(delivery.id, "no [[webhooks]] table has this url any more", 0, 1)
            return
        body = envelope(event)
        request = urllib.request.Request(delivery.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "retain-webhooks",
            "X-Retain-Event": event.kind, "Idempotency-Key": event.key, "X-Retain-Delivery": str(delivery.id),
            SIGNATURE_HEADER: signature(hook.signing_key(), body)})
        try:
            with urllib.request.urlopen(request, timeout=hook.timeout_seconds) as response:
                response.read(1024)
            self.registry.delivery_succeeded(delivery.id)
            # webhook_event, not event: the JSON log line's "event" is the line's own message.
            log.info("webhook delivered", extra=fields(url=delivery.url, webhook_event=event.kind, key=event.key,
                                                       attempt=delivery.attempts))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError) else f"{type(exc).__name__}: {exc}"
            after = self.registry.delivery_failed(delivery.id, reason, hook.max_attempts, hook.backoff_seconds)
            log.warning("webhook delivery failed", extra=fields(url=delivery.url, webhook_event=event.kind,
                                                                key=event.key, attempt=delivery.attempts,
                                                                state=after.state, reason=reason))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.send_due()
            except Exception as exc:  # noqa: BLE001 - try again at the next poll
                if not self.outages.absorb(exc, "sending webhooks"):
                    log.exception("webhook deliveries could not be read; will retry")
                busy = 0
            if not busy:
                self._stop.wait(_POLL_SECONDS)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="retain-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
