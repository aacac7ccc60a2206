"""Functional tests of the content-addressed store (repype.store) on a local directory, memory:// and S3."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass

import fsspec
import numpy as np
import pytest
import zarr
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import repype.store as rs
from repype.canonical import canonical_json
from repype.store import backend, keys

BACKENDS = ["local", "memory", "s3"]


@dataclass(frozen=True)
class Point:
    """A small module-level dataclass: stored as a pickle."""

    x: int
    y: float


@dataclass
class StoreUrl:
    """A store location and the storage options that reach it."""

    url: str
    storage_options: dict | None
    backend: str

    def open(self, mode: str = "a", **kwargs) -> rs.Store:
        return rs.open(self.url, storage_options=self.storage_options, mode=mode, **kwargs)


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> StoreUrl:
    if request.param == "local":
        return StoreUrl(str(tmp_path / "store"), None, "local")
    if request.param == "memory":
        return StoreUrl(f"memory://repype-test-{uuid.uuid4().hex}", None, "memory")
    server = request.getfixturevalue("s3_server")
    return StoreUrl(request.getfixturevalue("s3_url"), server.storage_options, "s3")


@pytest.fixture
def open_store(store_url):
    """`open_store(mode=...)` opens the store of `store_url` with the right storage options."""
    return store_url.open


@pytest.fixture
def local_url(tmp_path) -> StoreUrl:
    return StoreUrl(str(tmp_path / "store"), None, "local")


def assert_same(actual, expected) -> None:
    """Same type, value, and for arrays same dtype and shape."""
    assert type(actual) is type(expected), (type(actual), type(expected))
    if isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype
        assert actual.shape == expected.shape
        if isinstance(expected, np.ma.MaskedArray):
            np.testing.assert_array_equal(actual.mask, expected.mask)
            np.testing.assert_array_equal(actual.data, expected.data)
        else:
            np.testing.assert_array_equal(actual, expected)
            if not expected.dtype.hasobject:
                assert actual.tobytes() == expected.tobytes()
    elif isinstance(expected, np.generic):
        assert actual.dtype == expected.dtype
        assert actual == expected
    else:
        assert actual == expected


# --- codec round trips on every backend ---------------------------------------------------------

FIXED_ARRAYS = [
    np.arange(12, dtype=np.float64).reshape(3, 4),
    np.array(3, dtype=np.int16),
    np.zeros((0, 3), dtype=np.float32),
    np.array([True, False, True]),
    np.array([1 + 2j, -3.5j], dtype=np.complex64),
    np.array([b"ab", b"c"], dtype="S2"),
    np.array(["héllo", "x"], dtype="U5"),
    np.array("0-d ✓", dtype="U5"),
    np.arange(6, dtype=">i4").reshape(2, 3),
    np.array([1.5, -2.25], dtype=">f8"),
    np.full(2, np.iinfo(np.uint64).max, dtype=np.uint64),
    np.array([np.nan, -0.0, np.inf], dtype=np.float16),
    np.array(["2020-01-01", "1999-12-31"], dtype="M8[D]"),
    np.array([5, -3], dtype="m8[s]"),
    np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
    np.arange(20, dtype=np.uint16)[::3],
]


def assert_round_trips(open_store, values, expected_codec: str | None = None) -> list[dict]:
    """Stores every value, checks the codec, reads each back from this and from a fresh store object."""
    store = open_store()
    refs = [store.put_value(value, field=f"f{index}") for index, value in enumerate(values)]
    fresh = open_store()
    for value, ref in zip(values, refs, strict=True):
        if expected_codec is not None:
            assert ref["codec"] == expected_codec, value
        assert ref["stored"] is True
        assert_same(store.get_value(ref), value)
        assert_same(fresh.get_value(ref), value)
    return refs


def handful(store_url: StoreUrl, values: list, count: int = 6) -> list:
    """All `values` on local and memory stores, an evenly spread handful on S3 (each request is slow there)."""
    if store_url.backend != "s3":
        return values
    step = -(-len(values) // count)
    return values[::step]


def test_array_round_trips_every_backend(store_url, open_store):
    assert_round_trips(open_store, handful(store_url, FIXED_ARRAYS), "ndarray")


EXACT_JSON = [
    None,
    True,
    0,
    -(2**80),
    2**64 + 1,
    1.5,
    -0.0,
    "ünïcödé ✓ 日本",
    "",
    [1, None, "x", [2.5, None], {"k": [None]}],
    {"a": {"b": [1, 2, {"c": None}]}, "z": "ß", "": 0},
    [],
    {},
]


def test_exact_json_round_trips_every_backend(open_store):
    assert_round_trips(open_store, EXACT_JSON, "json")  # inline: no request per value
    assert open_store().put_value(-0.0)["digest"] != open_store().put_value(0.0)["digest"]


UNALTERED = [
    (1, "a", (2.5, None)),
    {1, 2, 3},
    frozenset({"a", "b"}),
    {1: "one", 2: [1, 2]},
    {"outer": {1: "int key inside"}},
    [1, (2, 3)],
    np.float32(1.5),
    np.int64(3),
    b"\x00\x01bytes\xff",
    Point(1, 2.5),
    float("inf"),
    np.bool_(True),
    np.float64(2.0),
    np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]),
    np.array([1, "a", None], dtype=object),
]


PICKLED = (UNALTERED[9], UNALTERED[13], UNALTERED[14])  # the rest is tagged JSON: loads without unpickling


def test_non_json_values_come_back_unaltered(store_url, open_store):
    refs = assert_round_trips(open_store, handful(store_url, UNALTERED))
    codecs = [ref["codec"] for ref in refs]
    expected = ["pickle" if any(value is p for p in PICKLED) else "tagged" for value in handful(store_url, UNALTERED)]
    assert codecs == expected
    assert all("value" not in ref for ref, codec in zip(refs, codecs, strict=True) if codec == "pickle")
    nan = open_store().put_value(float("nan"))
    restored = open_store().get_value(nan)
    assert type(restored) is float and restored != restored


def test_tuple_is_not_list_and_int_keys_are_not_str(open_store):
    store = open_store()
    as_tuple = store.put_value((1, 2))
    as_list = store.put_value([1, 2])
    assert as_tuple["digest"] != as_list["digest"]
    int_keys = store.put_value({1: "x"})
    str_keys = store.put_value({"1": "x"})
    assert int_keys["digest"] != str_keys["digest"]
    assert store.get_value(int_keys) == {1: "x"}
    assert store.get_value(str_keys) == {"1": "x"}


def test_large_json_is_stored_as_blob(open_store):
    store = open_store()
    value = {"items": [{"name": f"item-{i}", "value": i * 1.5, "none": None} for i in range(200)]}
    ref = store.put_value(value, field="big")
    assert ref["codec"] == "json"
    assert "value" not in ref
    assert ref["stored"] is True
    assert blob_digests(store) == {ref["digest"]}
    assert_same(open_store().get_value(ref), value)


def test_small_json_is_inline(open_store):
    store = open_store()
    ref = store.put_value({"a": [1, 2]})
    assert ref["value"] == {"a": [1, 2]}
    assert blob_digests(store) == set()
    # The inline value is a copy: mutating the result does not alter the reference.
    restored = store.get_value(ref)
    restored["a"].append(3)
    assert store.get_value(ref) == {"a": [1, 2]}


def blob_digests(store: rs.Store) -> set[str]:
    """Digests of the complete blob nodes (`blobs/xx/<digest>/zarr.json`) in the store."""
    keys = store.backend.list_prefix("blobs")
    return {key.split("/")[2] for key in keys if key.count("/") == 3 and key.endswith("/zarr.json")}


def test_identical_values_share_one_digest_and_one_blob(open_store):
    store = open_store(pack_limit=None)  # every value a blob
    first = store.put_value(np.arange(100, dtype=np.int32).reshape(10, 10), field="a")
    second = store.put_value(np.arange(100, dtype=np.int32).reshape(10, 10), field="b")
    assert first["digest"] == second["digest"]
    pickled = [store.put_value(Point(1, 2.5)) for _ in range(3)]
    assert len({ref["digest"] for ref in pickled}) == 1
    # Another store object writing the same values adds nothing.
    other = open_store(pack_limit=None)
    assert other.put_value(np.arange(100, dtype=np.int32).reshape(10, 10))["digest"] == first["digest"]
    assert blob_digests(other) == {first["digest"], pickled[0]["digest"]}
    assert store.describe(np.arange(100, dtype=np.int32).reshape(10, 10))["digest"] == first["digest"]


def test_same_bytes_different_dtype_or_shape_differ(open_store):
    store = open_store(pack_limit=None)  # every value a blob
    base = np.arange(8, dtype=np.int32)
    digests = {
        store.put_value(base)["digest"],
        store.put_value(base.view(np.uint32))["digest"],
        store.put_value(base.view(np.float32))["digest"],
        store.put_value(base.reshape(2, 4))["digest"],
        store.put_value(base.astype(">i4"))["digest"],
    }
    assert len(digests) == 5
    assert len(blob_digests(store)) == 5


def test_describe_writes_nothing(open_store):
    store = open_store(pack_limit=None)  # a packed value is stored by being described
    ref = store.describe(np.ones(4), field="x")
    assert ref["stored"] is False
    assert blob_digests(store) == set()
    with pytest.raises(rs.StoreError, match=ref["digest"]):
        store.get_value(ref)


def test_round_trip_emits_no_warnings(open_store):
    values = [np.arange(6.0).reshape(2, 3), np.array(["ab", "c"]), np.array(2, dtype=">f8"), (1, 2), {"a": 1}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = open_store()
        refs = [store.put_value(value) for value in values]
        restored = [open_store().get_value(ref) for ref in refs]
    assert [str(w.message) for w in caught] == []
    for actual, expected in zip(restored, values, strict=True):
        assert_same(actual, expected)


# --- serialisation errors, pickles, custom codecs -----------------------------------------------


def test_unserialisable_value_names_the_field(open_store):
    store = open_store()
    with pytest.raises(rs.SerializationError, match="my_generator_field"):
        store.put_value((i for i in range(3)), field="my_generator_field")
    with pytest.raises(rs.SerializationError, match="nested_field"):
        store.put_value({"gen": (i for i in range(3)), 1: 2}, field="nested_field")
    with pytest.raises(rs.SerializationError, match="described"):
        store.describe((i for i in range(3)), field="described")
    assert blob_digests(store) == set()


def test_allow_pickle_false_refuses_pickles_only(store_url):
    store = store_url.open()
    pickled = store.put_value(Point(1, 2.0), field="p")
    array = store.put_value(np.arange(5.0), field="a")
    raw = store.put_value(np.array(["x", "yz"]), field="u")
    small = store.put_value({"a": 1})
    large = store.put_value(list(range(1000)))
    safe = store_url.open(mode="r", allow_pickle=False)
    with pytest.raises(rs.PickleRefusedError, match="allow_pickle=False") as error:
        safe.get_value(pickled)
    assert pickled["digest"] in str(error.value)
    with pytest.raises(rs.PickleRefusedError, match="input 7"):
        safe.get_value(pickled, context={"task": "t", "input": 7, "field": "p"})
    assert_same(safe.get_value(array), np.arange(5.0))
    assert_same(safe.get_value(raw), np.array(["x", "yz"]))
    assert safe.get_value(small) == {"a": 1}
    assert safe.get_value(large) == list(range(1000))
    assert store_url.open(allow_pickle=True).get_value(pickled) == Point(1, 2.0)


class Celsius:
    """A small custom type with a registered codec."""

    def __init__(self, degrees: float) -> None:
        self.degrees = degrees

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.degrees == self.degrees

    def __hash__(self) -> int:
        return hash(self.degrees)


class CelsiusCodec(rs.FieldCodec):
    name = "test-celsius"
    types = (Celsius,)
    encoded = 0

    def encode(self, value: Celsius) -> bytes:
        type(self).encoded += 1
        return repr(value.degrees).encode()

    def decode(self, data: bytes) -> Celsius:
        return Celsius(float(data.decode()))


@pytest.fixture
def celsius_codec():
    codec = CelsiusCodec()
    rs.register_codec(codec)
    try:
        yield codec
    finally:
        rs.unregister_codec(codec.name)


def test_registered_codec_is_used_instead_of_pickle(open_store, celsius_codec):
    store = open_store()
    ref = store.put_value(Celsius(21.5), field="temperature")
    assert ref["codec"] == "test-celsius"
    assert CelsiusCodec.encoded >= 1
    assert_same(open_store().get_value(ref), Celsius(21.5))
    # A codec value is not a pickle: allow_pickle=False still loads it.
    assert_same(open_store(mode="r", allow_pickle=False).get_value(ref), Celsius(21.5))


def test_unregistered_codec_cannot_read(open_store):
    codec = CelsiusCodec()
    rs.register_codec(codec)
    try:
        store = open_store()
        ref = store.put_value(Celsius(3.0))
    finally:
        rs.unregister_codec(codec.name)
    with pytest.raises(rs.StoreError, match="test-celsius"):
        open_store().get_value(ref)
    # Without the codec the type falls back to pickle.
    assert store.put_value(Celsius(3.0))["codec"] == "pickle"


@pytest.mark.parametrize("name", ["", "json", "pickle", "ndarray"])
def test_register_codec_rejects_reserved_names(name):
    codec = CelsiusCodec()
    codec.name = name
    with pytest.raises(ValueError):
        rs.register_codec(codec)


# --- lazy arrays ----------------------------------------------------------------------------------


def test_lazy_array_slices(open_store):
    store = open_store()
    value = np.arange(3 * 40 * 50, dtype=np.float32).reshape(3, 40, 50)
    ref = store.put_value(value, field="image")
    lazy = open_store(mode="r").get_value(ref, lazy=True)
    assert isinstance(lazy, zarr.Array)
    assert lazy.shape == value.shape
    assert lazy.dtype == value.dtype
    np.testing.assert_array_equal(lazy[1, 5:10, ::7], value[1, 5:10, ::7])
    np.testing.assert_array_equal(lazy[...], value)
    # Non-native layouts and non-array values are loaded eagerly even with lazy=True.
    raw = store.put_value(np.array(["a", "bc"]))
    assert_same(store.get_value(raw, lazy=True), np.array(["a", "bc"]))
    assert store.get_value(store.put_value({"k": 1}), lazy=True) == {"k": 1}


# --- property-based array and JSON round trips (local store) -----------------------------------

NATIVE_DTYPES = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
]
RAW_DTYPES = ["S1", "S5", "U1", "U4", ">i4", ">f8", ">u2", ">c16"]


@pytest.fixture(scope="module")
def property_store(tmp_path_factory) -> rs.Store:
    """One local store shared by every example of the property-based tests."""
    return rs.open(str(tmp_path_factory.mktemp("property") / "store"))


@st.composite
def arrays(draw, dtypes=NATIVE_DTYPES + RAW_DTYPES, min_side: int | None = None):
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    raw = dtype.kind in "SU" or not dtype.isnative
    if min_side is None:
        # Empty arrays of raw-layout dtypes are a known bug (test_empty_raw_layout_array_round_trip).
        min_side = 1 if raw else 0
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=min_side, max_side=5))
    return draw(hnp.arrays(dtype, shape))


def is_negative_complex_zero(value: np.ndarray) -> bool:
    """A complex array of only zeros, some of them signed (-0.0): zarr takes the chunk for the fill value."""
    return (
        value.dtype.kind == "c"
        and bool(np.all(value == 0))
        and bool(np.signbit(value.real).any() or np.signbit(value.imag).any())
    )


def test_complex_negative_zero_round_trip(property_store):
    value = np.array([complex(0.0, -0.0), complex(-0.0, 0.0)])
    assert_same(property_store.get_value(property_store.put_value(value, field="c")), value)


@settings(max_examples=60, deadline=None)
@given(value=arrays())
def test_array_round_trip_property(property_store, value):
    assume(not is_negative_complex_zero(value))  # a known bug: test_complex_negative_zero_round_trip
    ref = property_store.put_value(value, field="x")
    assert ref["codec"] == "ndarray"
    assert ref["dtype"] == value.dtype.str
    assert ref["shape"] == list(value.shape)
    assert ref["digest"] == property_store.describe(value.copy())["digest"]
    assert_same(property_store.get_value(ref), value)


@settings(max_examples=50, deadline=None)
@given(
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(alphabet=st.characters(exclude_categories=["Cs"])),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=5), children, max_size=4
            )
        ),
        max_leaves=30,
    )
)
def test_json_round_trip_property(property_store, value):
    ref = property_store.put_value(value, field="j")
    assert ref["codec"] == "json"
    assert_same(property_store.get_value(ref), value)
    assert property_store.get_value(ref) == value


@pytest.mark.parametrize("dtype", ["S3", "U2", ">i4", "M8[s]"])
def test_empty_raw_layout_array_round_trip(property_store, dtype):
    value = np.zeros((2, 0), dtype=dtype)
    assert_same(property_store.get_value(property_store.put_value(value, field="empty")), value)


def test_empty_native_arrays_round_trip(property_store):
    for value in [np.zeros(0), np.zeros((3, 0, 2), dtype=np.int8), np.zeros((0,), dtype=bool)]:
        assert_same(property_store.get_value(property_store.put_value(value)), value)


def test_structured_array_keeps_its_dtype(property_store):
    value = np.array([(1, 2.5), (3, 4.5)], dtype=[("i", "<i4"), ("f", "<f8")])
    restored = property_store.get_value(property_store.put_value(value, field="table"))
    assert restored.dtype == value.dtype
    assert restored["f"].tolist() == [2.5, 4.5]


def test_lone_surrogate_string_is_stored_or_refused_cleanly(property_store):
    value = {"name": "bad \ud800 text"}
    try:
        ref = property_store.put_value(value, field="surrogate")
    except rs.SerializationError as error:
        assert "surrogate" in str(error)
    else:
        assert property_store.get_value(ref) == value


# --- stage keys -----------------------------------------------------------------------------------

SHA = "0123456789abcdef0123456789abcdef01234567"
INPUTS = {"input_id": "d" * 32, "image": "e" * 32}


def key(hyperparameters=None, inputs=None, extra=None, stage_sha=SHA) -> str:
    return rs.stage_key(stage_sha, hyperparameters or {}, INPUTS if inputs is None else inputs, extra)


def test_stage_key_is_sha1_hex():
    value = key({"sigma": 1.5})
    assert re.fullmatch(r"[0-9a-f]{40}", value)
    assert key({"sigma": 1.5}) == value


def test_stage_key_ignores_dict_order():
    first = {"a": 1, "b": {"x": [1, 2], "y": {"p": None, "q": "z"}}, "c": "t"}
    second = {"c": "t", "b": {"y": {"q": "z", "p": None}, "x": [1, 2]}, "a": 1}
    assert key(first) == key(second)
    assert key(inputs=dict(reversed(list(INPUTS.items())))) == key()
    assert key(extra={"k": 1, "j": 2}) == key(extra={"j": 2, "k": 1})
    assert key({"m": {2: "b", 1: "a"}}) == key({"m": {1: "a", 2: "b"}})


@pytest.mark.parametrize(
    "variants",
    [
        [{"t": 1}, {"t": "1"}, {"t": 1.0}, {"t": True}, {"t": np.int64(1)}, {"t": np.float64(1.0)}],
        [{"n": {"deep": [1]}}, {"n": {"deep": ["1"]}}, {"n": {"deep": [1.0]}}],
        [{"d": {1: "x"}}, {"d": {"1": "x"}}, {"d": {1.0: "x"}}],
        [{"s": (1, 2)}, {"s": [1, 2]}, {"s": {"$tuple": [1, 2]}}, {"s": {1, 2}}, {"s": {1: 2}}],
        [{"b": b"ab"}, {"b": "ab"}, {"b": {"$bytes": "6162"}}, {"b": "6162"}],
        [{"f": float("nan")}, {"f": "nan"}, {"f": float("inf")}, {"f": {"$float": "nan"}}],
        [{"z": 0}, {"z": None}, {"z": False}, {"z": ""}, {"z": []}, {"z": {}}],
        [{"big": 10**20}, {"big": 1e20}],
    ],
    ids=["scalar-types", "nested", "dict-keys", "tuple-list-set", "bytes", "non-finite", "falsy", "big"],
)
def test_stage_key_distinguishes_types(variants):
    keys = [key(hyperparameters) for hyperparameters in variants]
    assert len(set(keys)) == len(keys)
    # ... in extra material too.
    assert len({key(extra=hyperparameters) for hyperparameters in variants}) == len(keys)


def test_stage_key_depends_on_stage_inputs_and_extra():
    base = key({"sigma": 1})
    assert key({"sigma": 1}, stage_sha="f" * 40) != base
    assert key({"sigma": 1}, inputs={**INPUTS, "image": "f" * 32}) != base
    assert key({"sigma": 1}, inputs={**INPUTS, "mask": "a" * 32}) != base
    assert key({"sigma": 1}, inputs={"input_id": INPUTS["input_id"]}) != base
    assert key({"sigma": 1}, extra="v2") != base
    assert key({"sigma": 1}, extra={"version": 2}) != key({"sigma": 1}, extra={"version": 3})
    assert key({"sigma": 2}) != base
    assert key({"sigma": 1, "other": None}) != base


def test_config_hyperparameters_key_like_their_plain_dicts():
    from repype.config import Config

    assert key({"segment": Config({"sigma": 1, "mode": "fast"})}) == key({"segment": {"mode": "fast", "sigma": 1}})
    assert key(Config({"a": {"b": 1}}).entries) == key({"a": {"b": 1}})


def test_key_document_holds_the_schema_version():
    document = keys.key_document(SHA, {"a": (1,)}, INPUTS, extra=None)
    assert document["schema"] == rs.KEY_SCHEMA_VERSION
    assert document["stage"] == SHA
    assert document["inputs"] == INPUTS
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    assert hashlib.sha1(text.encode()).hexdigest() == key({"a": (1,)})


def test_canonical_json_is_sorted_and_compact():
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert canonical_json("ü") == '"ü"'
    assert canonical_json({"a": (1,)}) != canonical_json({"a": [1]})


def test_key_material_without_canonical_form_is_refused():
    with pytest.raises(rs.KeyMaterialError, match="object"):
        key({"x": object()})
    with pytest.raises(rs.KeyMaterialError):
        key(extra=[(i for i in range(2))])
    assert issubclass(rs.KeyMaterialError, rs.StoreError)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5), children, max_size=5)
        | st.dictionaries(st.integers(), children, max_size=4)
    ),
    max_leaves=25,
)


def shuffled(value, random):
    """`value` with the insertion order of every dict permuted."""
    if isinstance(value, dict):
        items = [(k, shuffled(v, random)) for k, v in value.items()]
        random.shuffle(items)
        return dict(items)
    if isinstance(value, list):
        return [shuffled(item, random) for item in value]
    return value


@settings(max_examples=30, deadline=None)
@given(hyperparameters=st.dictionaries(st.text(max_size=6), json_like, max_size=6), random=st.randoms())
def test_dict_order_never_changes_the_key(hyperparameters, random):
    permuted = shuffled(hyperparameters, random)
    assert permuted == hyperparameters
    assert key(permuted) == key(hyperparameters)
    assert key(extra=permuted) == key(extra=hyperparameters)


# --- stage records ----------------------------------------------------------------------------------


def test_records_round_trip_through_a_fresh_store(open_store):
    store = open_store()
    image = store.put_value(np.arange(16, dtype=np.uint8).reshape(4, 4), field="image")
    label = store.put_value({"label": "cell", "n": 3}, field="label")
    key_a, key_b, key_missing = key({"a": 1}), key({"a": 2}), key({"a": 3})
    before = time.time()
    written = store.put_record(key_a, {"image": image, "label": label}, run_time=1.25, stage="segment")
    store.put_record(key_b, {"label": label}, run_time=0, stage=None)
    after = time.time()
    assert written.key == key_a
    fresh = open_store(mode="r")
    record = fresh.get_record(key_a)
    assert isinstance(record, rs.Record)
    assert record.key == key_a
    assert record.outputs == {"image": image, "label": label}
    assert record.run_time == 1.25
    assert isinstance(record.run_time, float)
    assert record.stage == "segment"
    assert before - 1 <= record.created <= after + 1
    assert record == written
    assert_same(fresh.get_value(record.outputs["image"]), np.arange(16, dtype=np.uint8).reshape(4, 4))
    assert fresh.get_value(record.outputs["label"]) == {"label": "cell", "n": 3}
    assert fresh.get_record(key_missing) is None
    found = open_store().get_records([key_missing, key_b, key_a, key_b])
    assert set(found) == {key_a, key_b}
    assert found[key_b].stage is None
    assert found[key_b].run_time == 0.0
    assert open_store().get_records([]) == {}
    assert open_store().get_records([key_missing]) == {}


def test_record_is_overwritten_and_deleted(open_store):
    store = open_store()
    record_key = key({"x": 1})
    store.put_record(record_key, {"v": store.put_value(1)}, run_time=1.0)
    store.put_record(record_key, {"v": store.put_value(2)}, run_time=2.0)
    assert open_store().get_record(record_key).run_time == 2.0
    store.delete_record(record_key)
    assert store.get_record(record_key) is None
    assert open_store().get_record(record_key) is None


# --- manifests and refs --------------------------------------------------------------------------


def a_manifest(inputs: dict | None = None, **parts) -> rs.Manifest:
    """A typed manifest: `inputs` maps input ids to field references; `parts` set spec, config, stages."""
    entries = [rs.InputEntry(input_id, refs) for input_id, refs in (inputs or {}).items()]
    return rs.Manifest(parts.get("spec", {}), parts.get("config", {}), parts.get("stages", {}), entries)


REF_NAMES = [".", "sweep/lr-0.1", "a/b/c", "x.y", "..", "with space", "ünï/cöde", "%2E", "50%", "a/.", "UPPER"]


def test_manifests_and_refs(store_url, open_store):
    store = open_store()
    names = handful(store_url, REF_NAMES, 4)
    digests = {}
    for index, name in enumerate(names):
        config = {"task": name, "index": index, "nested": {"l": [1, None]}}
        digests[name] = store.put_manifest(name, a_manifest(config=config))
        assert re.fullmatch(r"[0-9a-f]{40}", digests[name])
    fresh = open_store(mode="r")
    assert fresh.list_refs() == sorted(names)
    assert fresh.tasks() == sorted(names)
    for index, name in enumerate(names):
        assert fresh.get_manifest(name).config == {"task": name, "index": index, "nested": {"l": [1, None]}}
        assert fresh.get_manifest(name).digest == fresh.ref_target(name) == digests[name]
    assert fresh.get_manifest("no/such/ref") is None
    assert fresh.ref_target("no/such/ref") is None
    # Refs move: the same name now points at another manifest; equal manifests share a digest.
    moved = store.put_manifest(names[0], a_manifest(config={"task": names[1], "index": 1, "nested": {"l": [1, None]}}))
    assert moved == digests[names[1]]
    assert open_store().get_manifest(names[0]).config["task"] == names[1]
    store.delete_ref(names[1])
    assert open_store().list_refs() == sorted(set(names) - {names[1]})
    assert open_store().get_manifest(names[1]) is None
    # The manifest itself stays until gc: another ref still reaches it.
    assert open_store().manifest(moved) is not None


def test_delete_ref_does_not_touch_similar_names(open_store):
    store = open_store()
    for name in ["a", "a/b", "ab", "a.b"]:
        store.put_manifest(name, a_manifest(config={"name": name}))
    store.delete_ref("a")
    assert open_store().list_refs() == ["a.b", "a/b", "ab"]


def test_list_refs_of_a_new_store_is_empty(open_store):
    assert open_store().list_refs() == []
    assert open_store(mode="r").tasks() == []


def test_empty_ref_name_is_refused(local_url):
    store = local_url.open()
    with pytest.raises((rs.StoreError, ValueError)):
        store.put_manifest("", a_manifest())


def test_manifest_with_non_finite_config_value(local_url):
    store = local_url.open()
    store.put_manifest("t", a_manifest(config={"threshold": float("nan"), "limit": float("inf")}))
    config = local_url.open().get_manifest("t").config
    assert config["limit"] == float("inf")
    assert config["threshold"] != config["threshold"]


@pytest.mark.parametrize(
    "name",
    ["実験/セグメンテーション/閾値スイープ/シグマ一点五/しきい値零点三", "/".join(["sweep-sigma"] * 22)],
    ids=["34-japanese-chars", "263-ascii-chars"],
)
def test_long_ref_names_on_a_local_store(local_url, name):
    store = local_url.open()
    store.put_manifest(name, a_manifest(config={"task": name}))
    assert local_url.open().list_refs() == [name]
    assert local_url.open().get_manifest(name).config == {"task": name}


# --- browsing tasks ----------------------------------------------------------------------------------

IMAGE = np.arange(2 * 30 * 40, dtype=np.float32).reshape(2, 30, 40)


def write_task(store: rs.Store, name: str = "sweep/a") -> dict:
    """A manifest shaped like the one a task writes: two inputs with an int and a str id."""
    refs = {
        1: {
            "image": store.put_value(IMAGE, field="image"),
            "count": store.put_value(7, field="count"),
            "labels": store.put_value(("a", "b"), field="labels"),
        },
        "img-b": {"image": store.put_value(IMAGE[:, ::2], field="image"), "count": store.put_value(3)},
    }
    times = {1: {"segment": 0.5, "count": 0.25}, "img-b": {"segment": 1.5}}
    manifest = rs.Manifest(
        spec={"runnable": True, "config": {"segment": {"sigma": 1.5}}},
        config={"segment": {"sigma": 1.5}, "ids": [1, "img-b"]},
        stages={"segment": "a" * 40, "count": "b" * 40},
        inputs=[rs.InputEntry(input_id, fields, times[input_id]) for input_id, fields in refs.items()],
    )
    store.put_manifest(name, manifest)
    return refs


def test_task_view(open_store):
    write_task(open_store())
    store = open_store(mode="r")
    assert store.tasks() == ["sweep/a"]
    task = store.task("sweep/a")
    assert isinstance(task, rs.TaskView)
    assert task.name == "sweep/a"
    assert task.input_ids == [1, "img-b"]
    assert [type(input_id) for input_id in task.input_ids] == [int, str]
    assert task.fields == ["count", "image", "labels"]
    assert task.config == {"segment": {"sigma": 1.5}, "ids": [1, "img-b"]}
    assert task.spec["runnable"] is True
    assert task.stages == {"segment": "a" * 40, "count": "b" * 40}
    assert task.times == {"segment": {1: 0.5, "img-b": 1.5}, "count": {1: 0.25}}
    assert abs(task.created - time.time()) < 600  # when the ref was written
    assert set(task.refs(1)) == {"image", "count", "labels"}
    assert_same(task.field(1, "image"), IMAGE)
    assert_same(task.field("img-b", "image"), IMAGE[:, ::2].copy())
    assert task.field(1, "count") == 7
    assert task.field(1, "labels") == ("a", "b")
    lazy = task.field(1, "image", lazy=True)
    assert isinstance(lazy, zarr.Array)
    np.testing.assert_array_equal(lazy[1, 10:12, :5], IMAGE[1, 10:12, :5])
    assert "sweep/a" in repr(task)


def test_task_load_subsets(open_store):
    write_task(open_store())
    task = open_store(mode="r").task("sweep/a")
    everything = task.load()
    assert list(everything) == [1, "img-b"]
    assert set(everything[1]) == {"image", "count", "labels"}
    assert set(everything["img-b"]) == {"image", "count"}
    assert_same(everything[1]["image"], IMAGE)
    subset = task.load(input_ids=["img-b"], fields=["count"])
    assert subset == {"img-b": {"count": 3}}
    lazy = task.load(input_ids=[1], fields=["image", "count"], lazy=True)
    assert isinstance(lazy[1]["image"], zarr.Array)
    assert lazy[1]["count"] == 7


def test_task_view_errors_name_what_is_missing(open_store):
    write_task(open_store())
    store = open_store(mode="r")
    with pytest.raises(rs.StoreError, match="no/such/task") as error:
        store.task("no/such/task")
    assert "sweep/a" in str(error.value)  # lists the tasks there are
    task = store.task("sweep/a")
    with pytest.raises(KeyError, match="99"):
        task.field(99, "image")
    with pytest.raises(KeyError, match="'1'"):
        task.field("1", "image")  # the str id '1' is not the int id 1
    with pytest.raises(KeyError, match="nosuchfield"):
        task.field(1, "nosuchfield")
    with pytest.raises(KeyError, match="labels"):
        task.field("img-b", "labels")
    with pytest.raises(KeyError, match="42"):
        task.load(input_ids=[1, 42])
    with pytest.raises(KeyError, match="ghost"):
        task.load(fields=["ghost"])


# --- modes and errors ------------------------------------------------------------------------------


def test_read_only_open_of_a_missing_local_store_creates_nothing(tmp_path):
    missing = tmp_path / "nowhere" / "store"
    with pytest.raises(rs.StoreMissingError, match="nowhere"):
        rs.open(str(missing), mode="r")
    assert not (tmp_path / "nowhere").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(rs.StoreMissingError):
        rs.open(str(empty), mode="r")
    assert list(empty.iterdir()) == []
    with pytest.raises(rs.StoreMissingError):
        rs.open(f"file://{missing}", mode="r")
    assert not (tmp_path / "nowhere").exists()


def test_read_only_open_of_a_missing_remote_store(store_url):
    with pytest.raises(rs.StoreMissingError):
        store_url.open(mode="r")
    # Nothing was created: a later read-only open still finds no store, a writable one creates it.
    with pytest.raises(rs.StoreMissingError):
        store_url.open(mode="r")
    if store_url.backend != "local":
        protocol, path = store_url.url.split("://", 1)
        options = {"endpoint_url": store_url.storage_options["endpoint_url"]} if store_url.storage_options else {}
        filesystem = fsspec.filesystem(protocol, skip_instance_cache=True, **options)
        assert filesystem.find(path.split("/", 1)[0] if protocol == "s3" else path) == []
    assert store_url.open(mode="a").list_refs() == []
    assert store_url.open(mode="r").read_only


def test_read_only_store_refuses_writes(open_store):
    writer = open_store()
    present = writer.put_value(np.arange(3.0))
    record_key = key({"w": 1})
    writer.put_record(record_key, {"v": present}, 1.0)
    writer.put_manifest("t", a_manifest())
    store = open_store(mode="r", pack_limit=None)  # packed values need no write, blobs do
    assert store.read_only
    assert "read-only" in repr(store)
    before = sorted(store.backend.list_prefix(""))
    attempts = {
        "put_value": lambda: store.put_value(np.arange(4.0), field="x"),
        "put_value pickle": lambda: store.put_value(Point(1, 2)),
        "put_value rewrite": lambda: store.put_value(np.arange(3.0), rewrite=True),
        "put_record": lambda: store.put_record(key({"w": 2}), {"v": present}, 1.0),
        "put_manifest": lambda: store.put_manifest("u", a_manifest()),
        "delete_ref": lambda: store.delete_ref("t"),
        "delete_record": lambda: store.delete_record(record_key),
    }
    for name, attempt in attempts.items():
        with pytest.raises(rs.ReadOnlyError, match="read-only"):
            attempt()
            pytest.fail(name)
    assert sorted(store.backend.list_prefix("")) == before
    # Reading still works, and values that need no write are merely described.
    assert_same(store.get_value(present), np.arange(3.0))
    assert store.put_value({"small": 1})["value"] == {"small": 1}
    assert store.get_record(record_key).outputs == {"v": present}
    assert store.list_refs() == ["t"]


def test_invalid_mode_is_refused(local_url):
    with pytest.raises(ValueError, match="mode"):
        local_url.open(mode="w")


def test_unknown_protocol_fails_fast():
    start = time.monotonic()
    with pytest.raises(rs.StoreError, match="nosuchproto"):
        rs.open("nosuchproto://x")
    assert time.monotonic() - start < 5


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_s3_endpoint(s3_server):
    secret = "sEcReT-do-not-print-9f8e7d"
    options = {"endpoint_url": f"http://127.0.0.1:{closed_port()}", "key": "AKIDTESTKEYID", "secret": secret}
    start = time.monotonic()
    with pytest.raises(rs.StoreUnavailableError) as error:
        rs.open("s3://unreachable-bucket/some/store", storage_options=options)
    assert time.monotonic() - start < 30
    message = str(error.value)
    assert "s3://unreachable-bucket/some/store" in message
    assert secret not in message
    assert "AKIDTESTKEYID" not in message
    assert secret not in "".join(traceback.format_exception(error.value))


def test_read_only_open_in_a_missing_bucket(s3_server):
    with pytest.raises(rs.StoreMissingError, match="no-such-bucket"):
        rs.open(
            f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/store", storage_options=s3_server.storage_options, mode="r"
        )


def test_writable_open_in_a_missing_bucket(s3_server):
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/store"
    with pytest.raises(rs.StoreError, match="no-such-bucket"):
        rs.open(url, storage_options=s3_server.storage_options)


def test_store_errors_are_not_value_errors():
    for error in [
        rs.StoreError,
        rs.IntegrityError,
        rs.ReadOnlyError,
        rs.StoreUnavailableError,
        rs.StoreMissingError,
        rs.SerializationError,
        rs.PickleRefusedError,
        rs.KeyMaterialError,
    ]:
        assert issubclass(error, rs.StoreError)
        assert not issubclass(error, ValueError)


def test_a_foreign_zarr_hierarchy_is_not_a_store(tmp_path):
    zarr.open_group(str(tmp_path / "foreign"), mode="w", zarr_format=3).attrs["other"] = 1
    with pytest.raises(rs.StoreError, match="not a repype store"):
        rs.open(str(tmp_path / "foreign"))
    with pytest.raises(rs.StoreError, match="not a repype store"):
        rs.open(str(tmp_path / "foreign"), mode="r")


def test_compressors(local_url):
    value = np.tile(np.arange(100, dtype=np.int64), 50)
    digests = set()
    for compressor in ["zstd", "zstd:5", "blosc-lz4", "none"]:
        store = local_url.open(compressor=compressor)
        ref = store.put_value(value, rewrite=True)
        digests.add(ref["digest"])
        assert_same(local_url.open(mode="r").get_value(ref), value)
    assert len(digests) == 1  # the digest is of the content, not of its compressed bytes
    with pytest.raises(rs.StoreError, match="nosuchcodec"):
        local_url.open(compressor="nosuchcodec")


def test_file_url_and_plain_path_are_the_same_store(tmp_path):
    path = tmp_path / "store"
    ref = rs.open(f"file://{path}").put_value(np.arange(3))
    assert_same(rs.open(str(path), mode="r").get_value(ref), np.arange(3))


# --- the store is a plain Zarr hierarchy ---------------------------------------------------------


def test_plain_zarr_can_walk_the_store(local_url):
    store = local_url.open(pack_limit=None)  # a tiny array is then an array node too
    value = np.linspace(0, 1, 3 * 70).reshape(3, 70)
    ref = store.put_value(value, field="signal")
    store.put_record(key({"z": 1}), {"signal": ref}, 0.5, stage="s")
    store.put_manifest("a/b", a_manifest({1: {"signal": ref}}))
    root = zarr.open_group(local_url.url, mode="r")
    assert root.attrs["repype"]["format"] >= 1
    assert {"blobs", "records", "manifests", "refs"} <= set(root.group_keys())
    array = root[f"blobs/{ref['digest'][:2]}/{ref['digest']}"]
    assert isinstance(array, zarr.Array)
    assert array.dtype == value.dtype
    assert array.shape == value.shape
    np.testing.assert_array_equal(array[...], value)
    assert array.attrs["repype"]["digest"] == ref["digest"]
    # Every node can be visited by a generic client.
    members = dict(root.members(max_depth=None))
    assert f"blobs/{ref['digest'][:2]}/{ref['digest']}" in members
    assert any(path.startswith("records/") for path in members)
    assert any(path.startswith("refs/") for path in members)
    assert any(path.startswith("manifests/") for path in members)


# --- more codec details ---------------------------------------------------------------------------


def test_failing_codec_names_field_and_codec(local_url):
    class Broken(rs.FieldCodec):
        name = "test-broken"
        types = (Celsius,)

        def encode(self, value):
            raise RuntimeError("cannot encode this one")

    rs.register_codec(Broken())
    try:
        with pytest.raises(rs.SerializationError, match="temperature") as error:
            local_url.open().put_value(Celsius(1.0), field="temperature")
    finally:
        rs.unregister_codec("test-broken")
    assert "test-broken" in str(error.value)


@pytest.mark.parametrize(
    ("text", "inline"),
    [("x" * 1022, True), ("x" * 1023, False), ("é" * 511, True), ("é" * 512, False)],
    ids=["1024-bytes", "1025-bytes", "1024-utf8-bytes", "1026-utf8-bytes"],
)
def test_inline_limit_counts_utf8_bytes(local_url, text, inline):
    store = local_url.open(pack_limit=None)  # packing inlines JSON up to the pack limit
    ref = store.put_value(text)
    assert ("value" in ref) is inline
    assert len(blob_digests(store)) == (0 if inline else 1)
    assert local_url.open().get_value(ref) == text


def test_multi_chunk_array(tmp_path):
    store = rs.open(str(tmp_path / "store"))
    value = np.arange(1100 * 600, dtype=np.float64).reshape(1100, 600)  # > 4 MiB: several chunks
    ref = store.put_value(value, field="big")
    chunks = store.backend.list_prefix(f"blobs/{ref['digest'][:2]}/{ref['digest']}/c")
    assert len(chunks) > 1
    fresh = rs.open(str(tmp_path / "store"), mode="r")
    assert_same(fresh.get_value(ref), value)
    lazy = fresh.get_value(ref, lazy=True)
    np.testing.assert_array_equal(lazy[540:560, 590:], value[540:560, 590:])


def test_lazy_array_is_read_only(local_url):
    store = local_url.open(pack_limit=None)  # packed arrays load as numpy arrays even with lazy
    ref = store.put_value(np.arange(10.0))
    lazy = store.get_value(ref, lazy=True)
    with pytest.raises(Exception):  # noqa: B017 - zarr's own read-only error
        lazy[0] = 99.0
    assert_same(local_url.open().get_value(ref), np.arange(10.0))


def test_returned_arrays_are_independent(local_url):
    store = local_url.open()
    ref = store.put_value(np.arange(5))
    first = store.get_value(ref)
    if first.flags.writeable:
        first[0] = 100
    assert_same(store.get_value(ref), np.arange(5))


DIGEST_SCRIPT = """
import json, sys
import numpy as np
import repype.store as rs
from repype.store import codecs
values = {
    "array": np.arange(5.0),
    "json": {"b": [1, 2], "a": None},
    "tuple": (1, "x"),
    "str-set": {"alpha", "beta", "gamma", "delta", "epsilon"},
}
print(json.dumps({
    "digests": {name: codecs.encode(value).ref["digest"] for name, value in values.items()},
    "key": rs.stage_key("a" * 40, {"s": {"alpha", "beta", "gamma"}, "t": (1, 2)}, {"x": "f" * 32}),
}))
"""


@pytest.fixture(scope="module")
def digests_of_two_processes() -> tuple[dict, dict]:
    """What two processes with different hash seeds compute (run at the same time)."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", DIGEST_SCRIPT],
            env={**os.environ, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("1", "2")
    ]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        results.append(json.loads(stdout))
    return results[0], results[1]


