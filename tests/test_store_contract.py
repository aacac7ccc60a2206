"""The contract of `repype.store.Store`, checked once per backend: a local directory, `memory://` and S3 on moto.

`StoreContract` holds the tests; each `Test*` subclass gives it a `location`: how to open the
store under test, and a view of the same bytes that bypasses repype entirely (:mod:`rawstore`),
which the tests use to damage the store and to see what is really stored. Requests are counted
with :mod:`countingstore`.
"""

from __future__ import annotations

import fractions
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pytest
import zarr
from countingstore import counting
from rawstore import LocalRaw, MemoryRaw, Raw, S3Raw
from taskstages import Load, Scale, read_counts
from tasktree import PIPELINE, write_tree

import repype.runner
import repype.store as rs
from repype.config import Config
from repype.pipeline import create_pipeline
from repype.store import codecs, layout, manifests
from repype.store.backend import Backend
from repype.task import Task

GARBAGE = b'{"zarr_format": 3, "node_type": "gro'


@dataclass
class Location:
    """Where the store under test lives: how to open it, and its bytes seen directly."""

    url: str
    storage_options: dict | None
    raw: Raw

    def open(self, mode: str = "a", **kwargs: Any) -> rs.Store:
        """A new store object on the location (nothing remembered from other objects)."""
        return rs.open(self.url, storage_options=self.storage_options, mode=mode, **kwargs)

    @property
    def spec(self) -> dict[str, Any]:
        """The task spec keys that put a task's results here."""
        return {"store": self.url, **({"storage_options": self.storage_options} if self.storage_options else {})}


# --- what the tests store -------------------------------------------------------------------------------


class FractionCodec(rs.FieldCodec):
    """A registered codec: fractions as their text."""

    name = "contract-fraction"
    types = (fractions.Fraction,)

    def encode(self, value: fractions.Fraction) -> bytes:
        return str(value).encode()

    def decode(self, data: bytes) -> fractions.Fraction:
        return fractions.Fraction(data.decode())


@dataclass(frozen=True)
class Opaque:
    """A value only a pickle represents."""

    payload: tuple


def ramp(n: int, offset: int = 0) -> np.ndarray:
    """Compressible, so that its chunk is a real zstd frame that damage breaks."""
    return np.arange(offset, offset + n, dtype=np.int64)


CODEC_VALUES: dict[str, tuple[str, Any]] = {
    "inline json": ("json", {"a": [1, 2.5, None], "b": "ünï"}),
    "json blob": ("json", [{"name": f"item-{i}", "value": i * 0.5} for i in range(300)]),
    "inline tagged": ("tagged", (1, frozenset({"x"}), {2: b"\x00\xff"})),
    "tagged blob": ("tagged", tuple(range(2000))),
    "native array": ("ndarray", np.linspace(0, 1, 3 * 200).reshape(3, 200)),
    "packed array": ("ndarray", np.linspace(0, 1, 3 * 50).reshape(3, 50)),
    "raw array": ("ndarray", np.array(["héllo", "x"] * 300, dtype="U5")),
    "packed raw array": ("ndarray", np.array(["héllo", "x"], dtype="U5")),
    "big-endian array": ("ndarray", np.arange(6, dtype=">i4").reshape(2, 3)),
    "empty array": ("ndarray", np.zeros((0, 4), dtype=np.float32)),
    "pickle": ("pickle", Opaque(tuple(range(3000)))),
    "packed pickle": ("pickle", Opaque((1, "two"))),
    "custom codec": ("contract-fraction", fractions.Fraction(-7, 3)),
}
"""A value of every codec and layout; those named packed or inline, and the tiny ones, live in their reference."""


def assert_same(actual: Any, expected: Any) -> None:
    """Same type and value; arrays also the same dtype, shape and bytes."""
    assert type(actual) is type(expected), (type(actual), type(expected))
    if isinstance(expected, np.ndarray):
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape)
        assert actual.tobytes() == expected.tobytes()
    else:
        assert actual == expected


def key_of(name: str) -> str:
    """A stage-execution key (any 40 hex digits do for the store)."""
    return rs.stage_key("0" * 40, {"name": name}, {})


