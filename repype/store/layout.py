"""Where things live in the store's Zarr hierarchy.

    zarr.json                           root group (attributes: repype format)
    blobs/<d[:2]>/<digest>/             a value: a Zarr array (chunks first, metadata last)
    records/<k[:2]>/<key>/zarr.json     a stage record: a group whose attributes are the record
    manifests/<m[:2]>/<digest>/zarr.json  a task manifest's header (group attributes), written last
    manifests/<m[:2]>/<digest>/<i>/zarr.json  shard i of that manifest (inputs' entries)
    refs/<quoted name>/zarr.json        a ref: a group whose attributes name a manifest
    leases/<id>/zarr.json               a running writer's lease (see repype.store.leases)
    claims/<key>.<generation>/zarr.json  a running stage execution's claim (see repype.store.claims)

The documents in records, manifests and refs are defined by :mod:`repype.store.manifests`.

Every directory on the way holds a group `zarr.json`, so any Zarr client can walk the store.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from typing import Any

from repype.canonical import loads_canonical

FORMAT_VERSION = 2
"""The store format this code writes (in the root's attributes). It reads formats 1 and 2:
format 1 differs only in its manifests (one document each), which are converted on read.
A store says the oldest format that can read it under `min_reader_format` (default: its format)."""
SECTIONS = ("blobs", "records", "manifests", "refs")
METADATA = "zarr.json"


def group_document(attributes: dict[str, Any] | None = None) -> bytes:
    """The `zarr.json` of a Zarr v3 group with `attributes`."""
    document = {"zarr_format": 3, "node_type": "group", "attributes": attributes or {}}
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")


def read_attributes(metadata: bytes, tagged: bool = False) -> dict[str, Any]:
    """The attributes of a node from its `zarr.json` bytes; `tagged` decodes canonical forms in them."""
    document = loads_canonical(metadata) if tagged else json.loads(metadata)
    return document.get("attributes", {})


def fanout(section: str, name: str) -> str:
    """The node path of `name` in `section` (two-character fan-out directory)."""
    return f"{section}/{name[:2]}/{name}"


def blob_path(digest: str) -> str:
    """The node path of the value with `digest`."""
    return fanout("blobs", digest)


LEASES = "leases"
"""The section of running writers' leases (see :mod:`repype.store.leases`)."""


def lease_path(lease_id: str) -> str:
    """The node path of the writer lease `lease_id`."""
    return f"{LEASES}/{lease_id}"


CLAIMS = "claims"
"""The section of running stage executions' claims (see :mod:`repype.store.claims`)."""


def claim_path(key: str, generation: int) -> str:
    """The node path of generation `generation` of the claim on the execution `key`."""
    return f"{CLAIMS}/{key}.{generation}"


def record_path(key: str) -> str:
    """The node path of the stage record `key`."""
    return fanout("records", key)


def manifest_path(digest: str) -> str:
    """The node path of the manifest with `digest`."""
    return fanout("manifests", digest)


def shard_path(digest: str, index: int) -> str:
    """The node path of shard `index` of the manifest with `digest`."""
    return f"{manifest_path(digest)}/{index}"


MAX_NODE_NAME = 160
"""Longer quoted ref names are shortened with a hash (file names are limited to 255 bytes)."""


def ref_path(name: str) -> str:
    """The node path of the ref `name` (any non-empty text, e.g. a task path with slashes).

    The ref's document keeps the full name, so the node name need not be reversible.
    """
    node = urllib.parse.quote(name, safe="").replace(".", "%2E")
    if len(node) > MAX_NODE_NAME:
        node = node[: MAX_NODE_NAME - 41] + "~" + hashlib.sha1(name.encode("utf-8")).hexdigest()
    return "refs/" + node


def ref_name_guess(path: str) -> str:
    """The best guess at the name of the ref at node `path` when its document cannot be read: the unquoted node name."""
    return urllib.parse.unquote(path.rsplit("/", 1)[-1])


def metadata_key(path: str) -> str:
    """The key of the `zarr.json` of the node at `path`."""
    return f"{path}/{METADATA}"


def split_node(key: str, section: str) -> str | None:
    """The node name of a key `section/xx/name/...`, or None for keys of intermediate groups."""
    parts = key.split("/")
    return parts[2] if len(parts) >= 4 and parts[0] == section else None
