"""Content-addressed artifacts: files ``<root>/sha256/ab/<digest>``, and optionally the same
keys in an S3-compatible bucket shared by every worker, with the local folder as its cache.

Writes go to a temporary name in the same directory, are fsynced and renamed, so a crash
never leaves a partial artifact under its final name; an S3 PUT is atomic (a reader sees the
whole object or none) and carries its SHA-256 for the server to check. Reads verify the digest.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from collections.abc import Callable
from typing import Any, BinaryIO

from retain.errors import RetainError

_TEMP_PREFIX = "."
_TEMP_SUFFIX = ".tmp"
# mkstemp's names: the prefix, eight random characters, the suffix.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def stale_temp_files(directory: Path, before: float, target: str = "*") -> list[Path]:
    """Temporary files ``atomic_write`` left in ``directory`` (for targets matching the glob
    ``target``) when a process died mid-write, last modified before ``before`` (a time)."""
    found = []
    for path in directory.glob(f"{_TEMP_PREFIX}{target}.*{_TEMP_SUFFIX}"):
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if _TEMP_NAME.match(path.name) and path.is_file() and info.st_mtime < before:
            found.append(path)
    return found


def atomic_write(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``target`` through a temporary dot-file in the same directory, fsync it, then
    rename it into place: readers see the old file or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f"{_TEMP_PREFIX}{target.name}.", suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def atomic_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` with ``atomic_write``: never a partial file under ``target``."""
    with source.open("rb") as reader:
        atomic_write(target, lambda handle: shutil.copyfileobj(reader, handle))


_DIGEST = re.compile("[0-9a-f]{64}")


class ArtifactError(RetainError):
    """An artifact is missing or does not match its digest."""


class ObjectTooLarge(ArtifactError):
    """An object in the bucket is larger than the reader's limit."""


