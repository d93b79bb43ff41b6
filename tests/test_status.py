"""Whether ``retain status`` calls the daemon alive, from what the daemon last wrote."""

import os

from retain.daemon.status import DaemonState, DaemonStatus, liveness

HOST = "this-host"


def status(**changes) -> DaemonStatus:
    values = dict(pid=os.getpid(), host=HOST, started_at=1000.0, heartbeat_at=1000.0, state=DaemonState.IDLE)
    return DaemonStatus(**(values | changes))


def test_a_daemon_on_this_host_is_alive_while_its_process_is_whatever_its_heartbeat_age():
    assert status().running(now=10_000.0, host=HOST)


def test_a_daemon_on_this_host_whose_process_is_gone_is_not_running():
    assert not status(pid=2**22 + 1).running(now=1000.0, host=HOST)  # above Linux's pid_max default


def test_a_daemon_on_another_host_is_alive_only_while_its_heartbeat_is_recent():
    remote = status(host="other-host", pid=1)
    assert remote.running(now=1010.0, host=HOST)
    assert not remote.running(now=1031.0, host=HOST)


def test_a_stopped_daemon_is_not_running_even_if_its_process_lives():
    assert not status(state=DaemonState.STOPPED).running(now=1000.0, host=HOST)


def test_liveness_reads_the_status_file_back_and_hides_the_batch_of_a_dead_daemon(tmp_path):
    assert liveness(tmp_path) == {"running": False}
    status(state=DaemonState.PROCESSING, batch=7).write(tmp_path)
    alive = liveness(tmp_path, now=1002.0, host=HOST)
    assert alive == {"running": True, "pid": os.getpid(), "host": HOST, "state": "processing", "batch": 7,
                     "heartbeat_age_seconds": 2.0}
    status(state=DaemonState.PROCESSING, batch=7, pid=2**22 + 1).write(tmp_path)
    dead = liveness(tmp_path, now=1002.0, host=HOST)
    assert (dead["running"], dead["state"], dead["batch"]) == (False, "dead", None)
    status(state=DaemonState.STOPPED, pid=2**22 + 1).write(tmp_path)
    assert liveness(tmp_path, now=1002.0, host=HOST)["state"] == "stopped"


def test_an_unreadable_status_file_reads_as_no_daemon(tmp_path):
    (tmp_path / "daemon.json").write_text("{not json")
    assert liveness(tmp_path) == {"running": False}
