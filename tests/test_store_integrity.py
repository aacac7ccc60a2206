"""Integrity, concurrency, crash and maintenance (verify, gc, du/ls, CLI) tests of the store."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import repype.store
from repype.store import IntegrityError

CONTEXT = {"task": "t", "input": 3, "field": "img"}


# --- helpers -------------------------------------------------------------------------------------


def blob_dir(root: Path, digest: str) -> Path:
    return root / "blobs" / digest[:2] / digest


def record_dir(root: Path, key: str) -> Path:
    return root / "records" / key[:2] / key


def chunk_files(root: Path, digest: str) -> list[Path]:
    return sorted(path for path in (blob_dir(root, digest) / "c").rglob("*") if path.is_file())


def compressible(n: int = 60_000, offset: int = 0) -> np.ndarray:
    """An int64 ramp: zstd compresses it, so its chunk file is a real compressed frame."""
    return np.arange(offset, offset + n, dtype=np.int64)


def flip(path: Path, position: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[position % len(data)] ^= mask
    path.write_bytes(bytes(data))


def smash(path: Path, at: float = 0.5, length: int = 16) -> None:
    """Inverts `length` bytes from the relative position `at` (certain damage, unlike one flipped bit)."""
    data = bytearray(path.read_bytes())
    start = min(int(len(data) * at), max(0, len(data) - length))
    for i in range(start, min(len(data), start + length)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def key_of(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


@pytest.fixture
def local(tmp_path: Path) -> tuple[Path, repype.store.Store]:
    root = tmp_path / "store"
    return root, repype.store.open(str(root))


# --- corruption ----------------------------------------------------------------------------------


def test_flipped_chunk_bytes_raise_integrity_error_naming_digest_and_context(local):
    root, store = local
    value = compressible()
    ref = store.put_value(value, "img")
    (chunk,) = chunk_files(root, ref["digest"])
    assert chunk.stat().st_size < value.nbytes  # really compressed
    np.testing.assert_array_equal(store.get_value(ref), value)
    smash(chunk)
    with pytest.raises(IntegrityError) as plain:
        store.get_value(ref)
    assert ref["digest"] in str(plain.value)
    with pytest.raises(IntegrityError) as named:
        store.get_value(ref, context=CONTEXT)
    message = str(named.value)
    assert ref["digest"] in message
    assert "'t'" in message and "task" in message
    assert "input 3" in message
    assert "'img'" in message and "field" in message


def test_deleted_chunk_raises_instead_of_returning_fill_values(local):
    root, store = local
    value = compressible()
    ref = store.put_value(value, "img")
    (chunk,) = chunk_files(root, ref["digest"])
    chunk.unlink()
    with pytest.raises(IntegrityError) as error:
        store.get_value(ref, context=CONTEXT)
    assert ref["digest"] in str(error.value)
    assert "input 3" in str(error.value)


def test_deleted_chunk_of_multi_chunk_blob_raises(local, monkeypatch):
    root, store = local
    monkeypatch.setattr(repype.store.blobs, "CHUNK_BYTES", 8 << 10)
    value = np.arange(200 * 30, dtype=np.float64).reshape(200, 30) + 1
    ref = store.put_value(value, "img")
    chunks = chunk_files(root, ref["digest"])
    assert len(chunks) > 1
    chunks[len(chunks) // 2].unlink()
    with pytest.raises(IntegrityError, match=ref["digest"]):
        store.get_value(ref)


def test_truncated_chunk_raises(local):
    root, store = local
    ref = store.put_value(compressible(), "img")
    (chunk,) = chunk_files(root, ref["digest"])
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    with pytest.raises(IntegrityError, match=ref["digest"]):
        store.get_value(ref, context=CONTEXT)


def test_missing_blob_raises_integrity_error_naming_context(local):
    root, store = local
    ref = store.put_value(compressible(), "img")
    shutil.rmtree(blob_dir(root, ref["digest"]))
    with pytest.raises(IntegrityError) as error:
        repype.store.open(str(root)).get_value(ref, context=CONTEXT)
    assert ref["digest"] in str(error.value)
    assert "field 'img'" in str(error.value)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0, max_value=10**6), mask=st.integers(min_value=1, max_value=255))
def test_a_flipped_byte_in_a_chunk_never_yields_a_wrong_value(local, position, mask):
    """IntegrityError, or (for the few bits zstd ignores, e.g. in its frame header) the exact value."""
    root, store = local
    value = np.linspace(0, 1, 3000) ** 2
    ref = store.put_value(value, "img")
    (chunk,) = chunk_files(root, ref["digest"])
    original = chunk.read_bytes()
    try:
        flip(chunk, position, mask)
        try:
            loaded = store.get_value(ref, context=CONTEXT)
        except IntegrityError as error:
            assert ref["digest"] in str(error) and "field 'img'" in str(error)
        else:
            np.testing.assert_array_equal(loaded, value)
    finally:
        chunk.write_bytes(original)
    np.testing.assert_array_equal(store.get_value(ref), value)


class Opaque:
    """A value only a pickle can store."""

    def __init__(self, payload: list) -> None:
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.payload == self.payload


VALUE_KINDS = {
    "native": lambda: np.arange(20_000, dtype=np.int32).reshape(200, 100),
    "raw-unicode": lambda: np.array([f"word {i}" for i in range(3000)]),
    "raw-datetime": lambda: np.arange(5000).astype("datetime64[s]"),
    "big-endian": lambda: np.arange(5000, dtype=">f8"),
    "large-json": lambda: {"rows": [[i, str(i)] for i in range(1500)]},
    "pickle": lambda: Opaque(list(range(3000))),
}


@pytest.mark.parametrize("kind", sorted(VALUE_KINDS))
def test_damage_of_any_value_kind_raises_integrity_error(local, kind):
    root, store = local
    value = VALUE_KINDS[kind]()
    ref = store.put_value(value, "v")
    assert "value" not in ref  # stored as a blob
    loaded = store.get_value(ref)
    if isinstance(value, np.ndarray):
        assert loaded.dtype == value.dtype
        np.testing.assert_array_equal(loaded, value)
    else:
        assert loaded == value
    chunks = chunk_files(root, ref["digest"])
    smash(chunks[0], 1 / 3)
    with pytest.raises(IntegrityError, match=ref["digest"]):
        store.get_value(ref, context=CONTEXT)
    chunks[0].unlink()
    with pytest.raises(IntegrityError, match=ref["digest"]):
        store.get_value(ref, context=CONTEXT)
    assert ref["digest"] in store.verify().damaged_blobs


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0, max_value=10**6), mask=st.sampled_from([0x01, 0x02, 0x08, 0x20, 0xFF]))
def test_damaged_blob_metadata_never_yields_a_wrong_value(local, position, mask):
    """A flipped byte in a blob's zarr.json gives the right value or IntegrityError, nothing else."""
    root, store = local
    value = np.linspace(0, 1, 3000) ** 2
    ref = store.put_value(value, "img")
    path = blob_dir(root, ref["digest"]) / "zarr.json"
    original = path.read_bytes()
    try:
        flip(path, position, mask)
        try:
            loaded = store.get_value(ref, context=CONTEXT)
        except IntegrityError as error:
            assert ref["digest"] in str(error)
        else:
            assert loaded.dtype == value.dtype
            np.testing.assert_array_equal(loaded, value)
    finally:
        path.write_bytes(original)


