"""Artifacts in an S3-compatible bucket (a real SeaweedFS on loopback) shared by workers that
each keep their own local folder as a cache."""

import hashlib
import json
import uuid

import pytest

from conftest import retain, save_npz, write_config
from retain.registry import ArtifactError, ArtifactStore, S3Objects


@pytest.fixture
def bucket_url(s3_server) -> str:
    return f"s3://{s3_server.bucket}/{uuid.uuid4().hex[:8]}"  # a prefix of its own per test


def worker_store(tmp_path, name: str, s3_server, bucket_url: str) -> ArtifactStore:
    return ArtifactStore(tmp_path / name, S3Objects(bucket_url, s3_server.endpoint_url))


def test_an_artifact_written_by_one_worker_is_read_by_another_and_cached_there(tmp_path, s3_server, bucket_url):
    writer = worker_store(tmp_path, "a", s3_server, bucket_url)
    reader = worker_store(tmp_path, "b", s3_server, bucket_url)
    digest = writer.put(b"weights")
    assert not reader.path(digest).exists()
    assert reader.get(digest) == b"weights"
    assert reader.path(digest).read_bytes() == b"weights"  # the next read is local
    key = f"{bucket_url.split('/', 3)[3]}/sha256/{digest[:2]}/{digest}"
    stored = s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()
    assert stored == b"weights"


def test_a_damaged_cached_copy_is_replaced_from_the_bucket(tmp_path, s3_server, bucket_url):
    store = worker_store(tmp_path, "a", s3_server, bucket_url)
    digest = store.put(b"replay memory")
    store.path(digest).write_bytes(b"bit rot")
    assert store.get(digest) == b"replay memory"
    assert store.path(digest).read_bytes() == b"replay memory"


def test_an_object_corrupted_in_the_bucket_is_refused_naming_it(tmp_path, s3_server, bucket_url):
    writer = worker_store(tmp_path, "a", s3_server, bucket_url)
    digest = writer.put(b"weights")
    remote = writer.remote
    remote.client.put_object(Bucket=remote.bucket, Key=remote.key(digest), Body=b"tampered")
    with pytest.raises(ArtifactError, match=f"artifact {digest} is corrupt in {bucket_url}"):
        worker_store(tmp_path, "b", s3_server, bucket_url).get(digest)


def test_a_missing_object_is_an_artifact_error_not_a_client_error(tmp_path, s3_server, bucket_url):
    with pytest.raises(ArtifactError, match="is missing"):
        worker_store(tmp_path, "a", s3_server, bucket_url).get(hashlib.sha256(b"never").hexdigest())


def test_a_worker_with_an_empty_artifact_folder_trains_from_the_bucket(tmp_path, digit_data, s3_server, bucket_url):
    # Two machines: one initialises, the other has only the shared registry and bucket.
    x, y = digit_data
    shared = {"url": f"sqlite:///{tmp_path / 'shared-registry.db'}"}
    artifacts = {"url": bucket_url, "endpoint_url": s3_server.endpoint_url}
    first = write_config(tmp_path / "first", registry=shared, artifacts=artifacts)
    save_npz(tmp_path / "init.npz", x[:400], y[:400])
    retain(first, "init", "--data", str(tmp_path / "init.npz"), "--train")
    second = write_config(tmp_path / "second", registry=shared, artifacts=artifacts)
    (tmp_path / "second" / "inbox").mkdir()
    save_npz(tmp_path / "second" / "inbox" / "batch.npz", x[400:600], y[400:600])
    retain(second, "run", "--once")
    [batch] = json.loads(retain(second, "batches", "--json").stdout)
    assert batch["state"] == "done"
    # The first machine reads the second's candidate from the bucket, then from its cache.
    digest = json.loads(retain(first, "show", str(batch["version"]), "--json").stdout)["artifact_sha256"]
    cached = tmp_path / "first" / "artifacts" / "sha256" / digest[:2] / digest
    assert not cached.exists()
    predicted = json.loads(retain(first, "predict", str(tmp_path / "init.npz"), "--version", str(batch["version"]),
                                  "--json").stdout)
    assert len(predicted["predictions"]) == 400 and cached.exists()


def test_an_artifacts_url_that_is_not_s3_is_a_config_error(tmp_path):
    config = write_config(tmp_path, artifacts={"url": "gs://bucket"})
    result = retain(config, "versions", check=False)
    assert result.returncode != 0 and "artifacts.url" in result.stderr


# ------------------------------------------------------------------ the bucket's inbox


def two_hosts(tmp_path, digit_data, s3_server, bucket_url, **sections):
    """A host that only ingests (no inbox, no training) and a worker, sharing a registry and
    a bucket; version 1 made on the worker."""
    x, y = digit_data
    shared = {"registry": {"url": f"sqlite:///{tmp_path / 'shared-registry.db'}"},
              "artifacts": {"url": bucket_url, "endpoint_url": s3_server.endpoint_url}, **sections}
    worker = write_config(tmp_path / "worker", **shared)
    save_npz(tmp_path / "init.npz", x[:400], y[:400])
    retain(worker, "init", "--data", str(tmp_path / "init.npz"), "--train")
    return write_config(tmp_path / "laptop", **shared), worker


