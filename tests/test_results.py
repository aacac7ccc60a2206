"""Results for people: tables across a sweep, plots, and xarray views of stored arrays."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from example import copy_example, run_example
from hypothesis import given, settings
from hypothesis import strategies as st

import repype.store
from repype.optional import MissingDependencyError
from repype.plot import plot_table
from repype.store import blobs, layout
from repype.store.table import config_columns, flatten_config

SWEEP = [
    "sigma=1",
    "sigma=1/threshold=0.3",
    "sigma=1/threshold=0.6",
    "sigma=3",
    "sigma=3/threshold=0.3",
    "sigma=3/threshold=0.6",
]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The bundled example's sweep (small images), run once; its store opened read-only."""
    root = copy_example(tmp_path_factory.mktemp("example") / "blobs")
    run_example(root)
    return repype.store.open(str(root / ".repype"), mode="r")


# --- tables -------------------------------------------------------------------------------------


def test_table_of_the_sweep_has_a_row_per_task_and_input(example):
    frame = example.table()
    assert list(frame.columns) == ["task", "input_id", "segment/threshold", "smooth/sigma", "foreground", "objects"]
    assert len(frame) == 36 and sorted(set(frame["task"])) == SWEEP
    row = frame[(frame["task"] == "sigma=3/threshold=0.6") & (frame["input_id"] == 4)].iloc[0]
    assert row["segment/threshold"] == 0.6 and row["smooth/sigma"] == 3
    view = example.task("sigma=3/threshold=0.6")
    assert row["objects"] == view.field(4, "objects") and row["foreground"] == view.field(4, "foreground")
    assert set(frame[frame["task"] == "sigma=1"]["segment/threshold"]) == {0.5}  # inherited from the root


def test_table_columns_asked_for_sections_and_task_views(example):
    frame = example.table(tasks=["sigma=1", "sigma=3"], fields=["objects"], config=["smooth", "synthesize/size"])
    assert list(frame.columns) == ["task", "input_id", "smooth/sigma", "synthesize/size", "objects"]
    assert len(frame) == 12 and set(frame["synthesize/size"]) == {48}
    one = example.task("sigma=3").table(config=["segment/threshold"])
    assert list(one.columns) == ["task", "input_id", "segment/threshold", "foreground", "objects"]
    assert list(one["input_id"]) == [1, 2, 3, 4, 5, 6] and set(one["task"]) == {"sigma=3"}


def test_table_errors_name_the_field_the_key_and_the_closest_name(example):
    with pytest.raises(ValueError, match=r"no field 'objcts'.*did you mean 'objects'"):
        example.table(fields=["objcts"])
    with pytest.raises(ValueError, match=r"no hyperparameter 'segment/treshold'.*did you mean 'segment/threshold'"):
        example.table(config=["segment/treshold"])
    with pytest.raises(ValueError, match=r"task 'sigma=1', input 1, field 'smooth': an array of shape \(48, 48\)"):
        example.table(fields=["smooth"])


def test_small_values_fit_in_cells_and_missing_fields_are_empty(tmp_path):
    store = repype.store.open(str(tmp_path / "store"))
    small = {"pair": (1, 2), "few": np.arange(3), "zero_d": np.float32(2.5), "big": np.arange(100)}
    refs = {name: store.put_value(value, name) for name, value in small.items()}
    store.put_manifest("t", {"inputs": [[1, refs], [2, {"pair": refs["pair"]}]], "config": {"a": {"b": 1}}})
    frame = store.table(fields=["pair", "few", "zero_d"])
    assert frame["pair"].tolist() == [(1, 2), (1, 2)]
    assert frame["few"][0].tolist() == [0, 1, 2] and frame["few"][1] is None
    assert frame["zero_d"][0] == 2.5 and np.isnan(frame["zero_d"][1])  # a 0-d array is a number
    with pytest.raises(ValueError, match=r"task 't', input 1, field 'big'"):
        store.table(fields=["big"])


