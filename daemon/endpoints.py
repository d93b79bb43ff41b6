"""The network endpoints a config names (webhook receivers, an S3 endpoint, a PostgreSQL
registry), checked once at start: a unit's ``IPAddressDeny=any`` or a firewall that blocks one
is said in the log then, not found out at the first delivery or upload."""

from __future__ import annotations

import logging
import socket
import threading
import urllib.parse
from dataclasses import dataclass

from retain.daemon.config import Config
from retain.daemon.logs import fields

log = logging.getLogger("retain.daemon")

_DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432}


@dataclass(frozen=True)
class Endpoint:
    what: str  # the config key that names it
    host: str
    port: int


def configured_endpoints(config: Config) -> list[Endpoint]:
    """Every host and port the daemon will connect to, by the key that names it. A URL with
    credentials is shown without them."""
    named = [(f"webhooks[{i}].url", hook.url) for i, hook in enumerate(config.webhooks)]
    if config.artifacts.endpoint_url:
        named.append(("artifacts.endpoint_url", config.artifacts.endpoint_url))
    if not config.registry_url.startswith("sqlite"):
        named.append(("registry.url", config.registry_url))
    found = []
    for what, url in named:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.split("+")[0]
        try:
            port = parts.port or _DEFAULT_PORTS.get(scheme)
        except ValueError:
            continue  # the config's own validation says what is wrong with it
        if parts.hostname and port:
            found.append(Endpoint(what, parts.hostname, port))
    return found


def unreachable(endpoint: Endpoint, timeout: float) -> str | None:
    """Why a TCP connection to ``endpoint`` cannot be made; ``None`` if it can."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def check_endpoints(config: Config, timeout: float = 3.0) -> threading.Thread:
    """Try each endpoint in the background (start-up does not wait) and log each one that
    cannot be reached, with the likely cause under systemd."""

    def check() -> None:
        for endpoint in configured_endpoints(config):
            why = unreachable(endpoint, timeout)
            if why is not None:
                log.warning("configured endpoint unreachable",
                            extra=fields(key=endpoint.what, host=endpoint.host, port=endpoint.port, reason=why,
                                         hint="under the systemd unit, IPAddressAllow= must list its address "
                                              "(deploy/README.md)"))

    thread = threading.Thread(target=check, name="retain-endpoints", daemon=True)
    thread.start()
    return thread
