"""Several workers, several models: three ``retain run --worker`` processes (separate workdirs,
standing for machines) share one PostgreSQL registry and one bucket, three models' batches
are ingested into the bucket from a fourth host, and one worker is SIGKILLed while it trains.
Each model's lineage must come out as if one worker had processed its batches in order,
while the models were trained side by side."""

import signal
import time
import uuid

from conftest import fresh_postgres_database, retain, save_npz, wait_for, write_config
from daemon_process import DaemonProcess
from retain.daemon.config import load_config
from retain.daemon.versions import load_memory
from retain.registry import ArtifactStore, BatchState, Registry, S3Objects

MODELS = ("cameras", "shelves", "tills")
BATCHES = 6  # per model
SIZE = 100


def test_three_workers_keep_three_lineages_in_order_through_a_kill(tmp_path, digit_data, postgres_url, s3_server):
    x, y = digit_data
    shared = {
        "registry": {"url": fresh_postgres_database(postgres_url, "workers")},
        "artifacts": {"url": f"s3://{s3_server.bucket}/{uuid.uuid4().hex[:8]}", "endpoint_url": s3_server.endpoint_url},
        "gate": {"max_forgetting": 1.0, "min_gain": -1.0},  # every candidate accepted: production moves each time
        # meta's training (about a second a batch here) keeps batches in flight long enough for the
        # 0.2 s polls below to see models trained side by side; a fine-tune is over in 0.1 s.
        "policy": {"strategy": "meta", "fallback": False},
        "daemon": {"lease_seconds": 8, "settle_seconds": 0.2},
        "models": {name: {} for name in MODELS},
    }
    configs = [write_config(tmp_path / f"host{i}", **shared) for i in range(3)]
    save_npz(tmp_path / "init.npz", x[:300], y[:300])
    for model in MODELS:
        retain(configs[0], "init", "--model", model, "--data", str(tmp_path / "init.npz"), "--train")
    workers = [DaemonProcess(config, run_args=("--worker",)).start() for config in configs]
    laptop = write_config(tmp_path / "laptop", **shared)
    registry = Registry(load_config(configs[0]).registry_url)
    total = BATCHES * len(MODELS)
    most_models_in_flight = 0
    try:
        for i in range(BATCHES):
            for m, model in enumerate(MODELS):
                start = 300 + SIZE * ((i * len(MODELS) + m) % 14)
                path = save_npz(tmp_path / f"{model}-{i}.npz", x[start:start + SIZE], y[start:start + SIZE])
                retain(laptop, "ingest", "--remote", "--model", model, str(path))
        def stopped_mid_batch():
            """A worker frozen (SIGSTOP) while the registry shows it holding a batch: its status
            file alone could lag a batch that just finished."""
            for worker in workers:
                if worker.status().get("state") != "processing":
                    continue
                worker.process.send_signal(signal.SIGSTOP)
                held = [b for b in registry.batches(every_model=True) if b.state == BatchState.PROCESSING
                        and (b.lease_owner or "").endswith(f":{worker.process.pid}")]
                if held:
                    return worker
                worker.process.send_signal(signal.SIGCONT)
            return None

        victim = wait_for(stopped_mid_batch, timeout=90, interval=0.05, message="a worker training")
        victim.stop(signal.SIGKILL)

        def all_done():
            nonlocal most_models_in_flight
            batches = registry.batches(every_model=True)
            in_flight = {b.model for b in batches if b.state == BatchState.PROCESSING}
            most_models_in_flight = max(most_models_in_flight, len(in_flight))
            return len(batches) == total and all(b.state == BatchState.DONE for b in batches)

        deadline = time.monotonic() + 300
        while not all_done():
            assert time.monotonic() < deadline, f"not every batch done: {registry.batches(every_model=True)}"
            time.sleep(0.2)
    finally:
        for worker in workers:
            if worker.alive():
                worker.stop()

    assert most_models_in_flight >= 2  # the models were trained side by side
    everything = registry.batches(every_model=True)
    assert max(b.attempts for b in everything) == 2  # the killed worker's batch, retried once its lease ran out
    settings = load_config(configs[0]).artifacts
    bucket = ArtifactStore(tmp_path / "empty-cache", S3Objects(settings.url, settings.endpoint_url))
    for model in MODELS:
        lineage = registry.for_model(model)
        batches = lineage.batches()
        assert [b.name for b in batches] == [f"{model}-{i}.npz" for i in range(BATCHES)]
        assert [len(lineage.batch_versions(b.id)) for b in batches] == [1] * BATCHES  # no sibling, no duplicate
        versions = lineage.versions()
        # One chain: each version trained from the production version just before it, in arrival order.
        assert [(v.version, v.parent, v.batch_id) for v in versions[1:]] == [
            (2 + i, 1 + i, b.id) for i, b in enumerate(batches)]
        assert lineage.alias() == versions[-1].version
        # Every artifact is in the bucket and whole (read through an empty cache), and every
        # batch's samples are in the replay memory of the version trained on it.
        for version, batch in zip(versions[1:], batches, strict=True):
            bucket.get(version.artifact_sha256)
            assert batch.id in set(load_memory(version, bucket).source.tolist())
    registry.close()