def manifest(inputs: dict, records: list[str] = (), config: dict | None = None) -> rs.Manifest:
    """A manifest of `inputs` (input id → field references); the first input lists `records`."""
    entries = [
        rs.InputEntry(input_id, refs, {"s": 0.5}, list(records) if index == 0 else [])
        for index, (input_id, refs) in enumerate(inputs.items())
    ]
    return rs.Manifest({"runnable": True}, config or {}, {"s": "a" * 40}, entries)


IMAGE = np.arange(2 * 30 * 40, dtype=np.float32).reshape(2, 30, 40)
LABEL = Opaque(tuple(f"cell-{index}" for index in range(1000)))  # a pickle too large to be packed


@dataclass
class Built:
    """A store holding a live task, what it reaches, and what nothing reaches (see :func:`build`)."""

    values: dict[str, dict]
    keys: dict[str, str]
    live: str
    dropped: str
    manifest: rs.Manifest


def build(store: rs.Store) -> Built:
    """Task `sweep/a` (inputs 1 and 'b') reaching records `live` and values image, shared, label;
    a dropped task whose manifest alone reaches `dropped`; record `orphan` reaching `orphan`; a loose value."""
    values = {
        "image": store.put_value(IMAGE, "image"),
        "shared": store.put_value(ramp(6000), "shared"),
        "label": store.put_value(LABEL, "label"),
        "count": store.put_value(7, "count"),
        "dropped": store.put_value(ramp(3000, 10_000), "x"),
        "orphan": store.put_value(ramp(2000, 20_000), "x"),
        "loose": store.put_value(ramp(1000, 30_000), "x"),
    }
    keys = {"live": key_of("live"), "orphan": key_of("orphan")}
    store.put_record(keys["live"], {"image": values["image"], "shared": values["shared"]}, 1.5, stage="s")
    store.put_record(keys["orphan"], {"x": values["orphan"], "shared": values["shared"]}, 0.5, stage="s")
    inputs = {
        1: {"image": values["image"], "shared": values["shared"], "label": values["label"], "count": values["count"]},
        "b": {"image": values["image"], "count": values["count"]},
    }
    live_manifest = manifest(inputs, [keys["live"]], {"s": {"sigma": 1.5}})
    live = store.put_manifest("sweep/a", live_manifest)
    dropped = store.put_manifest("dropped", manifest({0: {"x": values["dropped"], "shared": values["shared"]}}))
    store.delete_ref("dropped")
    return Built(values, keys, live, dropped, live_manifest)


# --- the contract ----------------------------------------------------------------------------------------


