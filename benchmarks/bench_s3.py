"""Small stage records on S3 (a moto server on 127.0.0.1): repype vs the straightforward Zarr API, 8 threads each.

Each record (one stage execution's outputs) holds a few tiny fields: a small dict, an int, a
short string and a tiny array (8 int64). Both methods write R records, then check that each
exists, at the SAME concurrency: 8 threads on each side, writing and checking.

* repype: `put_value` of every field (small JSON values live inline in the reference; the tiny
  array becomes a blob), `put_record` under a `stage_key`, from 8 threads; the check opens the
  store again (no cache from the writes) and calls `get_record(key)` from 8 threads. A row with
  repype's batched lookup `get_records(keys)` (what a task run uses; up to
  `repype.store.backend.CONCURRENCY` requests in flight in the store's event loop) and one with a
  single thread are shown for comparison, not in the headline.
* plain Zarr, the straightforward way: `zarr.open_group(url, mode="a", storage_options=...,
  zarr_format=3)` once, then per record, from 8 threads, `create_group(f"records/{key}",
  attributes=<the small fields>)` + `create_array("hist", data=...)`; the check opens the group
  again and tests `f"records/{key}" in root` for each key, from 8 threads.

The Zarr baseline (whose cost per record does not depend on the number of records) is timed on
a sample of the records, and the speedup compares milliseconds per record.

S3 requests are counted by wrapping aiobotocore's `AioEndpoint._send` (every HTTP request s3fs
sends, retries included). The moto server runs in its own process, as a real server would; it is
CPU-bound (~10-20 ms per request here), so the lever is fewer requests per record, then concurrency.

Headlines: `s3_small_records_speedup` (Zarr time / repype time, writes + checks at equal
concurrency; goal >= 5); `s3_requests_per_record_write` (goal <= 2) and
`s3_requests_per_record_check` (goal <= 1): requests per stage execution.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import pathlib
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common
from common import Result, Table, goal, pick, ratio, timed

import repype.store
from repype.store.keys import stage_key

THREADS = 8
"""Threads writing and checking records, on both sides."""

STAGE_SHA = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

T = TypeVar("T")
R = TypeVar("R")

REQUESTS: Counter = Counter()
"""S3 HTTP requests by kind (GET, PUT, HEAD, DELETE, LIST, ...), counted while :func:`counting` is active."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server in its own process on 127.0.0.1 (dummy credentials in the environment).

    A separate process, as a real server would be: in-process, moto would share the client's GIL.
    Yields the endpoint URL.
    """
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the moto server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def new_bucket(endpoint_url: str) -> str:
    import boto3

    name = f"bench-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    return name


@contextlib.contextmanager
def counting() -> Iterator[Counter]:
    """Counts every HTTP request aiobotocore sends (by kind) into :data:`REQUESTS`."""
    from aiobotocore.endpoint import AioEndpoint

    original = AioEndpoint._send

    async def send(self, request):
        kind = request.method
        if kind == "GET" and "list-type=" in request.url:
            kind = "LIST"
        REQUESTS[kind] += 1
        return await original(self, request)

    AioEndpoint._send = send
    try:
        yield REQUESTS
    finally:
        AioEndpoint._send = original


def measured(function) -> tuple[float, int, dict]:
    """(seconds, requests, requests by kind) of one call."""
    REQUESTS.clear()
    seconds, _ = timed(function)
    return seconds, sum(REQUESTS.values()), dict(REQUESTS)


WRITE, CHECK = f"repype write ({THREADS} threads)", f"repype check, get_record per key ({THREADS} threads)"
ZARR_WRITE, ZARR_CHECK = f"zarr write ({THREADS} threads)", f"zarr check ({THREADS} threads)"


def threaded(function: Callable[[T], R], items: Sequence[T], threads: int = THREADS) -> list[R]:
    """`function` of every item, from a pool of `threads` threads."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(function, items))


def make_records(count: int) -> list[tuple[str, dict]]:
    """(key, fields) of `count` small records."""
    records = []
    for index in range(count):
        fields = {
            "stats": {"count": index, "mean": round(0.5 + index / 7, 6), "ok": index % 3 == 0},
            "n": index,
            "label": f"record-{index}",
            "hist": np.arange(8, dtype=np.int64) + index,
        }
        key = stage_key(STAGE_SHA, {"index": index}, {"input_id": str(index)})
        records.append((key, fields))
    return records


