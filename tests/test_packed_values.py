"""Tiny values packed into their references (the default `pack_limit`): exact, same digests, no objects of their own."""

from __future__ import annotations

import base64
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import repype.store
from repype.config import Config
from repype.pipeline import create_pipeline
from repype.runner import InputRunner
from repype.store import IntegrityError, codecs

DTYPES = st.sampled_from(["<f4", "<f8", "<i8", "|b1", "<c8", ">i4", "<U3", "|S2", "<M8[s]", "|u1"])


def blob_files(store: repype.store.Store) -> list[str]:
    return [key for key in store.backend.list_prefix("blobs/") if key.count("/") > 2]


@settings(max_examples=60, deadline=None)
@given(array=DTYPES.flatmap(lambda dtype: hnp.arrays(np.dtype(dtype), hnp.array_shapes(min_dims=0, max_side=6))))
def test_packed_arrays_round_trip_exactly_with_the_digest_of_a_stored_array(tmp_path_factory, array):
    root = tmp_path_factory.mktemp("packed")
    packing = repype.store.open(root / "packing")
    plain = repype.store.open(root / "plain", pack_limit=None)
    ref = packing.put_value(array, "a")
    assert ref["digest"] == plain.put_value(array, "a")["digest"] == codecs.array_digest(array)
    assert ref["layout"] == "packed" and ref["stored"] and blob_files(packing) == []
    loaded = packing.get_value(ref)
    assert loaded.dtype == array.dtype and loaded.shape == array.shape and loaded.flags.writeable
    np.testing.assert_array_equal(loaded, array)


def test_arrays_over_the_limit_stay_zarr_arrays(tmp_path):
    store = repype.store.open(tmp_path / "store", pack_limit=64)
    small, large = np.arange(8, dtype=np.float64), np.arange(9, dtype=np.float64)
    assert store.put_value(small)["layout"] == "packed"
    assert store.put_value(large)["layout"] == "native" and blob_files(store)
    assert store.describe(large)["digest"] == codecs.array_digest(large)
    assert repype.store.open(tmp_path / "store", pack_limit=None).put_value(small)["layout"] == "native"  # per opening


def test_a_damaged_packed_array_is_named(tmp_path):
    store = repype.store.open(tmp_path / "store")
    ref = store.put_value(np.arange(4, dtype=np.int64), "counts")
    damaged = dict(ref, packed=base64.b64encode(np.arange(1, 5, dtype=np.int64).tobytes()).decode())
    with pytest.raises(IntegrityError, match=r"input 3, field 'counts': value \w+ is damaged"):
        store.get_value(damaged, context={"input": 3, "field": "counts"})


def test_packed_values_live_in_records_and_manifests_and_load_without_zarr(tmp_path):
    store = repype.store.open(tmp_path / "store")
    refs = {"signal": store.put_value(np.linspace(0, 1, 16, dtype=np.float32), "signal")}
    store.put_record("k" * 40, refs, 0.5, stage="s")
    entries = [repype.store.InputEntry(1, refs, records=["k" * 40])]
    store.put_manifest("t", repype.store.Manifest({}, {}, {"s": "a" * 40}, entries))
    assert blob_files(store) == []
    report = repype.store.open(tmp_path / "store", mode="r").verify()
    assert report.ok and report.checked_blobs == 0
    code = (
        "import sys, repype.store; "
        f"v = repype.store.open({str(tmp_path / 'store')!r}, mode='r').task('t').field(1, 'signal'); "
        "print(v.dtype, v.shape, 'zarr' in sys.modules)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.stdout.split() == ["float32", "(16,)", "False"], completed.stderr


def test_marginal_outputs_are_recorded_by_digest_only_even_when_tiny(tmp_path, counts):
    from taskstages import Load, Scale

    store = repype.store.open(tmp_path / "store")
    runner = InputRunner(store, create_pipeline([Load(), Scale()]), marginal_fields={"raw"})
    run = runner.finish(runner.start(1, Config({"load": {"size": 4}})))
    records = store.get_records(run.record_keys)
    raw_ref = next(record.outputs["raw"] for record in records.values() if record.stage == "load")
    scaled_ref = next(record.outputs["scaled"] for record in records.values() if record.stage == "scale")
    assert "packed" not in raw_ref and not raw_ref["stored"]
    assert scaled_ref["layout"] == "packed"


class Opaque:
    """A value only dill stores (no codec, not JSON, not taggable)."""

    def __init__(self, payload: str) -> None:
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.payload == self.payload


def test_small_pickles_are_packed_and_still_refused_without_allow_pickle(tmp_path):
    store = repype.store.open(tmp_path / "store")
    ref = store.put_value(Opaque("tiny"), "thing")
    assert (ref["codec"], ref["layout"], ref["stored"]) == ("pickle", "packed", True)
    assert ref["digest"] == repype.store.open(tmp_path / "plain", pack_limit=None).describe(Opaque("tiny"))["digest"]
    assert blob_files(store) == [] and store.get_value(ref) == Opaque("tiny")
    with pytest.raises(repype.store.PickleRefusedError, match=r"field 'thing': value \w+ is a pickle"):
        repype.store.open(tmp_path / "store", mode="r", allow_pickle=False).get_value(ref, context={"field": "thing"})
    big = store.put_value(Opaque("x" * (2 * codecs.PACK_LIMIT)), "thing")
    assert big["layout"] == "bytes" and blob_files(store)


def test_json_up_to_the_pack_limit_is_inline_and_larger_json_is_a_blob(tmp_path):
    store = repype.store.open(tmp_path / "store")
    medium, large = list(range(600)), list(range(2000))  # about 2.3 KB and 9 KB of JSON
    assert store.put_value(medium)["value"] == medium and blob_files(store) == []
    assert "value" not in repype.store.open(tmp_path / "plain", pack_limit=None).describe(medium)
    large_ref = store.put_value(large)
    assert large_ref["layout"] == "bytes" and store.get_value(large_ref) == large


def test_a_lazy_load_of_a_packed_array_is_a_verified_numpy_array(tmp_path):
    store = repype.store.open(tmp_path / "store")
    ref = store.put_value(np.arange(6, dtype=np.int16).reshape(2, 3))
    loaded = store.get_value(ref, lazy=True)
    assert type(loaded) is np.ndarray and loaded.tolist() == [[0, 1, 2], [3, 4, 5]]
    damaged = dict(ref, packed=base64.b64encode(np.zeros(6, np.int16).tobytes()).decode())
    with pytest.raises(IntegrityError, match="is damaged"):
        store.get_value(damaged, lazy=True)
