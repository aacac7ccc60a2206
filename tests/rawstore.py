"""Direct access to the bytes under a store, bypassing repype and zarr: files, fsspec's memory filesystem, boto3.

Tests use it to damage a store as a disk, a bug or a person would, and to see what is really stored.
"""

from __future__ import annotations

import pathlib

import fsspec

from repype.store import layout


class Raw:
    """The keys and bytes under a store's root, read and written without repype or zarr."""

    def get(self, key: str) -> bytes | None:
        """The bytes at `key`, or None."""
        raise NotImplementedError

    def put(self, key: str, data: bytes) -> None:
        """Writes `data` at `key`."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Deletes `key`."""
        raise NotImplementedError

    def keys(self, prefix: str = "") -> set[str]:
        """Every key below `prefix` (a directory-like prefix ending with `/`, or empty)."""
        raise NotImplementedError

    def node_keys(self, path: str) -> set[str]:
        """Every key of the node at `path` (its metadata and everything below)."""
        return self.keys(path + "/")

    def chunk_bytes(self, digest: str) -> int:
        """Bytes of the stored chunks of the value `digest`."""
        return sum(len(self.get(key)) for key in self.keys(layout.blob_path(digest) + "/c/"))


class LocalRaw(Raw):
    """The files under a local store's directory."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root

    def get(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def put(self, key: str, data: bytes) -> None:
        (self.root / key).parent.mkdir(parents=True, exist_ok=True)
        (self.root / key).write_bytes(data)

    def delete(self, key: str) -> None:
        (self.root / key).unlink()

    def keys(self, prefix: str = "") -> set[str]:
        base = self.root / prefix
        return {str(path.relative_to(self.root)) for path in base.rglob("*") if path.is_file()}


class MemoryRaw(Raw):
    """The entries of fsspec's process-wide memory filesystem under a `memory://` store's path."""

    def __init__(self, path: str) -> None:
        self.fs = fsspec.filesystem("memory")
        self.path = path

    def get(self, key: str) -> bytes | None:
        try:
            return self.fs.cat_file(f"{self.path}/{key}")
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(f"{self.path}/{key}", data)

    def delete(self, key: str) -> None:
        self.fs.rm_file(f"{self.path}/{key}")

    def keys(self, prefix: str = "") -> set[str]:
        base = f"{self.path}/{prefix}".rstrip("/")
        return {name[len(self.path) + 1 :] for name in self.fs.find(base)} if self.fs.exists(base) else set()


class S3Raw(Raw):
    """The objects under an S3 store's prefix, through boto3 (not s3fs, which the store uses)."""

    def __init__(self, endpoint_url: str, bucket: str, prefix: str) -> None:
        import boto3

        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        self.bucket, self.prefix = bucket, prefix

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}", Body=data)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")

    def keys(self, prefix: str = "") -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/{prefix}"
        )
        return {item["Key"][len(self.prefix) + 1 :] for page in pages for item in page.get("Contents", [])}