def test_verify_reports_damage_and_repair_deletes_it(local):
    root, store = local
    good = store.put_value(compressible(offset=7), "other")
    value = compressible()
    ref = store.put_value(value, "img")
    key, good_key = key_of("damaged"), key_of("good")
    store.put_record(key, {"img": ref, "other": good}, 1.0, stage="s")
    store.put_record(good_key, {"other": good}, 1.0, stage="s")
    assert store.verify().ok

    smash(chunk_files(root, ref["digest"])[0], 0.2)
    report = store.verify()
    assert not report.ok
    assert set(report.damaged_blobs) == {ref["digest"]}
    assert set(report.broken_records) == {key}
    assert ref["digest"] in report.broken_records[key]
    text = report.format()
    assert ref["digest"] in text and key in text and "DAMAGED" in text

    repaired = store.verify(repair=True)
    assert not repaired.ok and repaired.repaired
    assert not blob_dir(root, ref["digest"]).exists()
    assert not record_dir(root, key).exists()
    assert store.get_record(key) is None
    after = store.verify()
    assert after.ok, after.format()
    assert after.checked_blobs == 1 and after.checked_records == 1
    np.testing.assert_array_equal(store.get_value(good), compressible(offset=7))
    assert store.get_record(good_key) is not None

    again = store.put_value(value, "img")  # a plain put re-creates the deleted blob
    assert again == ref
    np.testing.assert_array_equal(repype.store.open(str(root)).get_value(ref), value)
    assert store.verify().ok


def test_rewrite_repairs_a_damaged_blob_in_place(local):
    root, store = local
    value = compressible()
    ref = store.put_value(value, "img")
    chunk_files(root, ref["digest"])[0].unlink()
    fresh = repype.store.open(str(root))
    fresh.put_value(value, "img")  # a plain put trusts the existing metadata
    with pytest.raises(IntegrityError):
        fresh.get_value(ref)
    assert fresh.put_value(value, "img", rewrite=True) == ref
    np.testing.assert_array_equal(fresh.get_value(ref, context=CONTEXT), value)
    assert fresh.verify().ok


def test_verify_reports_record_with_invalid_json(local):
    root, store = local
    ref = store.put_value(compressible(), "img")
    key = key_of("bad-json")
    store.put_record(key, {"img": ref}, 1.0)
    (record_dir(root, key) / "zarr.json").write_bytes(b'{"zarr_format": 3, "node_type": "gro')
    report = repype.store.open(str(root)).verify()
    assert not report.ok
    assert set(report.broken_records) == {key}
    assert key in report.format()
    with pytest.warns(repype.store.IntegrityWarning, match=key):  # a damaged record counts as missing
        assert repype.store.open(str(root)).get_record(key) is None
    assert repype.store.open(str(root)).verify(repair=True).repaired
    assert repype.store.open(str(root)).verify().ok
    assert repype.store.open(str(root)).get_record(key) is None


