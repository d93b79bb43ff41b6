"""Which errors are outages of the system (waited out, no try charged) and which are not."""

import errno
import sqlite3

from sqlalchemy.exc import OperationalError

from retain.daemon.outage import OutageKind, Outages, outage_of


def test_a_full_disk_and_an_unreachable_database_are_outages_and_other_errors_are_not():
    assert outage_of(OSError(errno.ENOSPC, "No space left on device")) == OutageKind.DISK_FULL
    full = OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    assert outage_of(full) == OutageKind.DISK_FULL
    refused = OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
    assert outage_of(refused) == OutageKind.REGISTRY_UNREACHABLE
    try:
        try:
            raise refused
        except OperationalError as exc:
            raise RuntimeError("while registering") from exc
    except RuntimeError as wrapped:
        assert outage_of(wrapped) == OutageKind.REGISTRY_UNREACHABLE  # found through the cause
    assert outage_of(OSError(errno.EACCES, "Permission denied")) is None
    assert outage_of(ValueError("bad label")) is None


def test_an_outage_is_said_once_per_minute_and_its_end_once(caplog):
    caplog.set_level("INFO", logger="retain.daemon")
    changes = []
    outages = Outages(lambda kind, down: changes.append((kind, down)))
    for _ in range(5):
        outages.report(OutageKind.DISK_FULL, OSError(errno.ENOSPC, "full"), "writing")
    assert outages.down == (OutageKind.DISK_FULL,) and changes == [(OutageKind.DISK_FULL, True)]
    outages.recovered()
    assert outages.down == () and changes[-1] == (OutageKind.DISK_FULL, False)
    said = [r.getMessage() for r in caplog.records]
    assert said == ["system outage; waiting", "system outage over"]
