"""Canonical JSON: one text per value, preserving types.

The int `1`, the float `1.0` and the string `"1"` differ; dict key order never matters;
tuples, sets, bytes, numpy values, dates and dicts with non-string keys are tagged, so that no
two different values share a form. Used for every digest of hyperparameters and specifications.
"""

from __future__ import annotations

import datetime
import json
import math
import sys
from collections.abc import Mapping
from typing import Any


def canonical(value: Any) -> Any:
    """`value` as plain JSON data in a type-preserving canonical form (see the module docstring)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int) and type(value) is int:
        return value
    if isinstance(value, float) and type(value) is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    np = sys.modules.get("numpy")  # no value is a numpy value before numpy is imported
    if np is not None and isinstance(value, np.generic):
        return {"$numpy": value.dtype.str, "value": canonical(value.item())}
    if np is not None and isinstance(value, np.ndarray):
        return {"$ndarray": value.dtype.str, "shape": list(value.shape), "data": canonical(value.tolist())}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    if isinstance(value, tuple):
        return {"$tuple": [canonical(item) for item in value]}
    if isinstance(value, set | frozenset):
        tag = "$frozenset" if isinstance(value, frozenset) else "$set"
        return {tag: sorted((canonical(item) for item in value), key=canonical_json)}
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, Mapping):
        if all(isinstance(key, str) and not key.startswith("$") for key in value):
            return {key: canonical(item) for key, item in value.items()}
        pairs = [[canonical(key), canonical(item)] for key, item in value.items()]
        return {"$dict": sorted(pairs, key=canonical_json)}
    if hasattr(value, "entries") and isinstance(value.entries, dict):  # repype.config.Config
        return canonical(value.entries)
    if isinstance(value, datetime.date | datetime.time):  # YAML reads dates as such
        return {"$" + type(value).__name__: value.isoformat()}
    raise TypeError(f"{type(value).__name__} value {value!r} has no canonical form")


def canonical_json(value: Any) -> str:
    """Canonical JSON text of `value`: sorted keys, fixed separators, type-preserving (see :func:`canonical`)."""
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def from_canonical(document: Any) -> Any:
    """The value of a canonical form (inverse of :func:`canonical` for JSON data, tuples, sets,
    frozensets, bytes, non-finite floats, dicts with any keys and numpy scalars)."""
    if isinstance(document, list):
        return [from_canonical(item) for item in document]
    if isinstance(document, dict):
        return decode_tag({key: from_canonical(item) for key, item in document.items()})
    return document


def loads_canonical(text: str | bytes) -> Any:
    """Parses JSON text holding canonical forms, decoding them as it goes (faster than :func:`from_canonical`)."""
    return json.loads(text, object_hook=decode_tag)


def decode_tag(document: dict) -> Any:
    """The value of one tagged dict whose contents are already decoded; other dicts pass unchanged.

    Every dict with a key starting with `$` is a tag: :func:`canonical` encodes user dicts with
    such keys as `$dict` pairs.
    """
    if "$numpy" in document:
        import numpy as np

        return np.dtype(document["$numpy"]).type(document["value"])
    if len(document) == 1:
        tag, content = next(iter(document.items()))
        decoder = _DECODERS.get(tag)
        if decoder is not None:
            return decoder(content)
    return document


_DECODERS = {
    "$float": float,
    "$tuple": tuple,
    "$set": set,
    "$frozenset": frozenset,
    "$bytes": bytes.fromhex,
    "$dict": lambda pairs: {key: item for key, item in pairs},
}
