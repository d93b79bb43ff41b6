"""Chaos: SIGKILLs at random moments, a hostile corpus and a burst, against a real daemon.

Three parts, each on a fresh workspace initialised on digits, each checked against the
queue's invariants: every file is one Batch row in a terminal state, a first candidate and
its fallbacks per batch with no strategy twice, consecutive version numbers, production loadable and
predicting, every artifact present and hash-verified, no temporary files, an empty inbox.

1. kills:   ``retain run`` over a stream of batches, SIGKILLed at random moments and restarted
            after each kill, ``--kills`` times; then one ``run --once`` to finish the queue.
2. hostile: pickles, object arrays, truncated, empty, NaN/inf/extreme values, wrong shapes, bad
            labels, a zip bomb, a huge header, a sparse 16 GiB file, CSV/parquet oddities,
            links, a directory, a FIFO, odd names, duplicates and a slow writer; each file's
            final state, attempts and reason, and the daemon's peak RSS against
            ``data.max_bytes_in_memory`` plus the RSS of the same daemon on one plain batch.
3. burst:   ``--burst`` small files at once; all processed exactly once, batches per second.
4. moves:   ``--move-kills`` batches, the daemon SIGKILLed on the log line between registering a
            batch and moving its file (``batch file moving``); restarted; every batch's recorded
            path must hold its file, and a ``forget`` + ``gc`` of one must leave its file nowhere.

    .venv/bin/python benchmarks/chaos.py [--kills 50] [--batches 20] [--burst 1000] [--move-kills 10] [--short]

Exits 1 if an invariant or a target fails (0 lost, 0 stuck, 0 duplicated; every hostile file
rejected or ignored on its first attempt; peak RSS within the limit plus the model).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from processes import high_water_mark

REPO = Path(__file__).resolve().parent.parent
RETAIN = [sys.executable, "-m", "retain"]
TERMINAL = ("done", "rejected", "failed")
MEMORY_LIMIT = 256 << 20


# ------------------------------------------------------------------ workspace


def digits() -> tuple[np.ndarray, np.ndarray]:
    from retain.strategies.datasets import digits as bundled_digits

    return bundled_digits(shuffle_seed=0)


def npz_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def retain(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*RETAIN, "--config", str(config), *args], capture_output=True, text=True, cwd=REPO)
    if check and result.returncode != 0:
        raise RuntimeError(f"retain {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def workspace(root: Path, threads: int, **sections: dict) -> Path:
    """An initialised workspace with a small, quick model; returns its config path."""
    from retain.daemon.config import dump_config

    x, y = digits()
    base = {
        "paths": {"workdir": "."},
        "model": {"kwargs": {"hidden": [32]}},
        "training": {"epochs": 2, "threads": threads, "device": "cpu"},
        "meta": {"meta_steps": 20},
        "shift": {"permutations": 50},
        "replay": {"capacity": 300},
        "metrics": {"enabled": False},
        # Kills would use up a batch's tries; here they measure loss and duplication.
        "daemon": {"settle_seconds": 0.5, "max_attempts": 1000, "rescan_seconds": 5},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    root.mkdir(parents=True, exist_ok=True)
    config = root / "retain.toml"
    config.write_text(dump_config(base))
    np.savez(root / "init.npz", x=x[:400], y=y[:400])
    from retain.daemon.bootstrap import init_workspace
    from retain.daemon.config import load_config

    init_workspace(load_config(config), root / "init.npz", train=True, actor="chaos")
    return config


class Daemon:
    """``retain run`` as a child process; ``stop`` returns its exit code and peak RSS."""

    def __init__(self, config: Path, *args: str) -> None:
        self.log = (config.parent / "daemon.log").open("ab")
        self.process = subprocess.Popen([*RETAIN, "--config", str(config), "run", *args],
                                        stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)

    def state(self, config: Path) -> str:
        """This process's state from retain.daemon.json ("unknown" while an earlier one's is there)."""
        try:
            status = json.loads((config.parent / "daemon.json").read_text())
        except (OSError, ValueError):
            return "unknown"
        return status.get("state", "unknown") if status.get("pid") == self.process.pid else "unknown"

    def peak_rss(self) -> int:
        """The process's peak resident set so far, in bytes."""
        return high_water_mark(self.process.pid)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, int]:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        _, status, usage = os.wait4(self.process.pid, 0)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self.log.close()
        return self.process.returncode, usage.ru_maxrss * 1024


