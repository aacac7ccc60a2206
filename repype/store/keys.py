"""Stage-execution keys: SHA-1 of a canonical JSON document (see :mod:`repype.canonical`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from repype.canonical import canonical as canonical_form
from repype.store.errors import KeyMaterialError

KEY_SCHEMA_VERSION = 2
"""Version of the key document; part of every key, so a new key computation never collides with old records.

2: `Stage.sha` covers the user code a stage reaches; the document records the versions of the
installed distributions it reaches (`distributions`).
"""


def canonical(value: Any) -> Any:
    """`value` in canonical form (see :mod:`repype.canonical`); raises KeyMaterialError when it has none."""
    try:
        return canonical_form(value)
    except TypeError as error:
        raise KeyMaterialError(f"{error} for a store key") from None


def key_document(
    stage_sha: str,
    hyperparameters: Mapping[str, Any],
    inputs: Mapping[str, str],
    extra: Any = None,
    distributions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The document a stage-execution key is the SHA-1 of (see :func:`document_key`); records store it."""
    return {
        "schema": KEY_SCHEMA_VERSION,
        "stage": stage_sha,
        "hyperparameters": canonical(dict(hyperparameters)),
        "inputs": {name: str(digest) for name, digest in inputs.items()},
        "extra": canonical(extra),
        "distributions": {str(name): str(version) for name, version in (distributions or {}).items()},
    }


def stage_key(
    stage_sha: str,
    hyperparameters: Mapping[str, Any],
    inputs: Mapping[str, str],
    extra: Any = None,
    distributions: Mapping[str, str] | None = None,
) -> str:
    """Key of a stage execution: SHA-1 hex of the canonical JSON of :func:`key_document`.

    Args:
        stage_sha: The stage's implementation hash (`Stage.sha`).
        hyperparameters: The stage's hyperparameters as adopted for the input.
        inputs: Content digest of every field the stage reads, by field name.
        extra: Extra key material the stage declares (`Stage.key_material`), or None.
        distributions: Versions of the installed distributions the stage's code reaches, by
            name (`Stage.signature["distributions"]`; `Stage.sha` covers them too, the
            document names them so that a changed version can be explained).
    """
    return document_key(key_document(stage_sha, hyperparameters, inputs, extra, distributions))


def document_key(document: Mapping[str, Any]) -> str:
    """The key a :func:`key_document` hashes to: SHA-1 hex of its JSON with sorted keys (ASCII escapes).

    The one way a key is computed: runs compute keys with it, `verify` recomputes the key of a
    record from the document stored in it.
    """
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()