configs = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.one_of(st.integers(0, 2), st.dictionaries(st.sampled_from(["x", "y"]), st.integers(0, 2), max_size=2)),
    max_size=3,
)


@settings(max_examples=80, deadline=None)
@given(st.lists(configs, min_size=1, max_size=4))
def test_default_hyperparameter_columns_are_exactly_those_that_differ(tasks):
    flat = {f"t{i}": flatten_config(config) for i, config in enumerate(tasks)}
    columns = config_columns(flat, None)
    for path in {path for config in flat.values() for path in config}:
        values = [json.dumps(config.get(path, "<missing>")) for config in flat.values()]
        assert (path in columns) == (len(set(values)) > 1), path
    assert config_columns(flat, []) == []


def test_missing_pandas_is_one_clear_line(monkeypatch, example):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingDependencyError, match=r"needs pandas.*pip install 'repype\[results\]'"):
        example.table()


# --- plots --------------------------------------------------------------------------------------


def test_plot_has_a_series_per_value_and_a_point_per_row(example):
    frame = example.table(config=["segment/threshold", "smooth/sigma"], fields=["objects"])
    figure = plot_table(frame, "segment/threshold", "objects", by="smooth/sigma")
    (axes,) = figure.axes
    assert [len(points.get_offsets()) for points in axes.collections] == [18, 18]
    assert [list(line.get_xdata()) for line in axes.lines] == [[0.3, 0.5, 0.6]] * 2
    means = frame[frame["smooth/sigma"] == 1].groupby("segment/threshold")["objects"].mean()
    assert list(axes.lines[0].get_ydata()) == pytest.approx(list(means))
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["smooth/sigma = 1", "smooth/sigma = 3"]
    single = plot_table(frame, "segment/threshold", "objects")
    assert [len(points.get_offsets()) for points in single.axes[0].collections] == [36]
    with pytest.raises(ValueError, match="no column 'count'"):
        plot_table(frame, "segment/threshold", "count")


# --- dimension names and xarray -------------------------------------------------------------------


GOLDEN_DIGESTS = [
    (np.arange(12, dtype="<i4").reshape(3, 4), "71f3a9d5b263ad6c15f7f63dc3e436c1"),
    (np.linspace(0, 1, 7, dtype="<f8"), "dee5a3ca5ee749aa1ccae9f24ae218d1"),
    (np.array(["ab", "c"]), "e834484497a39119c95923b0590ad2b9"),
]


@pytest.mark.parametrize("value, digest", GOLDEN_DIGESTS)
def test_dimension_names_leave_digests_unchanged(tmp_path, value, digest):
    store = repype.store.open(str(tmp_path / "store"), pack_limit=None)  # tiny arrays as array nodes
    assert store.put_value(value, "x")["digest"] == digest  # written before dimension names existed
    metadata = json.loads((tmp_path / "store" / blobs.blob_path(digest) / "zarr.json").read_text())
    assert metadata["dimension_names"] == blobs.dimension_names(metadata["shape"])


def test_xarray_opens_stored_arrays_of_any_shape(tmp_path):
    xarray = pytest.importorskip("xarray")
    store = repype.store.open(str(tmp_path / "store"), pack_limit=None)  # tiny arrays as array nodes
    values = [np.arange(12.0).reshape(3, 4), np.arange(5), np.ones((4, 3), bool), np.array(7.0)]
    refs = [store.put_value(value, "x") for value in values]
    # Put every value into one fan-out group, as happens in any store of a few hundred values
    group = "blobs/zz"
    (tmp_path / "store" / group).mkdir()
    (tmp_path / "store" / group / "zarr.json").write_bytes(layout.group_document())
    for ref in refs:
        (tmp_path / "store" / blobs.blob_path(ref["digest"])).rename(tmp_path / "store" / group / ref["digest"])
    opened = xarray.open_zarr(str(tmp_path / "store"), group=group, consolidated=False)
    for value, ref in zip(values, refs):
        np.testing.assert_array_equal(opened[ref["digest"]].values, value)
    tree = xarray.open_datatree(str(tmp_path / "store"), engine="zarr", consolidated=False)
    assert set(tree["blobs/zz"].data_vars) == {ref["digest"] for ref in refs}