def _split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` as ``(bucket, key)``."""
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


def _checksum(digest: str) -> str:
    """The ``ChecksumSHA256`` of content whose hex SHA-256 is ``digest``: the server refuses
    a body that does not match it."""
    return base64.b64encode(bytes.fromhex(digest)).decode()


class S3Objects:
    """Artifacts in an S3-compatible bucket under ``s3://bucket/prefix``, through boto3.

    boto3 rather than s3fs: a content-addressed store needs three calls (a conditional PUT with
    a checksum, a GET, a HEAD), which boto3 makes directly and synchronously; s3fs adds fsspec,
    aiobotocore and aiohttp for a file-system view retain does not use. Credentials come from
    boto3's usual chain (``AWS_ACCESS_KEY_ID``…, ``~/.aws``, an instance role), never the config.
    """

    def __init__(self, url: str, endpoint_url: str = "", region: str = "") -> None:
        bucket, prefix = _split_s3_url(url)
        if not url.startswith("s3://") or not bucket:
            raise ArtifactError(f"artifacts.url {url!r} is not s3://bucket[/prefix]")
        try:
            import boto3
            from botocore.config import Config as BotoConfig
        except ImportError as exc:
            raise ArtifactError("artifacts.url is an s3:// URL but boto3 is not installed: "
                                "pip install 'retain[s3]'") from exc
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = url
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or None,
            config=BotoConfig(retries={"max_attempts": 5, "mode": "standard"}),
        )

    def _key(self, *parts: str) -> str:
        return "/".join(part for part in (self.prefix, *parts) if part)

    def key(self, digest: str) -> str:
        return self._key("sha256", digest[:2], digest)

    def url_of(self, *parts: str) -> str:
        """``s3://bucket/prefix/<parts>``: an object beside the artifacts."""
        return f"s3://{self.bucket}/{self._key(*parts)}"

    def _bucket_key(self, url: str) -> str:
        bucket, key = _split_s3_url(url)
        if bucket != self.bucket:
            raise ArtifactError(f"{url} is not in this store's bucket, {self.bucket}")
        return key

    def upload_file(self, url: str, path: Path, sha256: str) -> None:
        """Upload a file (its digest computed by the caller, for the server to check)."""
        with path.open("rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=self._bucket_key(url), Body=body,
                                   ChecksumSHA256=_checksum(sha256))

    def download_file(self, url: str, target: Path, max_bytes: int) -> None:
        """Download ``url`` to ``target`` (atomically). ``ArtifactError`` if it is over
        ``max_bytes``, checked before a byte is read: the size is what the server stores."""
        from botocore.exceptions import ClientError

        key = self._bucket_key(url)
        try:
            size = self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError as exc:
            raise ArtifactError(f"{url}: not in the bucket ({exc})") from exc
        if size > max_bytes:
            raise ObjectTooLarge(f"file is {size} bytes, over the limit of {max_bytes} (data.max_file_bytes)")
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda handle: shutil.copyfileobj(body, handle))

    def put(self, digest: str, data: bytes) -> None:
        """Upload unless the object exists (the same key is the same content)."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(digest), Body=data,
                                   ChecksumSHA256=_checksum(digest), IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise ArtifactError(f"artifact {digest}: upload to {self.url} failed: {exc}") from exc

    def listed(self) -> dict[str, tuple[int, float]]:
        """Every artifact in the bucket: digest -> (bytes, last modified, epoch seconds)."""
        found = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=self._key("sha256") + "/")
        for page in pages:
            for item in page.get("Contents", []):
                digest = item["Key"].rsplit("/", 1)[-1]
                if _DIGEST.fullmatch(digest):
                    found[digest] = (int(item["Size"]), item["LastModified"].timestamp())
        return found

    def delete(self, digest: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))

    def has(self, digest: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise ArtifactError(f"artifact {digest}: cannot reach {self.url}: {exc}") from exc
        return True

    def get(self, digest: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(digest))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ArtifactError(f"artifact {digest} is missing (s3://{self.bucket}/{self.key(digest)})") from exc
            raise ArtifactError(f"artifact {digest}: download from {self.url} failed: {exc}") from exc


def is_safetensors(data: bytes) -> bool:
    """A safetensors file: a little-endian u64 header length, then that much JSON. A
    ``torch.save`` file (a zip archive, or before torch 1.6 a pickle) read that way claims a
    header longer than itself and does not continue with ``{``."""
    if len(data) < 9:
        return False
    return data[8:9] == b"{" and 8 + int.from_bytes(data[:8], "little") <= len(data)


class ArtifactStore:
    """Artifacts by SHA-256 in a local folder; with ``remote``, the folder is a read cache of
    the bucket every worker shares, and each write goes to both."""

    def __init__(self, root: Path, remote: S3Objects | None = None) -> None:
        self.root = Path(root)
        self.remote = remote

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest

    def _write_local(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda handle: handle.write(data))

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.exists():
            self._write_local(target, data)
        if self.remote is not None:
            self.remote.put(digest, data)
        return digest

    def get(self, digest: str) -> bytes:
        target = self.path(digest)
        try:
            data = target.read_bytes()
        except FileNotFoundError as exc:
            if self.remote is None:
                raise ArtifactError(f"artifact {digest} is missing ({target})") from exc
            data = b""
        actual = hashlib.sha256(data).hexdigest()
        if actual == digest:
            return data
        if self.remote is None:
            raise ArtifactError(f"artifact {digest} is corrupt: its content hashes to {actual}")
        # Not cached here (or the cached copy is damaged): the bucket's copy, verified, cached.
        data = self.remote.get(digest)
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise ArtifactError(f"artifact {digest} is corrupt in {self.remote.url}: its content hashes to {actual}")
        self._write_local(target, data)
        return data

    def listed(self) -> dict[str, tuple[int, float]]:
        """Every artifact here and in the bucket: digest -> (bytes, last modified, epoch seconds)."""
        found = {}
        for path in (self.root / "sha256").glob("??/*"):
            if _DIGEST.fullmatch(path.name):
                info = path.stat()
                found[path.name] = (info.st_size, info.st_mtime)
        if self.remote is not None:
            found.update(self.remote.listed())
        return found

    def has(self, digest: str) -> bool:
        """Whether the artifact is here or in the bucket (unverified: ``get`` verifies)."""
        return self.path(digest).is_file() or (self.remote is not None and self.remote.has(digest))

    def delete(self, digest: str) -> None:
        """Remove an artifact from the folder and the bucket (gone already is fine)."""
        self.path(digest).unlink(missing_ok=True)
        if self.remote is not None:
            self.remote.delete(digest)

    def put_tensors(self, tensors: dict[str, Any]) -> str:
        """Store a dict of tensors (a ``state_dict`` or replay memory) as safetensors: a JSON
        header and raw little-endian data, which any reader can load without running code."""
        from safetensors.torch import save  # imported here: read-only registry commands never load tensors

        return self.put(save({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}))

    def sweep_temp_files(self, before: float) -> list[Path]:
        """Delete the temporary files of writes that died before ``before``; returns them."""
        swept = []
        for folder in sorted((self.root / "sha256").glob("??")):
            for path in stale_temp_files(folder, before, target="[0-9a-f]" * 64):
                path.unlink(missing_ok=True)
                swept.append(path)
        return swept

    def get_tensors(self, digest: str) -> dict[str, Any]:
        """Load a dict of tensors, verified. safetensors, or for artifacts written before retain
        0.3 a ``torch.save`` file, read with ``weights_only=True`` (no arbitrary objects)."""
        data = self.get(digest)
        if not is_safetensors(data):
            import torch

            return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        from safetensors.torch import load

        return load(data)