def run(mode: str) -> Result:
    count = pick(mode, 10, 200, 1000)
    sample = min(count, pick(mode, 8, 48, 240))  # time a sample of Zarr's flat per-record cost
    records = make_records(count)
    keys = [key for key, _ in records]
    rows: dict[str, tuple[float, int, dict, int]] = {}
    with moto_server() as endpoint, counting():
        options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}

        # --- repype
        url = f"s3://{new_bucket(endpoint)}/store"
        store = repype.store.open(url, storage_options=options)  # creating the store is not timed

        def write_record(record: tuple[str, dict]) -> None:
            key, fields = record
            refs = {name: store.put_value(value, name) for name, value in fields.items()}
            store.put_record(key, refs, run_time=0.01, stage="small")

        def write_repype() -> None:
            # Records are independent: written concurrently, as the workers of a task or a batch would
            threaded(write_record, records)

        def check_repype(threads: int | None) -> Callable[[], None]:
            """A check on a freshly opened store (no cache from the writes; opening it is not part of the check):
            `get_record` per key from `threads` threads, or the batched `get_records` when `threads` is None."""
            fresh = repype.store.open(url, storage_options=options)

            def check() -> None:
                if threads is None:
                    found = fresh.get_records(keys)
                    assert len(found) == len(keys), f"repype found {len(found)} of {len(keys)} records"
                else:
                    assert all(threaded(lambda key: fresh.get_record(key) is not None, keys, threads))

            return check

        rows[WRITE] = (*measured(write_repype), count)
        rows["  repype open (once per process, not in the check)"] = (
            *measured(lambda: repype.store.open(url, storage_options=options)),
            1,
        )
        rows[CHECK] = (*measured(check_repype(THREADS)), count)
        rows["  repype check, batched get_records"] = (*measured(check_repype(None)), count)
        if mode != "quick":
            rows["  repype check, get_record per key, 1 thread"] = (*measured(check_repype(1)), count)
        value = repype.store.open(url, storage_options=options).get_value(store.get_record(keys[-1]).outputs["hist"])
        assert np.array_equal(value, records[-1][1]["hist"])

        # --- plain Zarr
        import zarr

        zurl = f"s3://{new_bucket(endpoint)}/plain"
        zarr.open_group(zurl, mode="a", storage_options=options, zarr_format=3)  # creating the root is not timed

        # Opening the root is not timed on either side (repype's store above is opened untimed too)
        writer = zarr.open_group(zurl, mode="a", storage_options=options, zarr_format=3)

        def write_one(record: tuple[str, dict]) -> None:
            key, fields = record
            attributes = {name: value for name, value in fields.items() if not isinstance(value, np.ndarray)}
            group = writer.create_group(f"records/{key}", attributes=attributes)
            group.create_array("hist", data=fields["hist"])

        rows[ZARR_WRITE] = (*measured(lambda: threaded(write_one, records[:sample])), sample)
        reader = zarr.open_group(zurl, mode="r", storage_options=options, zarr_format=3)

        def check_zarr() -> None:
            assert all(threaded(lambda key: f"records/{key}" in reader, keys[:sample]))

        rows[ZARR_CHECK] = (*measured(check_zarr), sample)

    def per_record(*labels: str) -> tuple[float, float]:
        """(seconds, requests) per record of the sum of steps."""
        return (
            sum(rows[label][0] / rows[label][3] for label in labels),
            sum(rows[label][1] / rows[label][3] for label in labels),
        )

    repype_seconds, repype_requests = per_record(WRITE, CHECK)
    zarr_seconds, zarr_requests = per_record(ZARR_WRITE, ZARR_CHECK)
    speedup = ratio(zarr_seconds, repype_seconds)
    write_requests, check_requests = rows[WRITE][1] / count, rows[CHECK][1] / count

    table = Table(
        "Small stage records on S3 (moto on 127.0.0.1, own process): write, then check each exists "
        f"({THREADS} threads on both sides)",
        ["step", "records", "seconds", "ms/record", "requests", "requests/record", "by kind"],
    )
    for label, (seconds, requests, kinds, records_done) in rows.items():
        by_kind = " ".join(f"{kind}:{number}" for kind, number in sorted(kinds.items()))
        table.add(
            label, records_done, seconds, seconds / records_done * 1000, requests, requests / records_done, by_kind
        )
    table.add("repype write + check", count, "", repype_seconds * 1000, "", repype_requests, "")
    table.add("zarr write + check", sample, "", zarr_seconds * 1000, "", zarr_requests, "")
    table.notes += [
        f"s3_small_records_speedup (zarr / repype, ms per record, write + check): {speedup} (goal >= 5): "
        f"{goal(speedup, 5, True)}",
        f"repype S3 requests per stage execution: {write_requests:.2f} to write (goal <= 2): "
        f"{goal(write_requests, 2, False)}, {check_requests:.2f} to check (goal <= 1): "
        f"{goal(check_requests, 1, False)}",
        (
            f"the Zarr baseline is timed on the first {sample} of the {count} records (its cost per record does not "
            "depend on their number); "
            if sample < count
            else ""
        )
        + "moto answers one request in ~10-20 ms on this machine.",
    ]
    return Result(
        [table],
        {
            "s3_small_records_speedup": speedup,
            "s3_requests_per_record_write": round(write_requests, 3),
            "s3_requests_per_record_check": round(check_requests, 3),
            "s3_requests_per_record_write_and_check": round(repype_requests, 3),
        },
    )


if __name__ == "__main__":
    common.main(run, description=__doc__)
