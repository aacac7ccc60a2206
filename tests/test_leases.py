"""Writer leases protect running writers from a concurrent gc, whatever its grace period."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from tasktree import PIPELINE

import repype.store
from repype.store import layout, leases, maintenance, manifests
from repype.task import Task

TESTS = pathlib.Path(__file__).parent


def unreferenced_value(store: repype.store.Store) -> str:
    ref = store.put_value(np.arange(1000.0), "x")
    store.put_record("ab" * 20, {"x": ref}, 0.1)
    return ref["digest"]


def test_gc_spares_what_a_running_writer_wrote_whatever_the_grace(tmp_path):
    writer = repype.store.open(str(tmp_path / "store"))
    collector = repype.store.open(str(tmp_path / "store"))
    with writer.writing():
        digest = unreferenced_value(writer)
        report = collector.gc(grace=0, dry_run=False)
        assert report.running_writers == 1 and report.blobs == [] and report.records == []
        assert "running writer(s)" in report.format()
        assert writer.get_value(writer.get_record("ab" * 20).outputs["x"]).shape == (1000,)
    assert leases.read_leases(writer.backend) == []  # released when the block ends
    report = collector.gc(grace=0, dry_run=False)
    assert report.running_writers == 0 and report.blobs == [digest] and report.records == ["ab" * 20]


def test_a_lease_is_renewed_and_an_expired_one_protects_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(leases, "HEARTBEAT", 0.05)
    store = repype.store.open(str(tmp_path / "store"))
    with store.writing():
        (first,) = leases.read_leases(store.backend)
        time.sleep(0.5)
        (renewed,) = leases.read_leases(store.backend)
        assert renewed.id == first.id and renewed.started == first.started and renewed.renewed > first.renewed
    # a writer that died long ago: its lease was never renewed
    dead = manifests.Lease("dead", started=0.0, renewed=1.0, host="elsewhere", pid=1)
    store.backend.set(layout.metadata_key(layout.lease_path("dead")), manifests.lease_document(dead))
    digest = unreferenced_value(store)
    dry = store.gc(grace=0, dry_run=True)
    assert dry.running_writers == 0 and dry.expired_leases == ["dead"] and digest in dry.blobs
    store.gc(grace=0, dry_run=False)
    assert leases.read_leases(store.backend) == []


def test_nested_and_overlapping_writing_blocks_hold_one_lease(tmp_path):
    store = repype.store.open(str(tmp_path / "store"))
    with store.writing():
        with store.writing():
            assert len(leases.read_leases(store.backend)) == 1
        assert len(leases.read_leases(store.backend)) == 1  # still held by the outer block
    assert leases.read_leases(store.backend) == []


def test_a_task_run_holds_a_lease_until_it_is_committed(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    seen = []
    original = repype.store.Store.put_manifest

    def observe(self, name, manifest):
        seen.append(len(leases.read_leases(self.backend)))
        return original(self, name, manifest)

    monkeypatch.setattr(repype.store.Store, "put_manifest", observe)
    task = Task(tmp_path, {"runnable": True, "pipeline": PIPELINE, "input_ids": [1]})
    task.run(task.create_config())
    assert seen == [1]
    assert leases.read_leases(task.open_store().backend) == []


def test_gc_spares_a_temporary_file_being_renamed_whatever_the_grace(tmp_path):
    # creating a store writes its sections' groups outside any lease: a concurrent gc must not delete
    # the temporary file that a writer is about to rename
    store = repype.store.open(str(tmp_path / "store"))
    partial = tmp_path / "store" / "refs" / "zarr.0123456789abcdef0123456789abcdef.partial"
    partial.write_bytes(b"{}")
    assert store.gc(grace=0, dry_run=False).partials == [] and partial.exists()
    old = time.time() - maintenance.PARTIAL_GRACE - 10
    os.utime(partial, (old, old))
    assert store.gc(grace=0, dry_run=False).partials == ["refs/" + partial.name] and not partial.exists()


@pytest.mark.slow
def test_gc_with_no_grace_in_a_loop_during_a_run_breaks_nothing(tmp_path):
    root = tmp_path / "tree"
    spec = {"runnable": False, "pipeline": PIPELINE, "input_ids": [1, 2, 3], "config": {"load": {"size": 2000}}}
    root.mkdir()
    (root / "task.yml").write_text(yaml.safe_dump(spec))
    names = [f"t{index}" for index in range(6)]
    for index, name in enumerate(names):
        (root / name).mkdir()
        config = {"scale": {"factor": index + 2}}
        (root / name / "task.yml").write_text(yaml.safe_dump({"runnable": True, "config": config}))
    run = subprocess.Popen(
        [sys.executable, "-m", "repype", str(root), "--run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "REPYPE_CLI_INTERMEDIATE": "0", "PYTHONPATH": str(TESTS)},
    )
    collections = 0
    while run.poll() is None:
        if (root / ".repype").exists():
            repype.store.open(str(root / ".repype")).gc(grace=0, dry_run=False)
            collections += 1
    output = run.communicate()[0]
    assert run.returncode == 0, output
    assert collections > 3
    store = repype.store.open(str(root / ".repype"), mode="r")
    assert sorted(store.tasks()) == names
    for name in names:
        store.task(name).load()  # every value of every completed task is there and intact
    assert store.verify().ok