def test_xarray_opens_a_value_of_the_example(example):
    xarray = pytest.importorskip("xarray")
    view = example.task("sigma=1/threshold=0.3")
    digest = view.refs(3)["smooth"]["digest"]  # a float image: an array node (the boolean mask is packed)
    group = xarray.open_zarr(example.url, group=f"blobs/{digest[:2]}", consolidated=False)
    assert group[digest].dims == ("dim_0_48", "dim_1_48")
    np.testing.assert_array_equal(group[digest].values, view.field(3, "smooth"))


def test_to_xarray_stacks_a_field_lazily_with_input_ids(example):
    pytest.importorskip("xarray")
    dask_array = pytest.importorskip("dask.array")
    view = example.task("sigma=3")
    stacked = view.to_xarray("smooth")
    assert stacked.dims == ("input_id", "dim_0", "dim_1") and stacked.shape == (6, 48, 48)
    assert isinstance(stacked.data, dask_array.Array)  # nothing read yet
    assert stacked["input_id"].values.tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(stacked.sel(input_id=4).values, view.field(4, "smooth"))
    named = view.to_xarray("mask", dims=["y", "x"])
    assert named.dims == ("input_id", "y", "x") and named.dtype == bool
    with pytest.raises(ValueError, match=r"field 'mask': \['y'\] do not name the axes of shape \(48, 48\)"):
        view.to_xarray("mask", dims=["y"])
    objects = view.to_xarray("objects", input_ids=[2, 5])
    assert objects.dims == ("input_id",) and objects.values.tolist() == [view.field(i, "objects") for i in (2, 5)]


def test_to_xarray_names_the_field_when_shapes_differ(tmp_path):
    pytest.importorskip("xarray")
    store = repype.store.open(str(tmp_path / "store"))
    inputs = [[1, {"img": store.put_value(np.zeros((2, 3)), "img"), "note": store.put_value({"a"}, "note")}]]
    inputs.append([2, {"img": store.put_value(np.zeros((3, 3)), "img")}])
    store.put_manifest("t", {"inputs": inputs, "config": {}})
    with pytest.raises(ValueError, match=r"task 't', field 'img': the inputs' values differ in shape \(1: \(2, 3\)"):
        store.task("t").to_xarray("img")
    with pytest.raises(ValueError, match=r"task 't', input 1, field 'note'"):
        store.task("t").to_xarray("note", input_ids=[1])
    with pytest.raises(KeyError, match="input 2 has no field 'note'"):
        store.task("t").to_xarray("note", input_ids=[2])


def test_arrays_stored_without_dimension_names_still_load(tmp_path):
    pytest.importorskip("xarray")
    store = repype.store.open(str(tmp_path / "store"), pack_limit=None)  # a tiny array as an array node
    value = np.arange(20.0).reshape(4, 5)
    ref = store.put_value(value, "img")
    path = tmp_path / "store" / blobs.blob_path(ref["digest"]) / "zarr.json"
    metadata = json.loads(path.read_text())
    del metadata["dimension_names"]  # as an older repype wrote it
    path.write_text(json.dumps(metadata))
    store.put_manifest("old", {"inputs": [[1, {"img": ref}]], "config": {}})
    view = repype.store.open(str(tmp_path / "store"), mode="r").task("old")
    np.testing.assert_array_equal(view.field(1, "img"), value)
    np.testing.assert_array_equal(view.field(1, "img", lazy=True)[1:3], value[1:3])
    stacked = view.to_xarray("img")
    assert stacked.dims == ("input_id", "dim_0", "dim_1")
    np.testing.assert_array_equal(stacked.values[0], value)