def batch_rows(config: Path) -> list[dict]:
    """What ``retain batches --json`` prints, read here: a CLI process per poll would compete
    with the daemon for the cores."""
    from retain.daemon.config import load_config
    from retain.registry import Registry
    from retain.views import batch_row

    registry = Registry(load_config(config).registry_url)
    try:
        return [batch_row(batch, None) for batch in registry.batches()]
    finally:
        registry.close()


def wait_until_settled(config: Path, expected: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = batch_rows(config)
        if sum(r["state"] in TERMINAL for r in rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


# ------------------------------------------------------------------ invariants


@dataclass
class Check:
    failures: list[str] = field(default_factory=list)

    def expect(self, condition: bool, message: str) -> None:
        if not condition:
            self.failures.append(message)


def check_invariants(config: Path, dropped: dict[str, str], check: Check) -> dict[str, int]:
    """The queue's invariants; ``dropped`` maps each file's sha256 to its name."""
    from retain.daemon.config import load_config
    from retain.daemon.versions import load_memory, load_model, memory_artifacts
    from retain.registry import ArtifactError, ArtifactStore, Registry
    from retain.strategies.models import predict

    settings = load_config(config)
    registry = Registry(settings.registry_url)
    artifacts = ArtifactStore(settings.artifacts_dir)
    batches = registry.batches()
    versions = registry.versions()
    by_sha = {}
    for batch in batches:
        by_sha.setdefault(batch.sha256, []).append(batch)
    lost = [name for sha, name in dropped.items() if sha not in by_sha]
    doubled = [sha for sha, rows in by_sha.items() if len(rows) > 1]
    stuck = [b.id for b in batches if b.state not in TERMINAL]
    per_batch: dict[int, list[str]] = {}
    for version in versions:
        if version.batch_id is not None:
            per_batch.setdefault(version.batch_id, []).append(version.strategy)
    # A first candidate and its fallbacks: each strategy once at most (a retry that registered
    # a batch's candidates again would repeat one).
    duplicated = [b for b, strategies in per_batch.items() if len(strategies) != len(set(strategies))]
    numbers = [v.version for v in versions]
    check.expect(not lost, f"files with no batch row: {lost}")
    check.expect(not doubled, f"content recorded twice: {doubled}")
    check.expect(not stuck, f"batches not in a terminal state: {stuck}")
    check.expect(not duplicated, f"batches with a strategy registered twice: {duplicated}")
    check.expect(numbers == list(range(1, len(numbers) + 1)), f"version numbers not consecutive: {numbers}")
    bad_artifacts = []
    for version in versions:
        try:
            stored = {version.artifact_sha256} | memory_artifacts(version.replay_sha256, artifacts)
        except ArtifactError:
            stored = {version.replay_sha256}
        for digest in stored:
            path = artifacts.path(digest)
            if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                bad_artifacts.append(digest[:12])
    check.expect(not bad_artifacts, f"missing or corrupt artifacts: {bad_artifacts}")
    production = registry.production()
    check.expect(production is not None, "no production version")
    if production is not None:
        model = load_model(production, artifacts)
        memory = load_memory(production, artifacts)
        predictions = predict(model, memory.x[:50])
        check.expect(len(predictions) == min(50, len(memory.x)), "production does not predict")
    misplaced = [b.id for b in batches if b.state in ("done", "rejected") and b.path
                 and not b.path.startswith("s3://") and not os.path.lexists(b.path)]
    check.expect(not misplaced, f"batches whose recorded path holds no file: {misplaced}")
    temp = [str(p) for p in settings.workdir.rglob(".*.tmp")]
    check.expect(not temp, f"temporary files left: {temp}")
    inbox_left = [p.name for p in settings.inbox.iterdir() if not p.is_dir()] if settings.inbox.exists() else []
    check.expect(not inbox_left, f"files left in the inbox: {inbox_left}")
    registry.close()
    return {
        "files": len(dropped),
        "batches": len(batches),
        "versions": len(versions),
        "lost": len(lost),
        "stuck": len(stuck),
        "duplicated": len(doubled) + len(duplicated),
        "failed": sum(b.state == "failed" for b in batches),
    }


# ------------------------------------------------------------------ 1. kills


def stream(batches: int, size: int = 120) -> list[tuple[str, bytes]]:
    """Batches of digits after the init data, every third one with a feature shift."""
    x, y = digits()
    rng = np.random.default_rng(1)
    files = []
    for index in range(batches):
        picks = rng.choice(np.arange(400, len(y)), size=size, replace=False)
        bx = x[picks].copy()
        if index % 3 == 2:
            bx = np.clip(bx + 0.3 * rng.standard_normal(bx.shape).astype(np.float32), 0, 1)
        files.append((f"stream-{index:03d}.npz", npz_bytes(bx, y[picks])))
    return files


def part_kills(root: Path, kills: int, batches: int, threads: int, seed: int, check: Check) -> dict:
    # Enough training per batch that most kills land mid-batch rather than on an idle daemon.
    config = workspace(root, threads, training={"epochs": 8})
    inbox = root / "inbox"
    files = stream(batches, size=200)
    dropped = {hashlib.sha256(data).hexdigest(): name for name, data in files}
    rng = random.Random(seed)
    states: dict[str, int] = {}
    pending = list(files)
    started = time.monotonic()
    for _ in range(kills):
        for _ in range(min(len(pending), rng.randint(1, 3))):  # files keep arriving between kills
            name, data = pending.pop(0)
            (inbox / f".{name}.part").write_bytes(data)
            os.replace(inbox / f".{name}.part", inbox / name)
        daemon = Daemon(config)
        ready_by = time.monotonic() + 120
        while daemon.state(config) in ("starting", "stopped", "unknown") and time.monotonic() < ready_by:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 4.0))
        state = daemon.state(config)
        states[state] = states.get(state, 0) + 1
        daemon.stop(signal.SIGKILL)
    for name, data in pending:
        (inbox / name).write_bytes(data)
    retain(config, "run", "--once")
    figures = check_invariants(config, dropped, check)
    figures["kills"] = kills
    figures["kill_states"] = states
    figures["seconds"] = round(time.monotonic() - started, 1)
    return figures