class StoreContract:
    """Tests of the Store contract; a subclass provides the `location` fixture of one backend."""

    @pytest.fixture
    def location(self) -> Location:
        raise NotImplementedError

    @pytest.fixture
    def raw(self, location: Location) -> Raw:
        return location.raw

    @pytest.fixture
    def fraction_codec(self):
        rs.register_codec(FractionCodec())
        yield
        rs.unregister_codec(FractionCodec.name)

    # --- values -----------------------------------------------------------------------------------------

    def test_every_codec_round_trips_through_a_fresh_store_object(self, location, raw, fraction_codec):
        store = location.open()
        refs = {name: store.put_value(value, field=name) for name, (_, value) in CODEC_VALUES.items()}
        fresh = location.open(mode="r", allow_pickle=True)
        for name, (codec, value) in CODEC_VALUES.items():
            assert refs[name]["codec"] == codec, name
            assert refs[name]["stored"] is True
            assert_same(fresh.get_value(refs[name]), value)
            assert_same(store.get_value(refs[name]), value)
            blob = layout.metadata_key(layout.blob_path(refs[name]["digest"]))
            assert (raw.get(blob) is None) == codecs.is_inline(refs[name]), name  # inline values write nothing
        assert store.describe(CODEC_VALUES["native array"][1]) == refs["native array"] | {"stored": False}

    def test_packed_arrays_live_in_their_reference(self, location, raw):
        store = location.open()  # packing is on by default
        small, big = np.arange(10, dtype=np.uint8), np.arange(codecs.PACK_LIMIT, dtype=np.float64)
        packed, stored = store.put_value(small), store.put_value(big)
        assert packed["layout"] == "packed" and stored["layout"] == "native"
        assert packed["digest"] == location.open(pack_limit=None).describe(small)["digest"]  # packing changes no digest
        assert raw.node_keys(layout.blob_path(packed["digest"])) == set()  # no object of its own
        assert raw.node_keys(layout.blob_path(stored["digest"])) != set()
        assert_same(location.open(mode="r").get_value(packed), small)
        assert_same(location.open(mode="r").get_value(stored), big)

    # --- records, manifests, refs ----------------------------------------------------------------------

    def test_records_round_trip_and_are_replaced_and_deleted(self, location, raw):
        store = location.open()
        value = store.put_value(ramp(100), "v")
        written = {name: store.put_record(key_of(name), {"v": value}, 1.25, stage=name) for name in ("a", "b")}
        assert raw.get(layout.metadata_key(layout.record_path(key_of("a")))) is not None
        fresh = location.open(mode="r")
        found = fresh.get_records([key_of("a"), key_of("missing"), key_of("b"), key_of("a")])
        assert found == {key_of(name): written[name] for name in ("a", "b")}
        assert fresh.get_record(key_of("missing")) is None
        store.put_record(key_of("a"), {"v": value}, 2.0, stage="a")
        assert location.open().get_record(key_of("a")).run_time == 2.0
        store.delete_record(key_of("a"))
        assert location.open().get_record(key_of("a")) is None
        assert raw.node_keys(layout.record_path(key_of("a"))) == set()

    def test_manifests_and_refs(self, location, raw):
        store = location.open()
        value = store.put_value(ramp(100), "v")
        names = [".", "sweep/lr-0.1", "ünï cöde", "a"]
        digests = {name: store.put_manifest(name, manifest({0: {"v": value}}, config={"n": name})) for name in names}
        fresh = location.open(mode="r")
        assert fresh.list_refs() == fresh.tasks() == sorted(names)
        for name in names:
            ref = fresh.get_ref(name)
            assert (ref.name, ref.manifest) == (name, digests[name])
            header = fresh.get_manifest(name)
            assert (header.digest, header.config) == (digests[name], {"n": name})
            assert fresh.manifest_inputs(header)[0].refs == {"v": value}
            assert raw.get(layout.metadata_key(layout.ref_path(name))) is not None
        assert fresh.get_ref("none") is None and fresh.get_manifest("none") is None
        moved = store.put_manifest("a", manifest({0: {"v": value}}, config={"n": "."}))
        assert moved == digests["."] and location.open().ref_target("a") == digests["."]
        store.delete_ref("a")
        assert location.open().tasks() == sorted(set(names) - {"a"})
        assert location.open().manifest(digests["a"]) is not None  # until gc

    def test_task_view_eager_and_lazy(self, location):
        built = build(location.open())
        store = location.open(mode="r")
        assert store.tasks() == ["sweep/a"]
        task = store.task("sweep/a")
        assert (task.input_ids, task.fields) == ([1, "b"], ["count", "image", "label", "shared"])
        assert task.config == {"s": {"sigma": 1.5}} and task.times == {"s": {1: 0.5, "b": 0.5}}
        assert task.refs(1)["image"] == built.values["image"]
        assert_same(task.field(1, "image"), IMAGE)
        assert task.field(1, "label") == LABEL
        lazy = task.field("b", "image", lazy=True)
        assert isinstance(lazy, zarr.Array)
        np.testing.assert_array_equal(lazy[0, :3, -2:], IMAGE[0, :3, -2:])
        everything = task.load()
        assert list(everything) == [1, "b"] and set(everything[1]) == {"count", "image", "label", "shared"}
        assert_same(everything[1]["shared"], ramp(6000))
        some = task.load(input_ids=["b"], fields=["image", "count"], lazy=True)
        assert isinstance(some["b"]["image"], zarr.Array) and some["b"]["count"] == 7
        with pytest.raises(KeyError, match="nosuch"):
            task.field(1, "nosuch")
        with pytest.raises(rs.StoreError, match="sweep/a"):
            store.task("no/such/task")

    # --- damage, found by verify -----------------------------------------------------------------------

    DAMAGE = ["chunk bytes", "missing chunk", "value metadata", "record", "manifest header", "shard", "ref"]
    LEFT_AFTER_REPAIR = {  # values, records, manifests of `build` (6, 2, 2) that verify --repair leaves
        "chunk bytes": (5, 1, 1),
        "missing chunk": (5, 1, 1),
        "value metadata": (5, 1, 1),
        "record": (6, 1, 2),
        "manifest header": (6, 2, 1),
        "shard": (6, 2, 1),
        "ref": (6, 2, 2),
    }

    @pytest.mark.parametrize("damage", DAMAGE)
    def test_verify_finds_damage_written_under_the_store_and_repair_removes_it(self, location, raw, damage):
        built = build(location.open())
        assert location.open().verify().ok
        name = "sweep/a"
        node = self.damage(raw, damage, built)
        report = location.open(mode="r").verify()
        assert not report.ok, damage
        broken = {
            "chunk bytes": report.damaged_blobs,
            "missing chunk": report.damaged_blobs,
            "value metadata": report.damaged_blobs,
            "record": report.broken_records,
            "manifest header": report.broken_manifests,
            "shard": report.broken_manifests,
            "ref": report.broken_refs,
        }[damage]
        assert set(broken) == {node.rsplit("/", 1)[-1] if damage != "ref" else name}
        if damage in ("chunk bytes", "missing chunk", "value metadata"):
            assert set(report.broken_records) == {built.keys["live"]}  # what reaches it is broken too
            assert built.values["image"]["digest"] in report.broken_records[built.keys["live"]]
            assert (set(report.broken_manifests), set(report.broken_refs)) == ({built.live}, {name})
        assert "DAMAGED" in report.format() and node.rsplit("/", 1)[-1] in report.format()
        self.assert_read_fails(location, damage, built)
        repaired = location.open().verify(repair=True)
        assert repaired.repaired
        assert raw.node_keys(node) == set()
        fresh = location.open()
        after = fresh.verify()
        assert after.ok, after.format()
        checked = (after.checked_blobs, after.checked_records, after.checked_manifests)
        assert checked == self.LEFT_AFTER_REPAIR[damage]
        assert fresh.tasks() == (["sweep/a"] if damage == "record" else [])  # a ref reaching damage is deleted
        orphan = fresh.get_record(built.keys["orphan"])  # undamaged things stay
        assert_same(fresh.get_value(orphan.outputs["x"]), ramp(2000, 20_000))
        if damage in ("chunk bytes", "missing chunk", "value metadata"):
            assert fresh.put_value(IMAGE, "image") == built.values["image"]  # the next writer stores it again
            assert_same(location.open(mode="r").get_value(built.values["image"]), IMAGE)
            assert location.open().verify().ok

    @staticmethod
    def damage(raw: Raw, damage: str, built: Built) -> str:
        """Damages the store through `raw`; returns the node path it damaged."""
        image = layout.blob_path(built.values["image"]["digest"])
        nodes = {
            "chunk bytes": image,
            "missing chunk": image,
            "value metadata": image,
            "record": layout.record_path(built.keys["live"]),
            "manifest header": layout.manifest_path(built.live),
            "shard": layout.manifest_path(built.live),
            "ref": layout.ref_path("sweep/a"),
        }
        chunk = sorted(raw.keys(image + "/c/"))[0]
        if damage == "chunk bytes":
            data = bytearray(raw.get(chunk))
            data[len(data) // 2 : len(data) // 2 + 16] = bytes(b ^ 0xFF for b in data[len(data) // 2 :][:16])
            raw.put(chunk, bytes(data))
        elif damage == "missing chunk":
            raw.delete(chunk)
        else:
            target = layout.shard_path(built.live, 0) if damage == "shard" else nodes[damage]
            raw.put(layout.metadata_key(target), GARBAGE)
        return nodes[damage]

    @staticmethod
    def assert_read_fails(location: Location, damage: str, built: Built) -> None:
        """Reading the damaged thing through a fresh store object raises IntegrityError (or, for a
        record, warns and treats it as missing)."""
        store = location.open(mode="r")
        if damage == "record":
            with pytest.warns(rs.IntegrityWarning, match=built.keys["live"]):
                assert store.get_record(built.keys["live"]) is None
            return
        with pytest.raises(rs.IntegrityError):
            if damage in ("manifest header", "ref"):
                store.task("sweep/a")
            else:
                store.task("sweep/a").load()

    @pytest.mark.parametrize("damage", ["manifest header", "shard", "ref"])
    def test_a_damaged_task_is_named_listed_and_committed_again(self, location, raw, damage):
        built = build(location.open())
        self.damage(raw, damage, built)
        store = location.open()
        if damage == "ref":
            with pytest.raises(rs.IntegrityError, match=re.escape(layout.ref_path("sweep/a"))):
                store.tasks()
        assert store.tasks(strict=False) == ["sweep/a"]
        usage = store.du()
        assert not usage.ok and set(usage.damaged) == {"sweep/a"} and "DAMAGED" in usage.format()
        if damage == "shard":
            return  # a commit checks the ref and the manifest's header, not every shard: verify does
        store.put_manifest("sweep/a", built.manifest)
        assert_same(location.open(mode="r").task("sweep/a").field(1, "image"), IMAGE)
        assert location.open().verify().ok and location.open().du().ok

    # --- gc and du ---------------------------------------------------------------------------------------

    def test_gc_dry_run_and_real_with_grace(self, location, raw):
        built = build(location.open())
        values = built.values
        before = raw.keys()

        young = location.open().gc(grace=3600, dry_run=False)
        assert (young.blobs, young.records, young.manifests) == ([], [], [])
        assert young.spared_young == 3  # the orphan record, the dropped manifest (and what they reach), the loose value
        assert raw.keys() == before

        unreachable = {values[name]["digest"] for name in ("dropped", "orphan", "loose")}
        dry = location.open().gc(grace=0)
        assert dry.dry_run and set(dry.blobs) == unreachable
        assert (dry.records, dry.manifests) == ([built.keys["orphan"]], [built.dropped])
        assert dry.freed_bytes == sum(raw.chunk_bytes(digest) for digest in unreachable)
        assert raw.keys() == before

        done = location.open().gc(grace=0, dry_run=False)
        assert (set(done.blobs), done.records, done.manifests) == (unreachable, dry.records, dry.manifests)
        removed = [layout.blob_path(digest) for digest in unreachable]
        removed += [layout.record_path(built.keys["orphan"]), layout.manifest_path(built.dropped)]
        assert raw.keys() == before - {key for path in removed for key in before if key.startswith(path + "/")}
        fresh = location.open()
        assert_same(fresh.task("sweep/a").field(1, "shared"), ramp(6000))
        assert fresh.get_record(built.keys["live"]) is not None
        report = fresh.verify()
        assert report.ok and (report.checked_blobs, report.checked_records, report.checked_manifests) == (3, 1, 1)
        assert location.open().gc(grace=0, dry_run=False).blobs == []

    def test_gc_removes_the_shards_of_a_manifest_whose_writer_stopped_before_its_header(self, location, raw):
        store = location.open()
        value = store.put_value(ramp(3000, 40_000), "x")
        digest = store.put_manifest("t", manifest({index: {"x": value} for index in range(3)}))
        path = layout.manifest_path(digest)
        for key in (layout.metadata_key(path), layout.metadata_key(layout.ref_path("t"))):
            raw.delete(key)  # as if killed after writing the shards: no header, no ref
        assert raw.node_keys(path) != set()
        assert location.open().verify().ok  # an unfinished write is no damage
        assert location.open().gc(grace=3600, dry_run=False).manifests == []  # maybe still being written
        done = location.open().gc(grace=0, dry_run=False)
        assert (done.manifests, done.blobs) == ([digest], [value["digest"]])
        assert raw.node_keys(path) == set()

    def test_du_counts_the_exact_stored_bytes(self, location, raw):
        store = location.open()
        empty = store.du()
        assert (empty.tasks, empty.total_bytes, empty.dedup_ratio) == ([], 0, 1.0)
        built = build(store)
        store.put_manifest("other", manifest({9: {"shared": built.values["shared"], "x": built.values["loose"]}}))
        size = {name: raw.chunk_bytes(ref["digest"]) for name, ref in built.values.items() if not codecs.is_inline(ref)}
        assert all(size.values())
        report = location.open(mode="r").du()
        assert report.ok
        tasks = {task.name: task for task in report.tasks}
        assert list(tasks) == ["other", "sweep/a"]
        assert (tasks["sweep/a"].inputs, tasks["sweep/a"].fields) == (2, ["count", "image", "label", "shared"])
        assert tasks["sweep/a"].bytes == size["image"] + size["shared"] + size["label"]
        assert tasks["sweep/a"].unique == size["image"] + size["label"]
        assert (tasks["other"].bytes, tasks["other"].unique) == (size["shared"] + size["loose"], size["loose"])
        assert report.logical_bytes == tasks["sweep/a"].bytes + tasks["other"].bytes
        assert report.physical_bytes == report.logical_bytes - size["shared"]
        assert report.total_bytes == sum(size.values())
        assert report.dedup_ratio == report.logical_bytes / report.physical_bytes > 1
        assert f"dedup ratio {report.dedup_ratio:.2f}" in report.format() and "sweep/a" in report.format()
        assert [task.name for task in location.open(mode="r").ls().tasks] == ["other", "sweep/a"]

    # --- concurrency ------------------------------------------------------------------------------------

    @pytest.mark.parametrize("shared", [False, True], ids=["a-store-object-each", "one-store-object"])
    def test_threads_writing_the_same_values_records_and_manifest(self, location, shared):
        values = [ramp(100), ramp(20_000, 5), Opaque(("same",)), np.full((30, 30), 3.0)]  # 2 packed, 2 blobs
        errors: list[BaseException] = []
        start = threading.Barrier(4)
        common = location.open()

        def write() -> None:
            try:
                store = common if shared else location.open()
                start.wait()
                refs = {f"f{index}": store.put_value(value, f"f{index}") for index, value in enumerate(values)}
                store.put_record(key_of("same"), refs, 1.0, stage="s")
                store.put_manifest("same", manifest({0: refs}, [key_of("same")]))
            except BaseException as error:  # reported by the assertion below
                errors.append(error)

        threads = [threading.Thread(target=write) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        store = location.open(mode="r")
        report = store.verify()
        assert report.ok and report.checked_blobs == 2, report.format()
        loaded = store.task("same").load()[0]
        for index, value in enumerate(values):
            assert_same(loaded[f"f{index}"], value)

    # --- requests -----------------------------------------------------------------------------------------

    def test_checking_the_records_of_many_inputs_is_one_batched_call(self, location):
        writer = location.open()
        recorded = [key_of(f"input-{i}") for i in range(0, 40, 2)]
        value = writer.put_value(ramp(5), "v")
        for key in recorded:
            writer.put_record(key, {"v": value}, 0.1)
        store = location.open(mode="r")
        wanted = [key_of(f"input-{i}") for i in range(40)]
        with counting() as log:
            found = store.get_records(wanted)
        assert set(found) == set(recorded)
        # One round trip whatever the number of inputs (its 40 reads are in flight at once). The goal
        # of issue 14 is one request, e.g. one listing of the records' prefixes.
        assert (log.calls(), log.requests("read")) == (1, 40), log.summary()
        with counting() as log:
            assert store.get_records(wanted) == found
        # Records are immutable, so found ones are remembered; missing ones are asked again (another
        # process may have written them since), still in one call.
        assert (log.calls(), log.requests()) == (1, len(wanted) - len(recorded)), log.summary()
        fresh = location.open(mode="r")
        with counting() as log:
            assert fresh.get_record(recorded[0]) is not None
        assert (log.calls(), log.requests()) == (1, 1), log.summary()  # checking one record is one request

    @pytest.mark.parametrize("inputs", [3, 3 * manifests.SHARD_SIZE])
    def test_opening_a_task_and_reading_one_input_costs_the_same_whatever_its_size(self, location, inputs):
        writer = location.open()
        writer.put_manifest("big", manifest({index: {"count": writer.put_value(index)} for index in range(inputs)}))
        store = location.open(mode="r")
        with counting() as log:
            task = store.task("big")
            assert task.field(inputs - 1, "count") == inputs - 1  # an inline value: no request of its own
        # the ref, the manifest's header, and the one shard that holds the input
        assert (log.calls(), log.requests()) == (3, 3), log.summary()
        with counting() as log:
            assert task.load(input_ids=[0, inputs - 1]) == {0: {"count": 0}, inputs - 1: {"count": inputs - 1}}
        assert log.requests() == (0 if inputs <= manifests.SHARD_SIZE else 1), log.summary()  # shards are kept

    # Writing a stage execution with one small value costs today, on every backend: the value's chunk,
    # its metadata and the record (3 requests; 1, the record, when small arrays are packed into it),
    # plus the document of each fan-out group this store object writes into for the first time (up to
    # 2 more). Nothing is read or asked first. The goal of issue 14 is at most 2 requests to write a
    # stage execution and 1 to check for one (met today: see the test above).
    WRITE_REQUESTS = {None: 3, codecs.PACK_LIMIT: 1}

    @pytest.mark.parametrize("pack_limit", WRITE_REQUESTS, ids=["blob", "packed"])
    def test_writing_a_small_value_and_its_record_costs_a_bounded_number_of_requests(self, location, pack_limit):
        store = location.open(pack_limit=pack_limit)
        warm_value = store.put_value(np.zeros(3))
        store.put_record(key_of("warm"), {"v": warm_value}, 0.0)
        values = [np.float32(index) for index in range(8)]  # each stored as 16 of them
        names = [f"small-{index}" for index in range(8)]
        # and one stage execution whose value and record share the fan-out groups of the first ones
        values.append(next(v for v in map(np.float32, range(99, 10_000)) if self.same_fanout(store, v, warm_value)))
        names.append(next(n for n in map(str, range(10_000)) if key_of(n)[:2] == key_of("warm")[:2]))
        for value, name in zip(values, names, strict=True):
            with counting() as log:
                ref = store.put_value(np.full(16, value), "v")
                store.put_record(key_of(name), {"v": ref}, 0.1, stage="s")
            groups = [key for key in log.keys("write") if key.count("/") == 2]  # `<section>/<xx>/zarr.json`
            assert log.requests("write") == log.requests() == self.WRITE_REQUESTS[pack_limit] + len(groups), (
                log.summary()
            )
            assert len(groups) <= (2 if pack_limit is None else 1)
        assert groups == []  # the last one wrote into known fan-out groups

    def test_a_stage_execution_writes_its_values_and_record_in_one_call_into_the_event_loop(
        self, location, counts, monkeypatch
    ):
        runner = repype.runner.InputRunner(location.open(), create_pipeline([Load(), Scale()]))
        runner.finish(runner.start(0, Config({"load": {"size": 2048}})))  # first writes: the sections listed once
        entered = []
        original = Backend.run
        monkeypatch.setattr(Backend, "run", lambda backend, job: entered.append(job) or original(backend, job))
        with counting() as log:
            run = runner.start(1, Config({"load": {"size": 2048}}))  # 8 KiB of float32 per stage: small blobs
            runner.advance_recorded([run])  # as a task's run does: one batched lookup of the first stage
            runner.finish(run)
        assert run.executed == ["load", "scale"]
        writes = log.select("write")
        assert [call.primitive for call in writes] == ["set_in_order"] * 2, log.summary()  # one per execution
        assert log.calls("list") == 0, log.summary()
        for call, key in zip(writes, run.record_keys, strict=True):
            own = [k for k in call.keys if k.count("/") > 2]  # the value's chunk and metadata, the record
            assert len(own) == 3 and own[-1] == layout.metadata_key(layout.record_path(key)), call.keys
        # Every call into zarr's event loop is one of those writes, a read, or the creation and the
        # removal of the claim on each execution (repype.store.claims); a local store makes none.
        claims = 2 * len(run.executed)
        expected = 0 if location.raw.__class__ is LocalRaw else len(writes) + log.calls("read") + claims
        assert len(entered) == expected, log.summary()

    @staticmethod
    def same_fanout(store: rs.Store, value: np.floating, other: dict) -> bool:
        """Whether the 16-element array of `value` is stored in the fan-out group of `other`'s blob."""
        return codecs.is_inline(other) or store.describe(np.full(16, value))["digest"][:2] == other["digest"][:2]

    def test_a_first_run_writes_each_record_once_and_a_rerun_that_reuses_everything_writes_nothing(
        self, location, tmp_path, counts, monkeypatch
    ):
        inputs = [1, 2, 3]
        spec = {"runnable": True, "pipeline": PIPELINE, "input_ids": inputs, "config": {"load": {"size": 8}}}
        first = write_tree(tmp_path / "task", {"": {**spec, **location.spec}})[""]
        with counting() as log:
            first.run(first.create_config(), return_data=False)
        executions = len(inputs) * len(PIPELINE)
        assert sum(read_counts(counts).values()) == executions
        records = [key for key in log.keys("write") if key.startswith("records/") and key.count("/") == 3]
        assert len(records) == len(set(records)) == executions  # each execution writes its record once
        # Each execution's record is checked once (the goal of issue 14: 1 request to check): the first
        # stage's for every input in one batched call, the later ones one by one as their inputs exist;
        # and once more after claiming the execution (another process may have recorded it meanwhile).
        checks = Counter(key for key in log.keys("read") if key.startswith("records/"))
        assert set(checks) == set(records) and set(checks.values()) == {2}, log.summary()
        batched = [call for call in log.select("read") if len(call.keys) > 1 and call.keys[0].startswith("records/")]
        assert [len(call.keys) for call in batched] == [len(inputs)], log.summary()
        monkeypatch.setattr(repype.runner, "_OPEN_STORES", {})  # as a new process: nothing remembered
        task = Task(first.path, first.spec)
        with counting() as log:
            task.run(task.create_config(), return_data=False)
        assert sum(read_counts(counts).values()) == executions  # nothing ran again
        # Nothing is written but the run's writer lease (taken when the run starts, not at its first
        # write), which is removed when it ends: its group's document, itself, its deletion.
        changed = [key for key in log.keys("write", "delete") if not key.startswith(layout.LEASES + "/")]
        assert changed == [] and log.requests("write", "delete") == 3, log.summary()
        # The records of each stage for every input are read in one call, and nothing else is asked one by one.
        record_reads = [call for call in log.select("read") if call.keys[0].startswith("records/")]
        assert len(record_reads) == len(PIPELINE) and all(len(call.keys) == len(inputs) for call in record_reads)


class TestLocalStore(StoreContract):
    """A store in a local directory."""

    @pytest.fixture
    def location(self, tmp_path) -> Location:
        return Location(str(tmp_path / "store"), None, LocalRaw(tmp_path / "store"))


class TestMemoryStore(StoreContract):
    """A `memory://` store (fsspec's memory filesystem)."""

    @pytest.fixture
    def location(self) -> Iterator[Location]:
        name = f"repype-contract-{uuid.uuid4().hex}"
        yield Location(f"memory://{name}", None, MemoryRaw(f"/{name}"))
        fsspec.filesystem("memory").rm(f"/{name}", recursive=True)


class TestS3Store(StoreContract):
    """A store in a fresh bucket of the moto S3 server."""

    @pytest.fixture
    def location(self, s3_server, s3_url) -> Location:
        bucket, prefix = s3_url.removeprefix("s3://").split("/", 1)
        return Location(s3_url, s3_server.storage_options, S3Raw(s3_server.endpoint_url, bucket, prefix))
