"""Several workers on one lineage: three ``retain run --worker`` processes (separate workdirs,
standing for machines) share one PostgreSQL registry and one bucket, batches are ingested
into the bucket from a fourth host, and one worker is SIGKILLed while it trains. The lineage
must come out as if one worker had processed the batches in order."""

import signal
import uuid

from conftest import fresh_postgres_database, retain, save_npz, wait_for, write_config
from daemon_process import DaemonProcess
from retain.daemon.config import load_config
from retain.daemon.versions import load_memory
from retain.registry import ArtifactStore, Registry, S3Objects

BATCHES = 4


def test_three_workers_keep_one_lineage_in_order_through_a_kill(tmp_path, digit_data, postgres_url, s3_server):
    x, y = digit_data
    shared = {
        "registry": {"url": fresh_postgres_database(postgres_url, "workers")},
        "artifacts": {"url": f"s3://{s3_server.bucket}/{uuid.uuid4().hex[:8]}", "endpoint_url": s3_server.endpoint_url},
        "gate": {"max_forgetting": 1.0, "min_gain": -1.0},  # every candidate accepted: production moves each time
        "daemon": {"lease_seconds": 8, "settle_seconds": 0.2},
    }
    configs = [write_config(tmp_path / f"host{i}", **shared) for i in range(3)]
    save_npz(tmp_path / "init.npz", x[:400], y[:400])
    retain(configs[0], "init", "--data", str(tmp_path / "init.npz"), "--train")
    workers = [DaemonProcess(config, run_args=("--worker",)).start() for config in configs]
    laptop = write_config(tmp_path / "laptop", **shared)
    try:
        for i in range(BATCHES):
            save_npz(tmp_path / f"batch-{i}.npz", x[400 + 150 * i: 550 + 150 * i], y[400 + 150 * i: 550 + 150 * i])
            retain(laptop, "ingest", "--remote", str(tmp_path / f"batch-{i}.npz"))
        victim = wait_for(lambda: next((w for w in workers if w.status().get("state") == "processing"), None),
                          timeout=90, message="a worker training")
        victim.stop(signal.SIGKILL)
        registry = Registry(load_config(configs[0]).registry_url)

        def all_done():
            batches = registry.batches()
            return len(batches) == BATCHES and all(b.state == "done" for b in batches)

        wait_for(all_done, timeout=180, interval=0.5, message=f"{BATCHES} batches done")
    finally:
        for worker in workers:
            if worker.alive():
                worker.stop()

    batches = registry.batches()
    assert [b.name for b in batches] == [f"batch-{i}.npz" for i in range(BATCHES)]
    assert max(b.attempts for b in batches) == 2  # the killed worker's batch, retried once its lease ran out
    versions = registry.versions()
    assert [len(registry.batch_versions(b.id)) for b in batches] == [1] * BATCHES  # no sibling, no duplicate
    # One chain: each version trained from the production version just before it, in arrival order.
    assert [(v.version, v.parent, v.batch_id) for v in versions[1:]] == [
        (2 + i, 1 + i, b.id) for i, b in enumerate(batches)]
    assert registry.alias() == versions[-1].version
    # Every artifact is in the bucket and whole (read through an empty cache), and every batch's
    # samples are in the replay memory of the version trained on it.
    settings = load_config(configs[0]).artifacts
    bucket = ArtifactStore(tmp_path / "empty-cache", S3Objects(settings.url, settings.endpoint_url))
    for version, batch in zip(versions[1:], batches, strict=True):
        bucket.get(version.artifact_sha256)
        assert batch.id in set(load_memory(version, bucket).source.tolist())
    registry.close()
