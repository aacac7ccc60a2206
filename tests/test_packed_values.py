"""Tiny arrays packed into their references (`pack_limit`): exact, same digests, no objects of their own."""

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
    packing = repype.store.open(root / "packing", pack_limit=codecs.PACK_LIMIT)
    plain = repype.store.open(root / "plain")
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
    assert repype.store.open(tmp_path / "store").put_value(small)["layout"] == "native"  # packing is per opening


def test_a_damaged_packed_array_is_named(tmp_path):
    store = repype.store.open(tmp_path / "store", pack_limit=codecs.PACK_LIMIT)
    ref = store.put_value(np.arange(4, dtype=np.int64), "counts")
    damaged = dict(ref, packed=base64.b64encode(np.arange(1, 5, dtype=np.int64).tobytes()).decode())
    with pytest.raises(IntegrityError, match=r"input 3, field 'counts': value \w+ is damaged"):
        store.get_value(damaged, context={"input": 3, "field": "counts"})


def test_packed_values_live_in_records_and_manifests_and_load_without_zarr(tmp_path):
    store = repype.store.open(tmp_path / "store", pack_limit=codecs.PACK_LIMIT)
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

    store = repype.store.open(tmp_path / "store", pack_limit=codecs.PACK_LIMIT)
    runner = InputRunner(store, create_pipeline([Load(), Scale()]), marginal_fields={"raw"})
    run = runner.finish(runner.start(1, Config({"load": {"size": 4}})))
    records = store.get_records(run.record_keys)
    raw_ref = next(record.outputs["raw"] for record in records.values() if record.stage == "load")
    scaled_ref = next(record.outputs["scaled"] for record in records.values() if record.stage == "scale")
    assert "packed" not in raw_ref and not raw_ref["stored"]
    assert scaled_ref["layout"] == "packed"
