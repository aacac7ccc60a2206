"""repype.benchmark.Benchmark: a CSV table of values indexed by stage id and input id."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repype.benchmark import Benchmark


def filled(path, values: dict) -> Benchmark[float]:
    benchmark = Benchmark[float](path)
    for (stage_id, input_id), value in values.items():
        benchmark[stage_id, input_id] = value
    return benchmark


def test_generic_alias_constructs_empty_benchmark(tmp_path):
    benchmark = Benchmark[float](tmp_path / "times.csv")
    assert isinstance(benchmark, Benchmark)
    assert benchmark.stage_ids == []
    assert benchmark.input_ids == []
    assert not (tmp_path / "times.csv").exists()


def test_set_and_get(tmp_path):
    benchmark = filled(tmp_path / "t.csv", {("load", 1): 0.5, ("load", "a"): 1.5, ("seg", 1): 2.0})
    assert benchmark["load", 1] == 0.5
    assert benchmark["load", "a"] == 1.5
    assert benchmark["seg", 1] == 2.0
    benchmark["load", 1] = 3.0
    assert benchmark["load", 1] == 3.0
    assert benchmark.stage_ids == ["load", "seg"]
    assert benchmark.input_ids == [1, "a"]
    assert ("load", 1) in benchmark
    assert ("seg", "a") not in benchmark


def test_missing_raises_keyerror(tmp_path):
    benchmark = filled(tmp_path / "t.csv", {("load", 1): 0.5})
    with pytest.raises(KeyError):
        benchmark["load", 2]
    with pytest.raises(KeyError):
        benchmark["other", 1]
    with pytest.raises(KeyError):
        benchmark["load", "1"]


def test_set_other_replaces_values(tmp_path):
    target = filled(tmp_path / "a.csv", {("old", 9): 9.0})
    source = filled(tmp_path / "b.csv", {("load", 1): 0.5, ("seg", 2): 1.0})
    assert target.set(source) is target
    assert target == source
    assert target.stage_ids == ["load", "seg"]
    assert target.input_ids == [1, 2]
    with pytest.raises(KeyError):
        target["old", 9]
    # an independent copy
    source["load", 1] = 7.0
    assert target["load", 1] == 0.5
    assert target.filepath == tmp_path / "a.csv"


def test_retain_keeps_only_given_in_given_order(tmp_path):
    values = {
        (stage, input_id): float(index)
        for index, (stage, input_id) in enumerate((s, i) for s in ("a", "b", "c") for i in (1, 2, 3, "x"))
    }
    benchmark = filled(tmp_path / "t.csv", values)
    assert benchmark.retain(["c", "a"], ["x", 1]) is benchmark
    assert benchmark.stage_ids == ["c", "a"]
    assert benchmark.input_ids == ["x", 1]
    assert benchmark["c", "x"] == values["c", "x"]
    assert benchmark["a", 1] == values["a", 1]
    for stage, input_id in [("b", 1), ("a", 2), ("c", 3)]:
        with pytest.raises(KeyError):
            benchmark[stage, input_id]
    benchmark.save()
    loaded = Benchmark[float](tmp_path / "t.csv")
    assert loaded.stage_ids == ["c", "a"]
    assert loaded.input_ids == ["x", 1]
    assert loaded == benchmark


def test_retain_ignores_unknown_ids(tmp_path):
    benchmark = filled(tmp_path / "t.csv", {("a", 1): 1.0, ("b", 2): 2.0})
    benchmark.retain(["a", "zzz"], [1, 2, 99])
    assert benchmark.stage_ids == ["a"]
    assert benchmark["a", 1] == 1.0
    assert 99 not in benchmark.input_ids
    with pytest.raises(KeyError):
        benchmark["b", 2]


def test_save_then_load_keeps_values_and_id_types(tmp_path):
    path = tmp_path / "sub" / "dir" / "times.csv"
    benchmark = filled(path, {("load", 1): 0.25, ("load", "1"): 0.5, ("seg", 1): 1e-9, ("seg", "b"): 3.0})
    benchmark.save()
    assert path.exists()
    loaded = Benchmark[float](path)
    assert loaded == benchmark
    assert loaded.input_ids == [1, "1", "b"]
    assert [type(i) for i in loaded.input_ids] == [int, str, str]
    assert loaded["load", 1] == 0.25
    assert loaded["load", "1"] == 0.5
    assert loaded["seg", 1] == 1e-9
    with pytest.raises(KeyError):
        loaded["seg", "1"]


def test_save_overwrites_previous_file(tmp_path):
    path = tmp_path / "times.csv"
    benchmark = filled(path, {("a", 1): 1.0, ("b", 1): 2.0})
    benchmark.save()
    benchmark.retain(["a"], [1])
    benchmark["a", 1] = 5.0
    benchmark.save()
    loaded = Benchmark[float](path)
    assert loaded.stage_ids == ["a"]
    assert loaded["a", 1] == 5.0
    assert [p.name for p in tmp_path.iterdir()] == ["times.csv"]


def test_equality(tmp_path):
    first = filled(tmp_path / "a.csv", {("a", 1): 1.0, ("b", "x"): 2.0})
    second = filled(tmp_path / "b.csv", {("b", "x"): 2.0, ("a", 1): 1.0})
    assert first == second
    second["a", 1] = 1.5
    assert first != second
    third = filled(tmp_path / "c.csv", {("a", "1"): 1.0, ("b", "x"): 2.0})
    assert first != third
    assert first != {("a", 1): 1.0}
    assert Benchmark[float](tmp_path / "x.csv") == Benchmark[float](tmp_path / "y.csv")


def test_load_plain_text_header_of_old_framework(tmp_path):
    path = tmp_path / "times.csv"
    path.write_text("stage,a,b\nload,0.5,1.5\nsegment,2.0,\n")
    loaded = Benchmark[float](path)
    assert loaded.input_ids == ["a", "b"]
    assert all(isinstance(i, str) for i in loaded.input_ids)
    assert loaded.stage_ids == ["load", "segment"]
    assert loaded["load", "a"] == 0.5
    assert loaded["load", "b"] == 1.5
    assert loaded["segment", "a"] == 2.0
    with pytest.raises(KeyError):
        loaded["segment", "b"]
    # and it can be extended and saved again
    loaded["segment", "b"] = 4.0
    loaded.save()
    again = Benchmark[float](path)
    assert again.input_ids == ["a", "b"]
    assert again["segment", "b"] == 4.0


def test_load_plain_text_header_with_non_id_json_values(tmp_path):
    path = tmp_path / "times.csv"
    path.write_text("stage,true,null,1.5,img-2\nload,1,2,3,4\n")
    loaded = Benchmark[float](path)
    assert loaded.input_ids == ["true", "null", "1.5", "img-2"]
    assert loaded["load", "1.5"] == 3


def test_load_pandas_file_of_old_framework(tmp_path):
    # the original framework wrote `DataFrame.to_csv`: empty index header, NaN as empty cells
    path = tmp_path / "times.csv"
    path.write_text(",input-1,input-2\nstage1,10.0,\nstage2,0.25,1.5\n")
    loaded = Benchmark[float](path)
    assert loaded.stage_ids == ["stage1", "stage2"]
    assert loaded.input_ids == ["input-1", "input-2"]
    assert loaded["stage1", "input-1"] == 10.0
    assert loaded["stage2", "input-2"] == 1.5
    with pytest.raises(KeyError):
        loaded["stage1", "input-2"]


def test_load_empty_file(tmp_path):
    path = tmp_path / "times.csv"
    path.write_text("")
    loaded = Benchmark[float](path)
    assert loaded.stage_ids == [] and loaded.input_ids == []


def test_dataframe_view(tmp_path):
    pytest.importorskip("pandas")
    benchmark = filled(tmp_path / "t.csv", {("a", 1): 1.0, ("b", "x"): 2.0})
    df = benchmark.df
    assert list(df.index) == ["a", "b"]
    assert list(df.columns) == [1, "x"]
    assert df.loc["a", 1] == 1.0
    assert df.loc["b", "x"] == 2.0


def test_stage_id_with_carriage_return_round_trips(tmp_path):
    benchmark = filled(tmp_path / "t.csv", {("a\rb", 1): 1.0})
    benchmark.save()
    assert Benchmark[float](tmp_path / "t.csv") == benchmark


input_ids = st.lists(
    st.integers(min_value=-(10**9), max_value=10**9) | st.text(max_size=6), min_size=1, max_size=8, unique=True
)
# stage ids without control characters (see test_stage_id_with_carriage_return_round_trips)
stage_ids = st.lists(
    st.text(st.characters(exclude_categories=("Cc", "Cs")) | st.sampled_from(',"; '), min_size=1, max_size=6),
    min_size=1,
    max_size=4,
    unique=True,
)
values = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stage_ids, input_ids, st.data())
def test_save_load_round_trip_mixed_ids(tmp_path, stages, inputs, data):
    path = tmp_path / "round-trip.csv"
    path.unlink(missing_ok=True)
    benchmark = Benchmark[float](path)
    expected = {}
    for stage in stages:
        for input_id in inputs:
            if data.draw(st.booleans()):
                expected[stage, input_id] = benchmark[stage, input_id] = data.draw(values)
    benchmark.save()
    loaded = Benchmark[float](path)
    assert loaded == benchmark
    assert loaded.stage_ids == benchmark.stage_ids
    assert loaded.input_ids == benchmark.input_ids
    assert [type(i) for i in loaded.input_ids] == [type(i) for i in benchmark.input_ids]
    for (stage, input_id), value in expected.items():
        assert loaded[stage, input_id] == value
        if isinstance(input_id, int) and str(input_id) not in inputs:
            with pytest.raises(KeyError):
                loaded[stage, str(input_id)]
