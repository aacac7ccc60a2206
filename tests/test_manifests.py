"""The record, manifest and ref formats: round trips, identity without time, reads that stay flat in N."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from countingstore import counting
from hypothesis import given, settings
from hypothesis import strategies as st

import repype.store
from repype.canonical import canonical
from repype.store import IntegrityError, layout, manifests
from repype.store.manifests import InputEntry, Manifest

input_ids = st.lists(st.one_of(st.integers(-(10**6), 10**6), st.text(min_size=1, max_size=6)), max_size=40).map(
    lambda ids: list(dict.fromkeys(ids))
)


def entry(input_id, value=None) -> InputEntry:
    ref = repype.store.codecs.encode(value if value is not None else [input_id, (1, 2)], "v").ref
    return InputEntry(input_id, {"v": ref}, {"load": 0.5, "sum": 1.25}, [f"{abs(hash(str(input_id))):040x}"[:40]])


def a_manifest(ids, **config) -> Manifest:
    return Manifest({"runnable": True, "config": config}, config, {"load": "a" * 40}, [entry(i) for i in ids])


@settings(max_examples=60, deadline=None)
@given(ids=input_ids, shard_size=st.integers(1, 7))
def test_manifests_round_trip_through_header_and_shards(ids, shard_size):
    manifest = a_manifest(ids, sigma=(1.5, float("nan")))
    encoded = manifests.encode_manifest(manifest, shard_size=shard_size)
    header = manifests.parse_manifest(encoded.digest, encoded.header)
    assert header.input_ids == ids and [type(i) for i in header.input_ids] == [type(i) for i in ids]
    assert len(encoded.shards) == len(header.shards) == math.ceil(len(ids) / shard_size)
    entries = [e for index, raw in enumerate(encoded.shards) for e in manifests.parse_shard(header, index, raw)]
    assert entries == manifest.inputs
    assert header.fields == manifest.fields
    assert header.config["sigma"][0] == 1.5 and header.config["sigma"][1] != header.config["sigma"][1]
    for position, input_id in enumerate(ids):
        assert header.shard_of(input_id) == position // shard_size


def test_a_manifests_digest_depends_on_its_content_only():
    first = manifests.encode_manifest(a_manifest([1, "b"], k=1))
    again = manifests.encode_manifest(a_manifest([1, "b"], k=1))
    assert first == again
    assert manifests.encode_manifest(a_manifest([1, "b"], k=2)).digest != first.digest
    assert manifests.encode_manifest(a_manifest(["1", "b"], k=1)).digest != first.digest  # '1' is not 1


@pytest.mark.parametrize(
    "tamper",
    [
        lambda raw: raw[:-3],
        lambda raw: raw.replace(b'"load"', b'"lode"', 1),
        lambda raw: raw.replace(b'"format":2', b'"format":7', 1),
    ],
    ids=["truncated", "altered", "unknown-format"],
)
def test_a_tampered_header_or_shard_raises_naming_it(tamper):
    encoded = manifests.encode_manifest(a_manifest([1, 2, 3]), shard_size=2)
    with pytest.raises(IntegrityError, match=f"manifest {encoded.digest} is damaged"):
        manifests.parse_manifest(encoded.digest, tamper(encoded.header))
    header = manifests.parse_manifest(encoded.digest, encoded.header)
    with pytest.raises(IntegrityError, match=f"manifest {encoded.digest}, shard 1 is damaged"):
        manifests.parse_shard(header, 1, tamper(encoded.shards[1]))
    with pytest.raises(IntegrityError, match="shard 0 is missing"):
        manifests.parse_shard(header, 0, None)


def test_a_shard_holding_other_inputs_is_damaged():
    encoded = manifests.encode_manifest(a_manifest([1, 2, 3, 4]), shard_size=2)
    header = manifests.parse_manifest(encoded.digest, encoded.header)
    header.shards[1] = header.shards[0]
    with pytest.raises(IntegrityError, match="other inputs"):
        manifests.parse_shard(header, 1, encoded.shards[0])


def test_records_and_refs_round_trip_and_name_damage():
    record = manifests.Record("k" * 40, {"v": {"digest": "d" * 32, "codec": "json", "value": 1}}, 1.5, 1e9, "s")
    assert manifests.parse_record(record.key, manifests.record_document(record)) == record
    for raw in [b"{", layout.group_document({"repype_record": {"outputs": 3, "run_time": 1, "created": 1}})]:
        with pytest.raises(IntegrityError, match=f"stage record {'k' * 40} is damaged"):
            manifests.parse_record(record.key, raw)
    ref = manifests.Ref("a/b", "m" * 40, 2e9)
    assert manifests.parse_ref("refs/a%2Fb", manifests.ref_document(ref)) == ref
    old = layout.group_document({"repype_ref": {"name": "a/b", "manifest": "m" * 40, "updated": 2e9}})
    assert manifests.parse_ref("refs/a%2Fb", old) == ref  # format 1 said `updated`
    with pytest.raises(IntegrityError, match="ref refs/a%2Fb is damaged"):
        manifests.parse_ref("refs/a%2Fb", layout.group_document({"repype_ref": {"name": 1}}))


class CountingBackend:
    """Counts the keys read through a backend (the store's reads of one operation)."""

    def __init__(self, backend, monkeypatch):
        self.keys: list[str] = []
        get, get_many = backend.get, backend.get_many

        def counted_get(key):
            self.keys.append(key)
            return get(key)

        def counted_get_many(keys):
            keys = list(keys)
            self.keys.extend(keys)
            return get_many(keys)

        monkeypatch.setattr(backend, "get", counted_get)
        monkeypatch.setattr(backend, "get_many", counted_get_many)


@pytest.mark.parametrize("size", [10, 3000])
def test_opening_a_task_and_loading_one_field_reads_the_same_keys_at_any_size(tmp_path, monkeypatch, size):
    writer = repype.store.open(tmp_path / "store")
    writer.put_manifest("big", a_manifest(list(range(size))))
    store = repype.store.open(tmp_path / "store", mode="r")
    digest = repype.store.open(tmp_path / "store", mode="r").ref_target("big")
    counter = CountingBackend(store.backend, monkeypatch)
    assert store.task("big").field(size - 1, "v") == [size - 1, (1, 2)]
    shard = (size - 1) // manifests.SHARD_SIZE
    assert counter.keys == [
        layout.metadata_key(layout.ref_path("big")),
        layout.metadata_key(layout.manifest_path(digest)),
        layout.metadata_key(layout.shard_path(digest, shard)),
    ]
    header_bytes = (tmp_path / "store" / layout.metadata_key(layout.manifest_path(digest))).stat().st_size
    assert header_bytes < 2000 + 8 * size  # spec, config and stage hashes, plus the input ids


LIGHT_LOAD = """
import sys
import repype.store
store = repype.store.open(sys.argv[1], mode="r")
assert store.tasks() == ["big"]
assert store.task("big").field(7, "v") == [7, (1, 2)]
print(sorted(name for name in ("zarr", "numcodecs", "dill", "numpy") if name in sys.modules))
"""


def test_listing_tasks_and_reading_a_json_field_import_neither_zarr_nor_numcodecs_nor_numpy(tmp_path):
    repype.store.open(tmp_path / "store").put_manifest("big", a_manifest(list(range(10))))
    completed = subprocess.run(
        [sys.executable, "-c", LIGHT_LOAD, str(tmp_path / "store")], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


REF_VALUES = [
    np.arange(6, dtype=np.float32),  # packed
    np.arange(5000, dtype=np.float64),  # a blob
    {"$weird": [1, 2.5], "n": None},  # inline JSON whose key needs tagging
    (1, frozenset({"a"})),  # inline tagged
    "plain text",
]


@pytest.mark.parametrize("value", REF_VALUES, ids=["packed", "blob", "dollar-keys", "tagged", "text"])
def test_the_shortcut_through_plain_references_gives_their_canonical_form(value):
    ref = repype.store.codecs.encode(value, "v").ref
    assert manifests._canonical_ref(ref) == canonical(ref)
    plain = manifests.encode_manifest(Manifest({}, {}, {}, [InputEntry(1, {"v": ref})]))
    tagged = manifests.encode_manifest(Manifest({}, {}, {}, [InputEntry(1, {"$v": ref})]))
    assert plain.digest != tagged.digest  # a field name needing a tag is tagged, not taken as plain


def test_committing_a_manifest_that_is_stored_intact_writes_only_its_ref(tmp_path):
    store = repype.store.open(tmp_path / "store")
    manifest = a_manifest(range(600))
    digest = store.put_manifest("t", manifest)
    store.delete_ref("t")  # as `--reset` does: the manifest stays until gc
    with counting() as log:
        assert repype.store.open(tmp_path / "store").put_manifest("t", manifest) == digest
    assert log.keys("write") == [layout.metadata_key(layout.ref_path("t"))], log.summary()
    with counting() as log:
        assert repype.store.open(tmp_path / "store").put_manifest("t", manifest) == digest
    assert log.requests("write") == 0, log.summary()  # the ref points at it already