def test_keys_and_digests_are_stable_across_processes(digests_of_two_processes):
    first, second = digests_of_two_processes
    assert first["key"] == second["key"]
    for name in ["array", "json", "tuple"]:
        assert first["digests"][name] == second["digests"][name], name


def test_set_digest_is_stable_across_processes(digests_of_two_processes):
    first, second = digests_of_two_processes
    assert first["digests"]["str-set"] == second["digests"]["str-set"]


# --- credentials ------------------------------------------------------------------------------------


def test_redact_removes_user_info():
    assert backend.redact("s3://AKID:secretvalue@bucket/prefix") == "s3://bucket/prefix"
    assert backend.redact("http://user:pw@host:8080/x") == "http://host:8080/x"
    assert backend.redact("s3://bucket/prefix") == "s3://bucket/prefix"


def test_credentials_are_never_written_or_shown(s3_server):
    secret = "uNiQuE-SeCrEt-5a4b3c"
    options = {**s3_server.storage_options, "key": "AKIDUNIQUE0123", "secret": secret}
    url = f"s3://{s3_server.new_bucket()}/store"
    store = rs.open(url, storage_options=options)
    ref = store.put_value(np.arange(4.0))
    store.put_record(key({"c": 1}), {"v": ref}, 1.0)
    store.put_manifest("t", a_manifest({1: {"v": ref}}))
    assert store.url == url
    assert secret not in repr(store)
    everything = store.backend.get_many(store.backend.list_prefix(""))
    blob = b"".join(data for data in everything.values() if data)
    for text in [secret, "AKIDUNIQUE0123", s3_server.endpoint_url]:
        assert text.encode() not in blob
