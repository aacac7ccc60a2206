"""Stage-execution keys: SHA-1 of a canonical JSON document.

The canonical form preserves types: the int `1`, the float `1.0` and the string `"1"` differ;
dict key order never matters; tuples, sets, bytes, numpy scalars and dicts with non-string
keys are tagged, so that no two different values share a form.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from repype.store.errors import KeyMaterialError

KEY_SCHEMA_VERSION = 1
"""Version of the key document; part of every key, so a new key computation never collides with old records."""


def canonical(value: Any) -> Any:
    """`value` as plain JSON data in a type-preserving canonical form (see the module docstring)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int) and type(value) is int:
        return value
    if isinstance(value, float) and type(value) is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, np.generic):
        return {"$numpy": value.dtype.str, "value": canonical(value.item())}
    if isinstance(value, np.ndarray):
        return {"$ndarray": value.dtype.str, "shape": list(value.shape), "data": canonical(value.tolist())}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    if isinstance(value, tuple):
        return {"$tuple": [canonical(item) for item in value]}
    if isinstance(value, set | frozenset):
        return {"$set": sorted((canonical(item) for item in value), key=canonical_json)}
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, Mapping):
        if all(isinstance(key, str) and not key.startswith("$") for key in value):
            return {key: canonical(item) for key, item in value.items()}
        pairs = [[canonical(key), canonical(item)] for key, item in value.items()]
        return {"$dict": sorted(pairs, key=canonical_json)}
    if hasattr(value, "entries") and isinstance(value.entries, dict):  # repype.config.Config
        return canonical(value.entries)
    raise KeyMaterialError(f"{type(value).__name__} value {value!r} has no canonical form for a store key")


def canonical_json(value: Any) -> str:
    """Canonical JSON text of `value`: sorted keys, fixed separators, type-preserving (see :func:`canonical`)."""
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def key_document(
    stage_sha: str, hyperparameters: Mapping[str, Any], inputs: Mapping[str, str], extra: Any = None
) -> dict[str, Any]:
    """The document a stage-execution key is the SHA-1 of (useful to explain a key)."""
    return {
        "schema": KEY_SCHEMA_VERSION,
        "stage": stage_sha,
        "hyperparameters": canonical(dict(hyperparameters)),
        "inputs": {name: str(digest) for name, digest in inputs.items()},
        "extra": canonical(extra),
    }


def stage_key(stage_sha: str, hyperparameters: Mapping[str, Any], inputs: Mapping[str, str], extra: Any = None) -> str:
    """Key of a stage execution: SHA-1 hex of the canonical JSON of :func:`key_document`.

    Args:
        stage_sha: The stage's implementation hash (`Stage.sha`).
        hyperparameters: The stage's hyperparameters as adopted for the input.
        inputs: Content digest of every field the stage reads, by field name.
        extra: Extra key material the stage declares (`Stage.key_material`), or None.
    """
    text = json.dumps(key_document(stage_sha, hyperparameters, inputs, extra), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def document_digest(document: Any) -> str:
    """SHA-1 hex of the canonical JSON of `document` (manifests are addressed by it)."""
    return hashlib.sha1(canonical_json(document).encode("utf-8")).hexdigest()