def test_verify_reports_manifest_and_ref_reaching_a_damaged_value(local):
    root, store = local
    value = compressible()
    ref = store.put_value(value, "img")
    digest = store.put_manifest("task/a", manifest([[0, {"img": ref}]]))
    smash(chunk_files(root, ref["digest"])[0])
    report = store.verify()
    assert set(report.broken_manifests) == {digest}
    assert set(report.broken_refs) == {"task/a"}
    store.verify(repair=True)
    assert store.verify().ok
    assert store.list_refs() == []


def manifest(inputs: list, records: list | None = None) -> repype.store.Manifest:
    """A manifest of `[input_id, refs]` pairs; the first input lists the `records` the task reached."""
    entries = [
        repype.store.InputEntry(input_id, refs, records=list(records or []) if index == 0 else [])
        for index, (input_id, refs) in enumerate(inputs)
    ]
    return repype.store.Manifest({}, {}, {}, entries)


# --- leftovers of interrupted writes --------------------------------------------------------------


def test_partial_record_write_leftover_is_not_damage(local):
    """A writer killed inside LocalStore's atomic write leaves `zarr.<uuid>.partial` and no `zarr.json`."""
    root, store = local
    ref = store.put_value(compressible(), "img")
    store.put_record(key_of("complete"), {"img": ref}, 1.0)
    leftover = record_dir(root, key_of("killed"))
    leftover.mkdir(parents=True)
    (leftover / "zarr.0123456789abcdef0123456789abcdef.partial").write_bytes(b'{"zarr_format":3,"node_ty')
    report = store.verify()
    assert report.ok, report.format()


@pytest.mark.parametrize("section", ["blobs", "manifests", "refs"])
def test_verify_reports_nodes_with_invalid_metadata(local, section):
    root, store = local
    ref = store.put_value(compressible(), "img")
    digest = store.put_manifest("a", manifest([[0, {"img": ref}]]))
    node = {
        "blobs": blob_dir(root, ref["digest"]),
        "manifests": root / "manifests" / digest[:2] / digest,
        "refs": root / "refs" / "a",
    }[section]
    (node / "zarr.json").write_bytes(b"{not json")
    report = store.verify()  # raises json.JSONDecodeError (a ValueError) today
    assert not report.ok
    assert ref["digest"] in report.damaged_blobs or digest in report.broken_manifests or "a" in report.broken_refs


def test_manifest_inline_values_round_trip(local):
    """Inline JSON values of a manifest survive the manifest's JSON round trip."""
    _, store = local
    ref = store.put_value({"a": [1, 2.5, "x"]}, "meta")
    store.put_manifest("m", manifest([[1, {"meta": ref}]]))
    fresh = repype.store.open(str(local[0]), mode="r")
    loaded = fresh.get_manifest("m")
    assert loaded.input_ids == [1]
    assert fresh.get_value(fresh.manifest_inputs(loaded)[1].refs["meta"]) == {"a": [1, 2.5, "x"]}
    assert os.path.isdir(local[0] / "refs")


# --- concurrency -----------------------------------------------------------------------------------

WORKERS = 4
SHARED = 4
OWN = 2


def shared_value(k: int) -> np.ndarray:
    return np.arange(3000 + 100 * k, dtype=np.float64) * (k + 1)


def own_value(worker: int, k: int) -> np.ndarray:
    return np.random.default_rng(1000 * worker + k).integers(0, 1000, size=(40, 50), dtype=np.int32)


def shared_key(k: int) -> str:
    return key_of(f"shared-{k}")


def own_key(worker: int, k: int) -> str:
    return key_of(f"own-{worker}-{k}")


def common_manifest(refs: list[dict]) -> dict:
    return manifest([[k, {"v": ref}] for k, ref in enumerate(refs)], [shared_key(k) for k in range(SHARED)])


def concurrent_writer(url: str, options: dict | None, worker: int, barrier) -> None:
    """Writes overlapping values, records and refs, then reads back what any worker committed."""
    store = repype.store.open(url, storage_options=options)
    order = [(k + worker) % SHARED for k in range(SHARED)]
    barrier.wait(timeout=60)
    shared = {k: store.put_value(shared_value(k), f"s{k}") for k in order}
    own = [store.put_value(own_value(worker, k), f"o{k}") for k in range(OWN)]
    for k in order:
        store.put_record(shared_key(k), {"v": shared[k]}, 1.0, stage="shared")
    for k in range(OWN):
        store.put_record(own_key(worker, k), {"o": own[k], "s": shared[(worker + k) % SHARED]}, 2.0, stage="own")
    store.put_manifest("common", common_manifest([shared[k] for k in range(SHARED)]))
    store.put_manifest(
        f"worker/{worker}", manifest([[k, {"o": ref}] for k, ref in enumerate(own)], [own_key(worker, 0)])
    )
    # whatever another worker committed (they may still be writing) is complete
    reader = repype.store.open(url, storage_options=options, mode="r")
    keys = [shared_key(k) for k in range(SHARED)] + [own_key(w, 0) for w in range(WORKERS)]
    for key, record in reader.get_records(keys).items():
        ref = record.outputs["v" if key in keys[:SHARED] else "o"]
        assert reader.get_value(ref).shape == tuple(ref["shape"])
    for name in reader.list_refs():
        assert reader.get_manifest(name).input_ids


