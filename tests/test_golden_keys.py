"""Golden values: content digests and stage keys must not change by accident.

A stage key or value digest that changes silently orphans every record in existing stores.
Digests of values are fixed for good; stage keys are fixed per `KEY_SCHEMA_VERSION` (a bump of
the key schema is the one deliberate way to change them, and must change them).
"""

from __future__ import annotations

import numpy as np
import pytest

from repype.config import Config
from repype.store import codecs, keys

STAGE_KEYS_V1 = {
    "with-everything": "b4fd3b76c7e8a72dc74ea49fa58d37877a36c3a8",
    "bare": "fc51d1dc4553c75994ff526b68edf40f8ddba45b",
}

STAGE_KEY_ARGUMENTS = {
    "with-everything": (
        "a" * 40,
        {"sigma": 1.5, "n": [1, 2], "t": (1, "x")},
        {"input_id": "0" * 32, "raw": "f" * 32},
        {"file": "abc"},
    ),
    "bare": ("b" * 40, {}, {"input_id": "1" * 32}, None),
}


@pytest.mark.parametrize("case", sorted(STAGE_KEYS_V1))
def test_stage_keys_are_locked_per_key_schema(case):
    stage_sha, hyperparameters, inputs, extra = STAGE_KEY_ARGUMENTS[case]
    key = keys.stage_key(stage_sha, hyperparameters, inputs, extra=extra)
    if keys.KEY_SCHEMA_VERSION == 1:
        assert key == STAGE_KEYS_V1[case]
    else:  # a new key schema must not collide with the records of the old one
        assert key != STAGE_KEYS_V1[case]


def test_stage_key_ignores_key_order():
    stage_sha, hyperparameters, inputs, extra = STAGE_KEY_ARGUMENTS["with-everything"]
    reordered = dict(reversed(list(hyperparameters.items())))
    assert keys.stage_key(stage_sha, reordered, dict(reversed(list(inputs.items()))), extra=extra) == keys.stage_key(
        stage_sha, hyperparameters, inputs, extra=extra
    )


ARRAY_DIGESTS = [
    (np.arange(6, dtype=np.float32).reshape(2, 3), "0015553f2f4542d077360f0ea007ab51"),
    (np.array(3.5), "4fd38f518975619421ee257bb1e0e1a6"),
]

VALUE_DIGESTS = [
    (7, "9640b56a839f9b1585a1b0caaf779d23", "json"),
    ("x", "eca2985bd8dae76bde1cd87335e13ccc", "json"),
    ({"a": [1, None, True]}, "13433077fbfaed5691758bfb569d5605", "json"),
    ((1, 2), "55c20ecc48f96adaea3bec33d6a895f7", "tagged"),
    ({1: "a"}, "5907c3f9102fe4005f50a19a787036ad", "tagged"),
    (list(range(400)), "fc8ba1098a5e6ea61af8cd547beb150c", "json"),
    (np.array(["ab", "c"]), "e834484497a39119c95923b0590ad2b9", "ndarray"),
    (b"xyz", "9db4dd61a8f2037ba21c7828aa5b905e", "tagged"),
]


@pytest.mark.parametrize(("array", "digest"), ARRAY_DIGESTS, ids=["float32-2x3", "0-d"])
def test_array_digests_are_locked(array, digest):
    assert codecs.array_digest(array) == digest


@pytest.mark.parametrize(("value", "digest", "codec"), VALUE_DIGESTS, ids=[repr(v[0])[:12] for v in VALUE_DIGESTS])
def test_value_digests_are_locked(value, digest, codec):
    encoded = codecs.encode(value, "field")
    assert (encoded.ref["digest"], encoded.ref["codec"]) == (digest, codec)


def test_canonical_document_digest_is_locked():
    # SHA-1 of the canonical JSON of a tagged document: what Config.sha (and so Task.compute_sha) computes
    assert Config({"a": (1, 2), "b": float("nan")}).sha == "7a1aaa12664adc2e1621197f8b203a93d76e48b4"