def test_a_file_ingested_into_the_bucket_is_processed_by_a_worker_that_watches_no_folder(
    tmp_path, digit_data, s3_server, bucket_url
):
    x, y = digit_data
    laptop, worker = two_hosts(tmp_path, digit_data, s3_server, bucket_url)
    save_npz(tmp_path / "batch.npz", x[400:600], y[400:600])
    queued = retain(laptop, "ingest", "--remote", str(tmp_path / "batch.npz"))
    assert f"{bucket_url}/inbox/" in queued.stdout and not (tmp_path / "laptop" / "inbox").exists()
    again = retain(laptop, "ingest", "--remote", str(tmp_path / "batch.npz"))
    assert "queued before" in again.stdout
    retain(worker, "run", "--once", "--worker")
    [batch] = json.loads(retain(laptop, "batches", "--json").stdout)
    assert (batch["state"], batch["version"]) == ("done", 2)
    processed = list((tmp_path / "worker" / "processed").iterdir())
    assert [p.read_bytes() for p in processed] == [(tmp_path / "batch.npz").read_bytes()]


def test_a_file_with_a_name_of_254_bytes_ingested_into_the_bucket_is_processed(tmp_path, digit_data, s3_server,
                                                                                bucket_url):
    x, y = digit_data
    laptop, worker = two_hosts(tmp_path, digit_data, s3_server, bucket_url)
    long = save_npz(tmp_path / ("b" * 250 + ".npz"), x[400:600], y[400:600])
    retain(laptop, "ingest", "--remote", str(long))
    retain(worker, "run", "--once", "--worker")
    [batch] = json.loads(retain(laptop, "batches", "--json").stdout)
    assert (batch["state"], batch["attempts"], batch["version"]) == ("done", 1, 2)
    [processed] = (tmp_path / "worker" / "processed").iterdir()
    assert processed.read_bytes() == long.read_bytes() and processed.name.endswith("~.npz")


def test_an_object_over_the_workers_size_limit_is_rejected_unread_naming_it(tmp_path, digit_data, s3_server,
                                                                            bucket_url):
    x, y = digit_data
    laptop, worker = two_hosts(tmp_path, digit_data, s3_server, bucket_url)
    save_npz(tmp_path / "big.npz", x[400:1400], y[400:1400])
    retain(laptop, "ingest", "--remote", str(tmp_path / "big.npz"))
    write_config(tmp_path / "worker", registry={"url": f"sqlite:///{tmp_path / 'shared-registry.db'}"},
                 artifacts={"url": bucket_url, "endpoint_url": s3_server.endpoint_url},
                 data={"max_file_bytes": 10_000})
    retain(worker, "run", "--once", "--worker")
    [batch] = json.loads(retain(laptop, "batches", "--json").stdout)
    assert batch["state"] == "rejected" and batch["attempts"] == 1
    assert "big.npz: file is" in batch["reason"] and "over the limit of 10000" in batch["reason"]
    assert batch["path"].startswith(bucket_url) and not (tmp_path / "worker" / "incoming").exists()


def test_an_object_changed_in_the_bucket_after_ingest_is_rejected(tmp_path, digit_data, s3_server, bucket_url):
    x, y = digit_data
    laptop, worker = two_hosts(tmp_path, digit_data, s3_server, bucket_url)
    save_npz(tmp_path / "batch.npz", x[400:600], y[400:600])
    retain(laptop, "ingest", "--remote", str(tmp_path / "batch.npz"))
    [batch] = json.loads(retain(laptop, "batches", "--json").stdout)
    save_npz(tmp_path / "other.npz", x[600:800], y[600:800])
    bucket, _, key = batch["path"].removeprefix("s3://").partition("/")
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=(tmp_path / "other.npz").read_bytes())
    retain(worker, "run", "--once", "--worker")
    [batch] = json.loads(retain(laptop, "batches", "--json").stdout)
    assert batch["state"] == "rejected" and "does not match the sha256 recorded when it was ingested" in batch["reason"]


def test_ingesting_remotely_without_a_bucket_and_a_worker_without_one_are_one_line_errors(tmp_path, workspace):
    (tmp_path / "f.npz").write_bytes(b"x")
    result = retain(workspace, "ingest", "--remote", str(tmp_path / "f.npz"), check=False)
    assert result.returncode == 1 and "--remote needs artifacts.url" in result.stderr
    result = retain(workspace, "run", "--worker", check=False)
    assert result.returncode == 1 and "set artifacts.url" in result.stderr


def test_the_bucket_lists_and_deletes_artifacts_for_gc(tmp_path, s3_server, bucket_url):
    store = worker_store(tmp_path, "a", s3_server, bucket_url)
    kept, dropped = store.put(b"production weights"), store.put(b"an old candidate")
    other = worker_store(tmp_path, "b", s3_server, bucket_url)  # an empty cache: only the bucket lists them
    assert {kept: len(b"production weights"), dropped: len(b"an old candidate")} == {
        digest: size for digest, (size, _) in other.listed().items()}
    other.delete(dropped)
    assert other.has(kept) and not other.has(dropped) and set(store.remote.listed()) == {kept}
    assert store.path(dropped).exists()  # each host's cache is its own: gc run there clears it
