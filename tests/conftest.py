"""Shared fixtures: a real S3-compatible server (moto in server mode) on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class S3Server:
    """A running moto server: its endpoint and the storage options that reach it."""

    endpoint_url: str

    @property
    def storage_options(self) -> dict:
        return {"endpoint_url": self.endpoint_url, "key": "testing", "secret": "testing"}

    def new_bucket(self) -> str:
        """Create a fresh, empty bucket and return its name."""
        import boto3

        name = f"repype-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name)
        return name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """Start moto's S3 server on 127.0.0.1 for the test session and stop it afterwards."""
    pytest.importorskip("moto.server")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    mp = pytest.MonkeyPatch()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        mp.setenv(name, value)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(endpoint_url=f"http://127.0.0.1:{port}")
    finally:
        server.stop()
        mp.undo()


@pytest.fixture
def s3_url(s3_server: S3Server) -> str:
    """URL of a store in a fresh bucket of the session's moto server."""
    return f"s3://{s3_server.new_bucket()}/store"


@pytest.fixture
def counts(tmp_path, monkeypatch):
    """A file that the stages of `taskstages` append one line per execution to, in any process."""
    import os
    import pathlib

    from taskstages import COUNTS_ENV

    path = tmp_path / "counts.txt"
    monkeypatch.setenv(COUNTS_ENV, str(path))
    tests = str(pathlib.Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    return path


@pytest.fixture
def example(tmp_path):
    """A copy of the bundled example tree `examples/blobs` (without results), its stages importable."""
    import pathlib
    import shutil
    import sys

    root = tmp_path / "blobs"
    repository = pathlib.Path(__file__).resolve().parent.parent
    shutil.copytree(repository / "examples" / "blobs", root, ignore=shutil.ignore_patterns(".repype", "*.csv", ".*"))
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