def run_concurrent_writers(url: str, options: dict | None) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    processes = [
        context.Process(target=concurrent_writer, args=(url, options, worker, barrier)) for worker in range(WORKERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * WORKERS


def check_concurrent_result(url: str, options: dict | None) -> None:
    store = repype.store.open(url, storage_options=options, mode="r")
    report = store.verify()  # every blob re-hashed: its content matches its digest
    assert report.ok, report.format()
    assert report.incomplete_blobs == []
    assert report.checked_blobs == SHARED + WORKERS * OWN
    assert report.checked_records == SHARED + WORKERS * OWN
    assert report.checked_manifests == 1 + WORKERS
    expected = {k: shared_value(k) for k in range(SHARED)}
    expected.update({(w, k): own_value(w, k) for w in range(WORKERS) for k in range(OWN)})
    digest = {name: store.describe(value)["digest"] for name, value in expected.items()}
    for name, value in expected.items():  # every value read back once
        ref = dict(store.describe(value), stored=True)
        np.testing.assert_array_equal(store.get_value(ref, context={"field": str(name)}), value)

    def digests(refs: dict) -> dict[str, str]:
        return {field: ref["digest"] for field, ref in refs.items()}

    records = store.get_records([shared_key(k) for k in range(SHARED)])
    for k in range(SHARED):
        assert (records[shared_key(k)].stage, records[shared_key(k)].run_time) == ("shared", 1.0)
        assert digests(records[shared_key(k)].outputs) == {"v": digest[k]}
    records = store.get_records([own_key(w, k) for w in range(WORKERS) for k in range(OWN)])
    for w in range(WORKERS):
        for k in range(OWN):
            assert digests(records[own_key(w, k)].outputs) == {"o": digest[w, k], "s": digest[(w + k) % SHARED]}
    assert store.list_refs() == ["common"] + [f"worker/{w}" for w in range(WORKERS)]
    for w in range(WORKERS):
        view = store.task(f"worker/{w}")
        assert view.input_ids == list(range(OWN))
        assert [view.refs(k)["o"]["digest"] for k in range(OWN)] == [digest[w, k] for k in range(OWN)]
    common = store.task("common")
    assert common.manifest.digest == store.ref_target("common")  # every worker wrote the same manifest
    np.testing.assert_array_equal(common.field(SHARED - 1, "v"), shared_value(SHARED - 1))
    assert [common.refs(k)["v"]["digest"] for k in range(SHARED)] == [digest[k] for k in range(SHARED)]


def test_concurrent_writers_local(tmp_path):
    url = str(tmp_path / "store")
    repype.store.open(url)
    run_concurrent_writers(url, None)
    check_concurrent_result(url, None)


def test_concurrent_writers_s3(s3_server):
    url = f"s3://{s3_server.new_bucket()}/store"
    options = s3_server.storage_options
    run_concurrent_writers(url, options)  # the store is created by the racing workers themselves
    check_concurrent_result(url, options)


# --- crash ----------------------------------------------------------------------------------------

CRASH_TRIALS = 24
CRASH_FIELDS = 1
CRASH_SIZE = 1500
CRASH_POOL = 4

# Imports once, then forks one writer per trial (the writer is a fresh process; only the slow imports
# are shared), so that a trial costs milliseconds. A writer reports "started <pid>" and then writes
# values (multi-chunk blobs) and a record per iteration, reporting "c" after each record, until it is killed.
ZYGOTE = r"""
import hashlib, os, sys, traceback
import numpy as np
import repype.store
import repype.store.blobs

repype.store.blobs.CHUNK_BYTES = 2048
root, size, fields, pool = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
POOL = [np.arange(size, dtype=np.float64) * (k + 1) for k in range(pool)]


def write(seed):
    store = repype.store.open(root)
    rng = np.random.default_rng(seed)
    os.write(1, f"started {os.getpid()}\n".encode())
    i = 0
    while True:
        outputs = {"pool": store.put_value(POOL[i % pool], "pool")}
        for f in range(fields):
            outputs[f"f{f}"] = store.put_value(rng.standard_normal(size), f"f{f}")
        store.put_record(hashlib.sha1(f"{seed}-{i}".encode()).hexdigest(), outputs, 0.01, stage="crash")
        os.write(1, b"c\n")
        i += 1


print("ready", flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            write(int(line))
        except BaseException:
            traceback.print_exc()
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    print(f"reaped {pid} {status}", flush=True)
"""


def crash_values(seed: int, count: int) -> list[dict[str, np.ndarray]]:
    """What the writer of `seed` wrote in its first `count` iterations."""
    rng = np.random.default_rng(seed)
    result = []
    for i in range(count):
        values = {"pool": np.arange(CRASH_SIZE, dtype=np.float64) * (i % CRASH_POOL + 1)}
        for f in range(CRASH_FIELDS):
            values[f"f{f}"] = rng.standard_normal(CRASH_SIZE)
        result.append(values)
    return result


def only_write_leftovers(root: Path, key: str) -> bool:
    """Whether a record node holds nothing but temporary files of an interrupted atomic write."""
    names = [path.name for path in record_dir(root, key).iterdir()]
    return bool(names) and all(name.endswith(".partial") for name in names)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_writers_killed_at_random_leave_no_broken_record(tmp_path):
    root = tmp_path / "store"
    repype.store.open(str(root))
    zygote = subprocess.Popen(
        [sys.executable, "-c", ZYGOTE, str(root), str(CRASH_SIZE), str(CRASH_FIELDS), str(CRASH_POOL)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    rng = random.Random(20240501)
    delays = [0.0, 0.15] + [rng.uniform(0, 0.15) for _ in range(CRASH_TRIALS - 2)]
    waits = [0] * CRASH_TRIALS + [2]  # the last writer is killed after its second commit (plus a delay)
    delays.append(rng.uniform(0, 0.15))
    reported = []
    try:
        assert zygote.stdout.readline() == "ready\n"
        for seed, (delay, wait) in enumerate(zip(delays, waits)):
            zygote.stdin.write(f"{seed}\n")
            zygote.stdin.flush()
            word, pid = zygote.stdout.readline().split()
            assert word == "started"
            commits = 0
            while commits < wait:
                assert zygote.stdout.readline() == "c\n"
                commits += 1
            time.sleep(delay)
            os.kill(int(pid), signal.SIGKILL)
            while (line := zygote.stdout.readline()) == "c\n":
                commits += 1
            word, reaped, status = line.split()
            assert (word, reaped) == ("reaped", pid)
            assert os.WIFSIGNALED(int(status)) and os.WTERMSIG(int(status)) == signal.SIGKILL  # killed mid-write
            reported.append(commits)
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=30)
    assert reported[-1] >= 2

    store = repype.store.open(str(root))
    report = store.verify()
    leftovers = {key for key in report.broken_records if only_write_leftovers(root, key)}  # see the xfail above
    assert set(report.broken_records) == leftovers, report.format()
    assert not report.damaged_blobs and not report.broken_manifests, report.format()

    committed: dict[str, dict] = {}
    for seed in range(len(delays)):
        keys = [key_of(f"{seed}-{i}") for i in range(400)]
        records = store.get_records(keys)
        count = len(records)
        assert all(key in records for key in keys[:count]), "records are committed in order"
        # every record the writer reported is there, plus at most the one it was killed before reporting
        assert reported[seed] <= count <= reported[seed] + 1
        for key, values in zip(keys[:count], crash_values(seed, count)):
            outputs = records[key].outputs
            assert set(outputs) == set(values)
            for name, value in values.items():
                np.testing.assert_array_equal(store.get_value(outputs[name]), value)
            committed[key] = outputs
    assert committed, "no writer lived long enough to commit a record"

    referenced = {ref["digest"] for outputs in committed.values() for ref in outputs.values()}
    assert referenced.isdisjoint(report.incomplete_blobs)
    store.put_manifest("crash", manifest([[key, outputs] for key, outputs in committed.items()], list(committed)))
    collected = store.gc(grace=0, dry_run=False)
    assert set(report.incomplete_blobs) <= set(collected.blobs)
    assert referenced.isdisjoint(collected.blobs)
    assert set(collected.records) == leftovers
    assert collected.manifests == []
    for digest in collected.blobs:
        assert not blob_dir(root, digest).exists()

    after = repype.store.open(str(root)).verify()
    assert after.ok, after.format()
    assert after.incomplete_blobs == []
    assert after.checked_blobs == len(referenced)
    assert after.checked_records == len(committed)
    for outputs in list(committed.values())[::7]:
        for ref in outputs.values():
            assert store.get_value(ref).shape == (CRASH_SIZE,)


# --- gc -------------------------------------------------------------------------------------------


def backdate_blob(root: Path, digest: str, seconds: float) -> None:
    backdate_node(blob_dir(root, digest), seconds)


def backdate_node(node: Path, seconds: float) -> None:
    moment = time.time() - seconds
    for path in node.rglob("*"):
        os.utime(path, (moment, moment))


def backdate_record(root: Path, key: str, seconds: float) -> None:
    path = record_dir(root, key) / "zarr.json"
    document = json.loads(path.read_bytes())
    document["attributes"]["repype_record"]["created"] -= seconds
    path.write_text(json.dumps(document))


def build_gc_store(root: Path) -> tuple[repype.store.Store, dict]:
    """Two refs (one then deleted), records reached by them, and unreferenced records and values."""
    store = repype.store.open(str(root))
    v = {name: store.put_value(compressible(5000, offset=100_000 * i), name) for i, name in enumerate("ABCDEFGH")}
    inline = store.put_value({"small": [1, 2]}, "meta")
    keys = {name: key_of(name) for name in ("live", "two", "orphan", "live_only")}
    store.put_record(keys["live"], {"d": v["D"], "a": v["A"]}, 1.0)
    store.put_record(keys["two"], {"g": v["G"]}, 1.0)
    store.put_record(keys["orphan"], {"f": v["F"], "a": v["A"]}, 1.0)
    store.put_record(keys["live_only"], {"h": v["H"]}, 1.0)  # reached through the manifest's record list only
    one = store.put_manifest(
        "one", manifest([[0, {"a": v["A"], "b": v["B"], "m": inline}]], [keys["live"], keys["live_only"]])
    )
    two = store.put_manifest("two", manifest([[0, {"a": v["A"], "c": v["C"]}]], [keys["two"]]))
    store.delete_ref("two")
    # E: a value nothing points at
    return store, {"values": v, "inline": inline, "keys": keys, "one": one, "two": two}


def snapshot(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def test_gc_dry_run_within_grace_deletes_nothing(tmp_path):
    root = tmp_path / "store"
    store, _ = build_gc_store(root)
    before = snapshot(root)
    report = store.gc(grace=3600)
    assert report.dry_run
    assert (report.blobs, report.records, report.manifests) == ([], [], [])
    assert report.freed_bytes == 0
    assert report.spared_young >= 4  # orphan and 'two' records, manifest two, value E at least
    assert "would delete 0 value(s)" in report.format() and "DRY RUN" in report.format()
    kept = store.gc(grace=3600, dry_run=False)
    assert (kept.blobs, kept.records, kept.manifests) == ([], [], [])
    assert snapshot(root) == before


def test_gc_removes_exactly_what_no_ref_reaches(tmp_path):
    root = tmp_path / "store"
    store, built = build_gc_store(root)
    v, keys = built["values"], built["keys"]
    unreachable_blobs = {v[name]["digest"] for name in "CEFG"}
    before = snapshot(root)

    dry = store.gc(grace=0)
    assert set(dry.blobs) == unreachable_blobs
    assert set(dry.records) == {keys["two"], keys["orphan"]}
    assert dry.manifests == [built["two"]]
    sizes = {d: json.loads((blob_dir(root, d) / "zarr.json").read_bytes()) for d in unreachable_blobs}
    assert dry.freed_bytes == sum(doc["attributes"]["repype"]["stored_bytes"] for doc in sizes.values())
    assert dry.freed_bytes == sum(p.stat().st_size for d in unreachable_blobs for p in chunk_files(root, d))
    assert "would delete 4 value(s)" in dry.format()
    assert snapshot(root) == before  # a dry run deletes nothing

    done = store.gc(grace=0, dry_run=False)
    assert not done.dry_run
    assert (set(done.blobs), set(done.records), done.manifests) == (set(dry.blobs), set(dry.records), dry.manifests)
    assert "deleted 4 value(s)" in done.format() and "DRY RUN" not in done.format()
    for digest in unreachable_blobs:
        assert not blob_dir(root, digest).exists()
    for key in (keys["two"], keys["orphan"]):
        assert not record_dir(root, key).exists()
    assert not (root / "manifests" / built["two"][:2] / built["two"]).exists()

    fresh = repype.store.open(str(root))
    assert fresh.list_refs() == ["one"]
    loaded = fresh.task("one").load()
    np.testing.assert_array_equal(loaded[0]["a"], compressible(5000, offset=0))
    np.testing.assert_array_equal(loaded[0]["b"], compressible(5000, offset=100_000))
    assert loaded[0]["m"] == {"small": [1, 2]}
    for key, name in ((keys["live"], "d"), (keys["live_only"], "h")):
        record = fresh.get_record(key)
        assert record is not None
        fresh.get_value(record.outputs[name])
    assert fresh.get_record(keys["orphan"]) is None
    report = fresh.verify()
    assert report.ok and report.checked_blobs == 4 and report.checked_records == 2 and report.checked_manifests == 1
    again = fresh.gc(grace=0, dry_run=False)
    assert (again.blobs, again.records, again.manifests) == ([], [], [])


def test_gc_spares_young_unreferenced_records_and_what_they_reach(tmp_path):
    root = tmp_path / "store"
    store = repype.store.open(str(root))
    old_value, young_value, kept_value, loose = (
        store.put_value(compressible(4000, offset=i * 10_000), f"v{i}") for i in range(4)
    )
    store.put_record(key_of("old"), {"v": old_value}, 1.0)
    store.put_record(key_of("young"), {"v": young_value, "shared": old_value}, 1.0)
    store.put_record(key_of("kept-old"), {"v": kept_value}, 1.0)
    store.put_manifest("keep", manifest([[0, {"v": kept_value}]], [key_of("kept-old")]))
    old_manifest = store.put_manifest("gone", manifest([[0, {"v": kept_value}]], []))
    store.delete_ref("gone")
    backdate_node(root / "manifests" / old_manifest[:2] / old_manifest, 7200)
    for ref in (old_value, young_value, kept_value, loose):
        backdate_blob(root, ref["digest"], 7200)  # every value is old on disk
    backdate_record(root, key_of("old"), 7200)
    backdate_record(root, key_of("kept-old"), 7200)

    fresh = repype.store.open(str(root))
    report = fresh.gc(grace=3600, dry_run=False)
    assert report.records == [key_of("old")]
    assert report.blobs == [loose["digest"]]  # the old record's value is also reached by the young record
    assert report.manifests == [old_manifest]
    assert report.spared_young == 1
    assert fresh.get_record(key_of("young")) is not None
    assert fresh.get_record(key_of("old")) is None
    assert fresh.get_record(key_of("kept-old")) is not None
    for ref in (old_value, young_value, kept_value):
        fresh.get_value(ref)
    assert fresh.verify().ok

    later = repype.store.open(str(root)).gc(grace=0, dry_run=False)
    assert later.records == [key_of("young")]
    assert set(later.blobs) == {old_value["digest"], young_value["digest"]}
    assert repype.store.open(str(root)).verify().ok


def test_gc_removes_incomplete_blobs_of_killed_writers(tmp_path):
    root = tmp_path / "store"
    store = repype.store.open(str(root))
    complete = store.put_value(compressible(), "img")
    store.put_manifest("t", manifest([[0, {"img": complete}]]))
    partial = store.put_value(compressible(offset=5), "img")
    (blob_dir(root, partial["digest"]) / "zarr.json").unlink()  # as if killed before the metadata
    report = store.verify()
    assert report.ok and report.incomplete_blobs == [partial["digest"]]
    assert "incomplete" in report.format()
    fresh = repype.store.open(str(root))
    assert fresh.gc(grace=3600).blobs == []  # maybe still being written
    assert fresh.gc(grace=0, dry_run=False).blobs == [partial["digest"]]
    assert not blob_dir(root, partial["digest"]).exists()
    after = fresh.verify()
    assert after.ok and after.incomplete_blobs == []
    np.testing.assert_array_equal(fresh.get_value(complete), compressible())
    # the next writer of that value writes it completely
    assert fresh.put_value(compressible(offset=5), "img") == partial
    np.testing.assert_array_equal(repype.store.open(str(root)).get_value(partial), compressible(offset=5))


def test_incomplete_blob_is_rewritten_by_the_next_writer(tmp_path):
    root = tmp_path / "store"
    store = repype.store.open(str(root))
    value = compressible()
    ref = store.put_value(value, "img")
    (blob_dir(root, ref["digest"]) / "zarr.json").unlink()
    chunk_files(root, ref["digest"])[0].write_bytes(b"half a chunk")
    with pytest.raises(IntegrityError, match=ref["digest"]):
        repype.store.open(str(root)).get_value(ref, context=CONTEXT)
    writer = repype.store.open(str(root))
    assert writer.put_value(value, "img") == ref
    np.testing.assert_array_equal(repype.store.open(str(root)).get_value(ref), value)
    assert repype.store.open(str(root)).verify().ok


def test_gc_never_breaks_a_record_written_while_it_runs(tmp_path, monkeypatch):
    """A writer reuses an old, unreferenced value between gc's listing and its deletions."""
    from repype.store import maintenance

    root = tmp_path / "store"
    store = repype.store.open(str(root))
    value = compressible()
    ref = store.put_value(value, "img")
    backdate_blob(root, ref["digest"], 7200)
    original = maintenance.take_inventory

    def inventory_then_writer(target):
        inventory = original(target)
        writer = repype.store.open(str(root))
        writer.put_record(key_of("running"), {"img": writer.put_value(value, "img")}, 1.0)
        return inventory

    monkeypatch.setattr(maintenance, "take_inventory", inventory_then_writer)
    repype.store.open(str(root)).gc(grace=3600, dry_run=False)
    monkeypatch.undo()
    report = repype.store.open(str(root)).verify()
    assert report.ok, report.format()


def test_long_running_writer_rewrites_a_value_that_gc_deleted(tmp_path):
    root = tmp_path / "store"
    writer = repype.store.open(str(root))
    value = compressible()
    ref = writer.put_value(value, "img")
    backdate_blob(root, ref["digest"], 7200)
    assert repype.store.open(str(root)).gc(grace=3600, dry_run=False).blobs == [ref["digest"]]
    writer.put_record(key_of("later"), {"img": writer.put_value(value, "img")}, 1.0)
    report = repype.store.open(str(root)).verify()
    assert report.ok, report.format()


# --- du / ls --------------------------------------------------------------------------------------


def stored_bytes(root: Path, ref: dict) -> int:
    document = json.loads((blob_dir(root, ref["digest"]) / "zarr.json").read_bytes())
    return document["attributes"]["repype"]["stored_bytes"]


def build_two_tasks(root: Path) -> tuple[repype.store.Store, dict[str, dict]]:
    store = repype.store.open(str(root))
    rng = np.random.default_rng(7)
    refs = {
        "shared": store.put_value(rng.standard_normal(40_000), "big"),  # incompressible: about 320 kB
        "own_a": store.put_value(rng.standard_normal(2_000), "small"),
        "own_b": store.put_value(rng.standard_normal(3_000), "small"),
        "loose": store.put_value(rng.standard_normal(1_000), "x"),
    }
    inline = store.put_value("label", "name")
    store.put_manifest(
        "alpha", manifest([[0, {"big": refs["shared"], "small": refs["own_a"]}], [1, {"big": refs["shared"]}]])
    )
    store.put_manifest("beta/sub", manifest([["x", {"big": refs["shared"], "small": refs["own_b"], "name": inline}]]))
    return store, refs


def test_du_reports_shared_and_unique_bytes_and_dedup_ratio(tmp_path):
    root = tmp_path / "store"
    store, refs = build_two_tasks(root)
    size = {name: stored_bytes(root, ref) for name, ref in refs.items()}
    assert size["shared"] > 300_000
    assert size["shared"] == sum(p.stat().st_size for p in chunk_files(root, refs["shared"]["digest"]))

    report = store.du()
    by_name = {task.name: task for task in report.tasks}
    assert list(by_name) == ["alpha", "beta/sub"]
    alpha, beta = by_name["alpha"], by_name["beta/sub"]
    assert (alpha.inputs, alpha.fields) == (2, ["big", "small"])
    assert (beta.inputs, beta.fields) == (1, ["big", "name", "small"])
    assert alpha.bytes == size["shared"] + size["own_a"]  # the shared value counts once per task
    assert beta.bytes == size["shared"] + size["own_b"]
    assert (alpha.unique, beta.unique) == (size["own_a"], size["own_b"])
    assert report.logical_bytes == alpha.bytes + beta.bytes
    assert report.physical_bytes == size["shared"] + size["own_a"] + size["own_b"]
    assert report.total_bytes == sum(size.values())
    assert report.dedup_ratio == pytest.approx(report.logical_bytes / report.physical_bytes)
    assert 1.5 < report.dedup_ratio < 2
    text = report.format()
    assert "alpha" in text and "beta/sub" in text
    assert f"dedup ratio {report.dedup_ratio:.2f}" in text

    listing = store.ls()
    assert [task.name for task in listing.tasks] == ["alpha", "beta/sub"]
    assert "alpha" in listing.format() and "beta/sub" in listing.format()


def test_du_of_an_empty_store_and_without_sharing(tmp_path):
    store = repype.store.open(str(tmp_path / "store"))
    empty = store.du()
    assert empty.tasks == [] and empty.dedup_ratio == 1.0 and empty.total_bytes == 0
    ref = store.put_value(compressible(), "img")
    store.put_manifest("only", manifest([[0, {"img": ref}]]))
    report = store.du()
    assert report.dedup_ratio == 1.0
    assert report.tasks[0].bytes == report.tasks[0].unique == report.physical_bytes > 0


# --- command line ---------------------------------------------------------------------------------


def repype_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "repype", *args], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent
    )


def test_cli_verify_exit_status(tmp_path):
    root = tmp_path / "store"
    _, refs = build_two_tasks(root)
    clean = repype_cli("store", "verify", str(root))
    assert clean.returncode == 0, clean.stderr
    assert "OK" in clean.stdout and "checked 4 value(s)" in clean.stdout
    smash(chunk_files(root, refs["own_a"]["digest"])[0])
    damaged = repype_cli("store", "verify", str(root))
    assert damaged.returncode == 1
    assert "DAMAGED" in damaged.stdout and refs["own_a"]["digest"] in damaged.stdout
    assert chunk_files(root, refs["own_a"]["digest"])  # verify without --repair changes nothing


def test_cli_gc_is_a_dry_run_unless_confirmed(tmp_path):
    root = tmp_path / "store"
    _, refs = build_two_tasks(root)
    before = snapshot(root)
    dry = repype_cli("store", "gc", str(root))
    assert dry.returncode == 0, dry.stderr
    assert "DRY RUN" in dry.stdout
    assert snapshot(root) == before
    done = repype_cli("store", "gc", str(root), "--yes", "--grace", "0")
    assert done.returncode == 0, done.stderr
    assert "deleted 1 value(s)" in done.stdout
    assert not blob_dir(root, refs["loose"]["digest"]).exists()
    for name in ("shared", "own_a", "own_b"):
        assert blob_dir(root, refs[name]["digest"]).exists()
    assert repype.store.open(str(root)).verify().ok


def test_cli_in_process_du_ls_and_errors(tmp_path, capsys):
    from repype.cli import console_main as main

    root = tmp_path / "store"
    build_two_tasks(root)
    for command, word in (("du", "dedup ratio"), ("ls", "2 complete")):
        assert main(["store", command, str(root)]) == 0
        out = capsys.readouterr().out
        assert "alpha" in out and "beta/sub" in out and word in out
    assert main(["store", "verify", str(tmp_path / "nowhere")]) == 1
    assert "no repype store" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()  # a read-only command creates nothing
    assert main(["store", "verify", "--repair", str(root)]) == 0
    (record_dir(root, key_of("x")) / "zarr.json").parent.mkdir(parents=True)
    (record_dir(root, key_of("x")) / "zarr.json").write_text("[")
    assert main(["store", "verify", str(root)]) == 1
    assert key_of("x") in capsys.readouterr().out
    main(["store", "verify", "--repair", str(root)])
    assert key_of("x") in capsys.readouterr().out
    assert main(["store", "verify", str(root)]) == 0


def test_cli_verify_on_s3_with_storage_options(s3_server, capsys):
    from repype.cli import console_main as main

    url = f"s3://{s3_server.new_bucket()}/store"
    store = repype.store.open(url, storage_options=s3_server.storage_options)
    ref = store.put_value(compressible(), "img")
    store.put_record(key_of("s3"), {"img": ref}, 1.0)
    options = [f"-o{name}={value}" for name, value in s3_server.storage_options.items()]
    assert main(["store", "verify", url, *options]) == 0
    assert "checked 1 value(s), 1 record(s)" in capsys.readouterr().out
    store.backend.delete(f"blobs/{ref['digest'][:2]}/{ref['digest']}/c/0")
    assert main(["store", "verify", url, *options]) == 1
    assert key_of("s3") in capsys.readouterr().out
    with pytest.raises(IntegrityError, match=ref["digest"]):
        repype.store.open(url, storage_options=s3_server.storage_options).get_value(ref, context=CONTEXT)
