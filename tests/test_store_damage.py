"""Damaged records, refs and manifests, and stores of unknown formats: named, treated as missing, repaired by a run."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import warnings

import pytest
from catalogue import as_pattern, catalogue
from taskstages import read_counts
from tasktree import PIPELINE, reused_stages, write_tree

import repype.runner
import repype.store
from repype.batch import RunContext
from repype.store import IntegrityError, IntegrityWarning, StoreFormatError, layout, maintenance

DATA = pathlib.Path(__file__).resolve().parent / "data"
GARBAGE = b'{"zarr_format": 3, "node_type": "gro'
NOT_A_REF = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode()


def tree(tmp_path: pathlib.Path) -> dict:
    """A root task and a child that changes the threshold, sharing the store `<root>/.repype`."""
    return write_tree(
        tmp_path / "tree",
        {
            "": {"runnable": True, "pipeline": PIPELINE, "input_ids": [1, 2], "config": {"load": {"size": 8}}},
            "child": {"config": {"threshold": {"threshold": 0.1}}},
        },
    )


def run(task, **kwargs):
    return task.run(task.create_config(), **kwargs)


@pytest.fixture
def fresh_process(monkeypatch):
    """Forget the stores this process opened, as a new process would."""
    monkeypatch.setattr(repype.runner, "_OPEN_STORES", {})


def store_of(tasks: dict) -> repype.store.Store:
    return repype.store.open(tasks[""].store_url)


def node_file(tasks: dict, path: str) -> pathlib.Path:
    return pathlib.Path(tasks[""].store_url) / layout.metadata_key(path)


def record_of_stage(store: repype.store.Store, stage: str, task: str | None = None) -> str:
    """A record of `stage` (one that `task` reached, when given)."""
    inventory = maintenance.take_inventory(store.backend)
    reached = inventory.manifests[store.ref_target(task)].records if task is not None else inventory.records
    return sorted(key for key, record in inventory.records.items() if record.stage == stage and key in reached)[0]


def listing(*roots: pathlib.Path) -> dict[str, tuple[int, int]]:
    """Every file below `roots` with its size and modification time."""
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime_ns)
        for root in roots
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def repype_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "repype", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "REPYPE_CLI_INTERMEDIATE": "0"},
    )


# --- damaged stage records ---------------------------------------------------------------------------


@pytest.mark.parametrize("through", ["task", "run-context"])
def test_a_damaged_record_is_reported_once_recomputed_and_replaced(tmp_path, counts, fresh_process, through):
    tasks = tree(tmp_path)
    run(tasks[""])
    key = record_of_stage(store_of(tasks), "threshold")
    node_file(tasks, layout.record_path(key)).write_bytes(GARBAGE)
    before = read_counts(counts)
    repype.runner._OPEN_STORES.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = run(tasks[""]) if through == "task" else RunContext(tasks[""]).run()
    damage = [w for w in caught if issubclass(w.category, IntegrityWarning)]
    assert len(damage) == 1 and key in str(damage[0].message) and "damaged" in str(damage[0].message)
    assert read_counts(counts) - before == {"threshold": 1}  # the one input's stage ran again, nothing else
    assert set(data) == {1, 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert repype.store.open(tasks[""].store_url, mode="r").get_record(key) is not None  # replaced
    assert store_of(tasks).verify().ok


def test_a_damaged_record_does_not_abort_a_command_line_run(tmp_path, counts):
    tasks = tree(tmp_path)
    assert repype_cli(str(tasks[""].path), "--run").returncode == 0
    key = record_of_stage(store_of(tasks), "threshold", task="child")
    node_file(tasks, layout.record_path(key)).write_bytes(GARBAGE)
    (tasks["child"].path / ".sha.json").unlink()  # the child runs again, reusing the root's records
    before = read_counts(counts)
    completed = repype_cli(str(tasks[""].path), "--run")
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    assert completed.stderr.count(key) == 1, completed.stderr  # reported once (by the run, not the plan)
    assert read_counts(counts)["threshold"] - before["threshold"] == 1
    assert store_of(tasks).verify().ok


def test_a_plan_does_not_mark_a_damaged_record_as_reported(tmp_path, fresh_process):
    tasks = tree(tmp_path)
    run(tasks[""])
    key = record_of_stage(store_of(tasks), "load")
    node_file(tasks, layout.record_path(key)).write_bytes(GARBAGE)
    repype.runner._OPEN_STORES.clear()
    task = tasks[""]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = reused_stages(task, task.create_pipeline(), task.create_config())
        assert sorted(len(stages) for stages in plan.values()) == [0, 4]
        assert not [w for w in caught if issubclass(w.category, IntegrityWarning)]
        run(task)
    assert [key in str(w.message) for w in caught if issubclass(w.category, IntegrityWarning)] == [True]


# --- damaged refs and manifests ------------------------------------------------------------------------


def assert_listed_as_damaged(store: repype.store.Store, name: str, what: str) -> None:
    for report in (store.ls(), store.du()):
        assert not report.ok
        assert name in report.damaged and what in report.damaged[name]
        assert f"damaged task {name}:" in report.format() and "DAMAGED" in report.format()
        assert name not in [task.name for task in report.tasks]


def assert_run_recommits(tasks: dict, name: str = "child") -> None:
    task = tasks[name]
    assert task.is_pending(task.create_pipeline(), task.create_config()) == "incomplete"
    run(task)
    store = repype.store.open(task.store_url, mode="r")
    assert store.tasks() == [".", "child"]
    assert set(store.task("child").load()) == {1, 2}
    assert store.ls().ok and store.verify().ok
    assert task.is_pending(task.create_pipeline(), task.create_config()) == ""


@pytest.mark.parametrize("content", [GARBAGE, NOT_A_REF], ids=["invalid-json", "no-ref-document"])
def test_a_damaged_ref_is_named_listed_and_recommitted(tmp_path, fresh_process, content):
    tasks = tree(tmp_path)
    run(tasks[""])
    run(tasks["child"])
    node_file(tasks, layout.ref_path("child")).write_bytes(content)
    store = repype.store.open(tasks[""].store_url, mode="r")
    with pytest.raises(IntegrityError, match="ref refs/child is damaged"):
        store.tasks()
    with pytest.raises(IntegrityError, match="ref refs/child is damaged"):
        store.task("child")
    assert store.task(".").input_ids == [1, 2]
    assert_listed_as_damaged(store, "child", "refs/child")
    completed = repype_cli("store", "ls", tasks[""].store_url)
    assert completed.returncode == 1 and re.search(r"^child\s+damaged\s.*refs/child", completed.stdout, re.M)
    completed = repype_cli("store", "du", tasks[""].store_url)
    assert completed.returncode == 1 and "damaged task child: ref refs/child" in completed.stdout
    assert_run_recommits(tasks)


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_a_damaged_or_missing_manifest_is_named_listed_and_recommitted(tmp_path, fresh_process, damage):
    tasks = tree(tmp_path)
    run(tasks[""])
    run(tasks["child"])
    store = repype.store.open(tasks[""].store_url, mode="r")
    digest = store.ref_target("child")
    if damage == "garbage":
        node_file(tasks, layout.manifest_path(digest)).write_bytes(GARBAGE)
    else:
        shutil.rmtree(node_file(tasks, layout.manifest_path(digest)).parent)
    store.forget_cache()
    assert store.tasks() == [".", "child"]
    with pytest.raises(IntegrityError, match=f"manifest {digest}"):
        store.task("child")
    assert_listed_as_damaged(store, "child", digest)
    assert repype_cli("store", "ls", tasks[""].store_url).returncode == 1
    assert_run_recommits(tasks)


def test_a_damaged_shard_is_named_when_read_and_repaired_through_verify(tmp_path, fresh_process):
    tasks = tree(tmp_path)
    run(tasks[""])
    run(tasks["child"])
    store = repype.store.open(tasks[""].store_url, mode="r")
    digest = store.ref_target("child")
    shard = node_file(tasks, layout.shard_path(digest, 0))
    shard.write_bytes(shard.read_bytes()[:-20])
    view = store.task("child")  # the header is intact
    with pytest.raises(IntegrityError, match=f"manifest {digest}, shard 0 is damaged"):
        view.field(1, "summary")
    assert_listed_as_damaged(store, "child", "shard 0")
    report = store.verify()
    assert not report.ok and digest in report.broken_manifests and "child" in report.broken_refs
    assert repype.store.open(tasks[""].store_url).verify(repair=True).repaired
    assert_run_recommits(tasks)


# --- manifests are rewritten only when they change ----------------------------------------------------


def test_an_unchanged_manifest_and_its_ref_are_not_rewritten(tmp_path, fresh_process):
    tasks = tree(tmp_path)
    task = tasks[""]
    run(task)
    store_root = pathlib.Path(task.store_url)
    before = listing(store_root / "manifests", store_root / "refs")
    created = repype.store.open(task.store_url, mode="r").task(".").created
    repype.runner._OPEN_STORES.clear()
    run(task)
    assert listing(store_root / "manifests", store_root / "refs") == before
    assert repype.store.open(task.store_url, mode="r").task(".").created == created
    (task.path / "task.yml").write_text((task.path / "task.yml").read_text().replace("size: 8", "size: 9"))
    changed = write_tree(tmp_path / "tree", {"": {**task.spec, "config": {"load": {"size": 9}}}})[""]
    run(changed)
    store = repype.store.open(task.store_url, mode="r")
    assert store.ref_target(".") not in {path.split("/")[-3] for path in before if "/manifests/" in path}


# --- store formats ----------------------------------------------------------------------------------------


def set_root(store_path: pathlib.Path, **repype_attributes) -> None:
    document = json.loads((store_path / "zarr.json").read_bytes())
    document["attributes"]["repype"] = repype_attributes
    (store_path / "zarr.json").write_text(json.dumps(document))


def test_a_store_of_a_newer_format_refuses_writes_and_reads(tmp_path, fresh_process):
    tasks = tree(tmp_path)
    run(tasks[""])
    store_path = pathlib.Path(tasks[""].store_url)
    set_root(store_path, format=99)
    before = listing(store_path, tasks[""].path)
    for mode, verb in (("a", "refusing to write"), ("r", "cannot read")):
        with pytest.raises(StoreFormatError) as error:
            repype.store.open(store_path, mode=mode)
        message = str(error.value)
        assert "format 99" in message and f"format {layout.FORMAT_VERSION}" in message
        assert verb in message and "upgrade repype" in message and str(store_path) in message
    repype.runner._OPEN_STORES.clear()
    with pytest.raises(StoreFormatError, match="format 99"):
        run(tasks["child"])
    assert listing(store_path, tasks[""].path) == before


def test_a_newer_store_that_says_older_readers_may_read_it_opens_read_only(tmp_path):
    tasks = tree(tmp_path)
    run(tasks[""])
    store_path = pathlib.Path(tasks[""].store_url)
    set_root(store_path, format=99, min_reader_format=layout.FORMAT_VERSION)
    assert repype.store.open(store_path, mode="r").tasks() == ["."]
    with pytest.raises(StoreFormatError, match="refusing to write"):
        repype.store.open(store_path, mode="a")


@pytest.mark.parametrize("root", [{"format": "two"}, {}], ids=["not-an-int", "no-format"])
def test_a_root_without_a_valid_format_is_refused(tmp_path, root):
    store_path = tmp_path / "store"
    repype.store.open(store_path)
    set_root(store_path, **root)
    with pytest.raises(repype.store.StoreError, match="no valid repype format"):
        repype.store.open(store_path, mode="r")


def test_a_format1_store_is_upgraded_when_a_manifest_of_the_new_format_is_written(tmp_path):
    shutil.copytree(DATA / "format1", tmp_path / "format1")
    store_path = tmp_path / "format1" / "store"
    store = repype.store.open(store_path)  # opening for writing changes nothing yet
    assert json.loads((store_path / "zarr.json").read_bytes())["attributes"]["repype"]["format"] == 1
    view = store.task("child")
    entries = list(store.manifest_inputs(view.manifest).values())
    store.put_manifest("copy", repype.store.Manifest(view.spec, view.config, view.stages, entries))
    assert json.loads((store_path / "zarr.json").read_bytes())["attributes"]["repype"]["format"] == 2
    fresh = repype.store.open(store_path, mode="r")
    assert fresh.tasks() == [".", "child", "copy"]
    assert fresh.task("copy").manifest.format == 2 and fresh.task("child").manifest.format == 1
    assert fresh.task("copy").field("c", "summary") == fresh.task("child").field("c", "summary")
    assert fresh.task("copy").times == fresh.task("child").times
    assert fresh.verify().ok


# --- refusing pickles when loading through a task -----------------------------------------------------


def test_task_load_can_refuse_pickles(tmp_path):
    from repype.batch import Batch

    shutil.copytree(DATA / "format1", tmp_path / "format1")
    task = Batch().task(tmp_path / "format1")
    with pytest.raises(repype.store.PickleRefusedError, match=r"'ratio'.*refuses"):
        task.load(allow_pickle=False)
    safe = task.load(fields=["raw", "summary"], allow_pickle=False)
    assert set(safe[1]) == {"raw", "summary"}
    assert type(task.load(input_ids=[1], fields=["ratio"])[1]["ratio"]).__name__ == "Fraction"
    view = repype.store.open(tmp_path / "format1" / "store", mode="r").task(".")
    with pytest.raises(repype.store.PickleRefusedError, match="ratio"):
        view.field(1, "ratio", allow_pickle=False)
    with pytest.raises(repype.store.PickleRefusedError):
        view.load(allow_pickle=False)


# --- the catalogue in docs/reliability.md -------------------------------------------------------------

STORE_FAULTS = "Damaged or unknown stores"


def committed_tree(tmp_path: pathlib.Path) -> dict:
    tasks = tree(tmp_path)
    run(tasks[""])
    run(tasks["child"])
    repype.runner._OPEN_STORES.clear()
    return tasks


def raised(error_type, action) -> str:
    with pytest.raises(error_type) as error:
        action()
    return f"{type(error.value).__name__}: {error.value}"


def damaged_record(tmp_path):
    tasks = committed_tree(tmp_path)
    key = record_of_stage(store_of(tasks), "load")
    node_file(tasks, layout.record_path(key)).write_bytes(GARBAGE)
    repype.runner._OPEN_STORES.clear()
    with pytest.warns(IntegrityWarning) as caught:
        run(tasks[""])
    return "\n".join(f"{w.category.__name__}: {w.message}" for w in caught)


def damaged_ref(tmp_path):
    tasks = committed_tree(tmp_path)
    node_file(tasks, layout.ref_path("child")).write_bytes(GARBAGE)
    return raised(IntegrityError, repype.store.open(tasks[""].store_url, mode="r").tasks)


def damaged_manifest(tmp_path, remove=False):
    tasks = committed_tree(tmp_path)
    store = repype.store.open(tasks[""].store_url, mode="r")
    header = node_file(tasks, layout.manifest_path(store.ref_target("child")))
    shutil.rmtree(header.parent) if remove else header.write_bytes(header.read_bytes().replace(b"0.1", b"0.2"))
    return raised(IntegrityError, lambda: store.task("child"))


def damaged_shard(tmp_path):
    tasks = committed_tree(tmp_path)
    store = repype.store.open(tasks[""].store_url, mode="r")
    node_file(tasks, layout.shard_path(store.ref_target("child"), 0)).write_bytes(GARBAGE)
    return raised(IntegrityError, lambda: store.task("child").field(1, "summary"))


def newer_format(tmp_path, mode):
    store_path = tmp_path / "store"
    repype.store.open(store_path)
    set_root(store_path, format=99)
    return raised(StoreFormatError, lambda: repype.store.open(store_path, mode=mode))


def pickle_refused(tmp_path):
    from repype.batch import Batch

    shutil.copytree(DATA / "format1", tmp_path / "format1")
    task = Batch().task(tmp_path / "format1")
    return raised(repype.store.PickleRefusedError, lambda: task.load(allow_pickle=False))


SCENARIOS = {
    "damaged-record": damaged_record,
    "damaged-ref": damaged_ref,
    "damaged-manifest": damaged_manifest,
    "missing-manifest": lambda tmp_path: damaged_manifest(tmp_path, remove=True),
    "damaged-shard": damaged_shard,
    "newer-format-write": lambda tmp_path: newer_format(tmp_path, "a"),
    "newer-format-read": lambda tmp_path: newer_format(tmp_path, "r"),
    "pickle-refused": pickle_refused,
}


def test_the_catalogue_lists_every_scenario():
    assert set(catalogue(STORE_FAULTS)) == set(SCENARIOS)


@pytest.mark.parametrize("fault", sorted(SCENARIOS))
def test_the_catalogue_matches_what_users_see(tmp_path, fresh_process, fault):
    seen = SCENARIOS[fault](tmp_path)
    assert re.search(as_pattern(catalogue(STORE_FAULTS)[fault]), seen), (catalogue(STORE_FAULTS)[fault], seen)