# ------------------------------------------------------------------ 2. hostile


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/retain-chaos-pwned",))


def npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def zip_bomb(path: Path, columns: int, rows: int = 1_000_000) -> None:
    """An .npz whose x is ``rows`` x ``columns`` float64 zeros (within data.max_samples),
    deflated to a few MiB, written in chunks."""
    chunk = bytes(1 << 22)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            member.write(npy_header((rows, columns)))
            left = rows * columns * 8
            while left > 0:
                member.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
        archive.writestr("y.npy", npy_header((rows,), "<i8") + bytes(64))


def hostile_corpus(inbox: Path, outside: Path, short: bool) -> list[tuple[str, str]]:
    """Writes the corpus; returns (name, what is expected of it: rejected|ignored|done)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    x, y = digits()
    gx, gy = x[1000:1100], y[1000:1100]
    good = npz_bytes(gx, gy)
    expected: list[tuple[str, str]] = []

    def put(name: str, data: bytes, outcome: str = "rejected") -> None:
        (inbox / name).write_bytes(data)
        expected.append((name, outcome))

    def npz(**arrays) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    def pt(obj, **kwargs) -> bytes:
        buffer = io.BytesIO()
        torch.save(obj, buffer, **kwargs)
        return buffer.getvalue()

    put("pickle-payload.pt", pt({"x": Payload(), "y": torch.zeros(3)}))
    put("raw-pickle.pt", pickle.dumps({"x": Payload()}))
    put("pickle-as.npz", pickle.dumps(Payload()))
    object_member = io.BytesIO()
    np.save(object_member, np.array([Payload()], dtype=object), allow_pickle=True)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("x.npy", object_member.getvalue())
        z.writestr("y.npy", object_member.getvalue())
    put("object-array.npz", archive.getvalue())
    put("truncated.npz", good[: len(good) // 2])
    put("empty.npz", b"")
    nan_x = gx.copy()
    nan_x[0, 0] = np.nan
    put("nan.npz", npz(x=nan_x, y=gy))
    inf_x = gx.copy()
    inf_x[1, 1] = np.inf
    put("inf.npz", npz(x=inf_x, y=gy))
    big_x = gx.copy()
    big_x[2, 2] = 1e38
    put("extreme-1e38.npz", npz(x=big_x, y=gy))
    put("wrong-shape.npz", npz(x=gx[:, :60], y=gy))
    put("labels-out-of-range.npz", npz(x=gx, y=gy + 5000))  # past model.max_classes (1000): new classes widen up to it
    put("labels-fractional.npz", npz(x=gx, y=gy + 0.5))
    put("no-labels.npz", npz(x=gx))
    put("strings.npz", npz(x=np.array([["a"] * 64] * 30), y=np.zeros(30, np.int64)))
    zip_bomb(inbox / ".zip-bomb.npz.part", 64 if short else 512)  # 0.5 or 3.8 GiB
    os.replace(inbox / ".zip-bomb.npz.part", inbox / "zip-bomb.npz")
    expected.append(("zip-bomb.npz", "rejected"))
    with zipfile.ZipFile(inbox / ".huge-header.npz.part", "w") as z:
        z.writestr("x.npy", npy_header((1000, 32_000_000)) + bytes(64))
        z.writestr("y.npy", npy_header((1000,), "<i8") + bytes(64))
    os.replace(inbox / ".huge-header.npz.part", inbox / "huge-header.npz")
    expected.append(("huge-header.npz", "rejected"))
    with (inbox / "sparse-16gib.npz").open("wb") as handle:
        handle.truncate(16 << 30)
    expected.append(("sparse-16gib.npz", "rejected"))
    put("sparse-tensor.pt", pt({"x": torch.from_numpy(gx).to_sparse(), "y": torch.from_numpy(gy)}))
    put("legacy.pt", pt({"x": torch.from_numpy(gx), "y": torch.from_numpy(gy)}, _use_new_zipfile_serialization=False))
    put("bfloat16.pt", pt({"x": torch.from_numpy(gx).bfloat16(), "y": torch.from_numpy(gy)}), "done")
    header = ",".join(f"f{i}" for i in range(64)) + ",label\n"
    put("text-values.csv", (header + ",".join(["x"] * 64) + ",1\n").encode())
    put("ragged.csv", (header + "1,2,3\n").encode())
    put("not-utf8.csv", header.encode() + b"\xff\xfe" * 40 + b"\n")
    put("header-only.csv", header.encode())
    text_table = pa.table({"f0": ["a", "b"], "label": [0, 1]})
    buffer = pa.BufferOutputStream()
    pq.write_table(text_table, buffer)
    put("text-column.parquet", buffer.getvalue().to_pybytes())
    null_table = pa.table({f"f{i}": [0.0, None] for i in range(64)} | {"label": [0, 1]})
    buffer = pa.BufferOutputStream()
    pq.write_table(null_table, buffer)
    put("nulls.parquet", buffer.getvalue().to_pybytes())
    put("corrupt.parquet", b"PAR1" + os.urandom(200))
    put("notes.json", b"{}")
    (outside / "secret.npz").write_bytes(npz_bytes(x[1100:1200], y[1100:1200]))
    (inbox / "link-outside.npz").symlink_to(outside / "secret.npz")
    expected.append(("link-outside.npz", "rejected"))
    (inbox / "folder.npz").mkdir()
    expected.append(("folder.npz", "ignored"))
    os.mkfifo(inbox / "fifo.npz")
    expected.append(("fifo.npz", "ignored"))
    with open(os.path.join(os.fsencode(inbox), b"latin1-caf\xe9.npz"), "wb") as handle:
        handle.write(npz_bytes(x[1200:1300], y[1200:1300]))
    expected.append(("latin1-caf\\xe9.npz", "rejected"))
    put("n" * 246 + ".npz", npz_bytes(x[1300:1400], y[1300:1400]), "done")
    put("données du jour.npz", npz_bytes(x[1400:1500], y[1400:1500]), "done")
    edited = io.BytesIO()
    np.savez(edited, x=gx, y=gy)
    put("edited-header.npz", edited.getvalue().replace(b"(100, 64)", b"(900000000, 64)", 1))
    (inbox / "dangling-link.npz").symlink_to(outside / "no-such-file.npz")
    expected.append(("dangling-link.npz", "rejected"))
    put("duplicate-a.npz", npz_bytes(x[1500:1600], y[1500:1600]), "done")
    put("duplicate-b.npz", npz_bytes(x[1500:1600], y[1500:1600]), "duplicate")
    return expected


def slow_writer(path: Path, data: bytes, seconds: float, chunks: int = 8) -> None:
    """Writes ``data`` in chunks over ``seconds``, holding the file open throughout: each pause
    is ``seconds / chunks``."""
    with path.open("wb") as handle:
        for index in range(chunks):
            handle.write(data[index * len(data) // chunks : (index + 1) * len(data) // chunks])
            handle.flush()
            time.sleep(seconds / chunks)


def part_hostile(root: Path, threads: int, short: bool, check: Check) -> tuple[dict, list[dict]]:
    limits = {"max_bytes_in_memory": MEMORY_LIMIT}
    x, y = digits()
    config = workspace(root / "hostile", threads, data=limits)
    inbox = root / "hostile" / "inbox"
    outside = root / "outside"
    outside.mkdir()
    daemon = Daemon(config)
    while daemon.state(config) != "idle":
        time.sleep(0.2)
    # The baseline: the daemon's peak after one plain batch, before any hostile file arrives.
    (inbox / "plain.npz").write_bytes(npz_bytes(x[1000:1100], y[1000:1100]))
    wait_until_settled(config, 1, timeout=300)
    time.sleep(2)  # the batch's move and clean-up after its row is done
    baseline_rss = daemon.peak_rss()
    expected = hostile_corpus(inbox, outside, short)
    slow = npz_bytes(x[1600:1700], y[1600:1700])
    writer = threading.Thread(target=slow_writer, args=(inbox / "slow-writer.npz", slow, 2.5))
    # Pauses of 1.25 s against settle_seconds 0.5: the file settles, unfinished, three times.
    pausing = threading.Thread(target=slow_writer, args=(inbox / "pausing-writer.npz", npz_bytes(
        x[1700:1800], y[1700:1800]), 5.0, 4))
    writer.start()
    pausing.start()
    expected += [("slow-writer.npz", "done"), ("pausing-writer.npz", "done")]
    writer.join()
    pausing.join()
    recorded = 1 + sum(outcome not in ("ignored", "duplicate") for _, outcome in expected)
    rows = wait_until_settled(config, recorded, timeout=900)
    time.sleep(2)  # the duplicate's move and anything late
    code, peak_rss = daemon.stop()
    check.expect(code == 0, f"hostile daemon exited {code}")
    rows = batch_rows(config)
    report = []
    for name, outcome in expected:
        row = next((r for r in rows if r["name"] == name), None)
        if outcome == "ignored":
            state = "ignored" if row is None else row["state"]
            ok = row is None
        elif outcome == "duplicate":
            moved = list((root / "hostile" / "processed").glob(f"*duplicate-{name}"))
            state = "duplicate" if moved and row is None else (row or {}).get("state", "lost")
            ok = bool(moved) and row is None
        else:
            state = row["state"] if row else "lost"
            ok = state == outcome and (row["attempts"] <= 1)
        check.expect(ok, f"{name}: expected {outcome}, got {state}")
        rows_named = sum(r["name"] == name for r in rows)
        check.expect(rows_named <= 1, f"{name}: recorded {rows_named} times")
        report.append({"file": name, "expected": outcome, "state": state,
                       "attempts": row["attempts"] if row else 0, "reason": (row or {}).get("reason") or ""})
    check.expect(not Path("/tmp/retain-chaos-pwned").exists(), "a pickle payload ran")
    check.expect(peak_rss <= baseline_rss + MEMORY_LIMIT,
                 f"peak RSS {peak_rss >> 20} MiB over the limit {MEMORY_LIMIT >> 20} MiB "
                 f"+ model {baseline_rss >> 20} MiB")
    figures = {"files": len(expected), "peak_rss_mib": peak_rss >> 20, "baseline_rss_mib": baseline_rss >> 20,
               "limit_mib": MEMORY_LIMIT >> 20}
    return figures, report


# ------------------------------------------------------------------ 3. burst


def part_burst(root: Path, count: int, threads: int, check: Check) -> dict:
    config = workspace(root, threads, training={"epochs": 1}, meta={"meta_steps": 5}, policy={"fallback": False})
    x, y = digits()
    rng = np.random.default_rng(2)
    inbox = root / "inbox"
    daemon = Daemon(config)
    while daemon.state(config) != "idle":
        time.sleep(0.2)
    dropped = {}
    started = time.monotonic()
    for index in range(count):
        picks = rng.choice(np.arange(400, len(y)), size=24, replace=False)
        data = npz_bytes(x[picks], y[picks])
        dropped[hashlib.sha256(data).hexdigest()] = f"burst-{index:04d}.npz"
        (inbox / f".burst-{index:04d}.part").write_bytes(data)
        os.replace(inbox / f".burst-{index:04d}.part", inbox / f"burst-{index:04d}.npz")
    wait_until_settled(config, count, timeout=3 * 3600)
    elapsed = time.monotonic() - started
    daemon.stop()
    figures = check_invariants(config, dropped, check)
    figures["seconds"] = round(elapsed, 1)
    figures["batches_per_second"] = round(count / elapsed, 2)
    return figures


# ------------------------------------------------------------------ 4. moves


def part_move_kills(root: Path, kills: int, threads: int, check: Check) -> dict:
    """A SIGKILL on the line between a batch's registration and its file's move, per batch."""
    config = workspace(root, threads)
    inbox = root / "inbox"
    files = stream(kills, size=120)
    dropped = {hashlib.sha256(data).hexdigest(): name for name, data in files}
    before_move = 0
    for name, data in files:
        (inbox / f".{name}.part").write_bytes(data)
        os.replace(inbox / f".{name}.part", inbox / name)
        process = subprocess.Popen([*RETAIN, "--config", str(config), "--log-format", "json", "--log-level", "debug",
                                    "run"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)
        assert process.stdout is not None
        for line in process.stdout:
            if b'"batch file moving"' in line:
                process.kill()
                break
        process.wait()
        process.stdout.close()
        before_move += (inbox / name).exists()
    retain(config, "run", "--once")  # the next start finishes the moves
    figures = check_invariants(config, dropped, check)
    erased = next(row for row in batch_rows(config) if row["state"] == "done")
    retain(config, "forget", "--batch", str(erased["id"]), "--reason", "chaos")
    retain(config, "gc", "--grace", "0")
    left = [str(p) for p in root.rglob(f"{erased['id']:06d}-*")] + [
        str(p) for p in inbox.iterdir() if p.name == erased["name"]]
    check.expect(not left, f"erased batch {erased['id']}'s file still on disk: {left}")
    figures["kills"] = kills
    figures["kills_before_the_move"] = before_move
    figures["erased_file_gone"] = not left
    return figures


# ------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--move-kills", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--short", action="store_true", help="a few kills, a small bomb and burst: for the tests")
    parser.add_argument("--parts", nargs="+", default=["kills", "hostile", "burst", "moves"])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.short:
        args.kills, args.batches, args.burst, args.move_kills = 3, 4, 20, 2
    from retain.strategies.training import limit_threads

    limit_threads(args.threads)  # the initial models are trained here
    root = Path(tempfile.mkdtemp(prefix="retain-chaos-"))
    check = Check()
    results: dict = {}
    try:
        if "kills" in args.parts:
            results["kills"] = part_kills(root / "kills", args.kills, args.batches, args.threads, args.seed, check)
        if "hostile" in args.parts:
            results["hostile"], results["corpus"] = part_hostile(root / "hostile", args.threads, args.short, check)
        if "burst" in args.parts:
            results["burst"] = part_burst(root / "burst", args.burst, args.threads, check)
        if "moves" in args.parts:
            results["moves"] = part_move_kills(root / "moves", args.move_kills, args.threads, check)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if "corpus" in results:
        print(f"{'file':<44} {'expected':<9} {'state':<9} {'tries':>5}  reason")
        for row in results["corpus"]:
            name = row["file"] if len(row["file"]) <= 44 else row["file"][:20] + "…" + row["file"][-23:]
            print(f"{name:<44} {row['expected']:<9} {row['state']:<9} {row['attempts']:>5}  {row['reason'][:110]}")
        print()
    print(f"{'part':<8} {'files':>6} {'batches':>8} {'versions':>9} {'lost':>5} {'stuck':>6} {'dup':>4} "
          f"{'failed':>7}  figures")
    for part in ("kills", "burst", "moves"):
        if part in results:
            r = results[part]
            extra = {
                "kills": lambda: f"{r['kills']} SIGKILLs (daemon state at each: {r['kill_states']}), {r['seconds']} s",
                "burst": lambda: f"{r['batches_per_second']} batches/s over {r['seconds']} s",
                "moves": lambda: (f"{r['kills']} SIGKILLs between registering and moving, {r['kills_before_the_move']} "
                                  f"before the move landed; erased file gone after forget + gc: "
                                  f"{r['erased_file_gone']}"),
            }[part]()
            print(f"{part:<8} {r['files']:>6} {r['batches']:>8} {r['versions']:>9} {r['lost']:>5} {r['stuck']:>6} "
                  f"{r['duplicated']:>4} {r['failed']:>7}  {extra}")
    if "hostile" in results:
        h = results["hostile"]
        print(f"{'hostile':<8} {h['files']:>6}  peak RSS {h['peak_rss_mib']} MiB; limit {h['limit_mib']} MiB + "
              f"the daemon on one plain batch {h['baseline_rss_mib']} MiB")
    for failure in check.failures:
        print(f"FAIL: {failure}")
    if args.json:
        args.json.write_text(json.dumps(results | {"failures": check.failures}, indent=2))
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
