"""The formats of stage records, task manifests and refs: one place writes and parses each.

* A **record** (`records/<k[:2]>/<key>/zarr.json`) says what one stage execution produced: the
  references of its outputs, its run time, when it was written, the stage's id and (format 2)
  the key document the record's key is the SHA-1 of, and the repype version that wrote it.
* A **manifest** describes a completed task. Format 2 (written since store format 2) is a small
  header (`manifests/<m[:2]>/<digest>/zarr.json`: spec, config, stage hashes, input ids, field
  names and the digests of its shards) and shards of :data:`SHARD_SIZE` inputs each
  (`.../<digest>/<index>/zarr.json`: for every input its value references, run times and record
  keys), so opening a task and reading one input costs the same whatever the task's size. The
  manifest's digest is the SHA-1 of its header's canonical JSON, which holds the digests of the
  shards: equal manifests share a digest, and nothing in it depends on the time. Format 1 (one
  document holding everything) is converted on read.
* A **ref** (`refs/<quoted name>/zarr.json`) names the manifest of a task and says when it was
  pointed there.

Every parser raises :class:`IntegrityError` naming the node when its document is damaged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from repype.canonical import canonical, from_canonical
from repype.store import layout
from repype.store.codecs import ValueRef
from repype.store.errors import IntegrityError
from repype.typing import InputID

MANIFEST_FORMAT = 2
"""The manifest format written here (header and shards); format 1 is read too."""

SHARD_SIZE = 256
"""Inputs per manifest shard: one shard read per input loaded, a few dozen KB each."""


@contextlib.contextmanager
def _reading(what: str) -> Iterator[None]:
    """Turns the errors of reading a malformed document into one IntegrityError naming `what`."""
    try:
        yield
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
        raise IntegrityError(f"{what} is damaged: {error}") from error


# --- records ---------------------------------------------------------------------------------------


RECORD_FORMAT = 2
"""The record format written here. 2: a record holds the key document of its execution and the
repype version that wrote it; records of format 1 (no `format` field) have neither, and read with None."""


@dataclass(frozen=True)
class Record:
    """A stage execution: the references of its outputs by field, its run time, when it was written.

    `stage` is the stage's id; `document` the key document its key is the SHA-1 of
    (:func:`repype.store.keys.key_document`: stage sha, hyperparameters as adopted, digests of the
    fields read, key material, distributions, key schema); `version` the repype version that wrote
    it. Records written before format 2 have neither (None): they explain less.
    """

    key: str
    outputs: dict[str, ValueRef]
    run_time: float
    created: float
    stage: str | None = None
    document: dict[str, Any] | None = None
    version: str | None = None


def record_document(record: Record) -> bytes:
    """The `zarr.json` bytes of the node of `record` (format :data:`RECORD_FORMAT`)."""
    document = {
        "format": RECORD_FORMAT,
        "outputs": record.outputs,
        "run_time": record.run_time,
        "created": record.created,
        "stage": record.stage,
        "document": record.document,
        "repype": record.version,
    }
    return layout.group_document({"repype_record": document})


def parse_record(key: str, metadata: bytes) -> Record:
    """The record `key` from the `zarr.json` bytes of its node (format 1 or 2); raises IntegrityError when damaged."""
    with _reading(f"stage record {key}"):
        document = layout.read_attributes(metadata)["repype_record"]
        if document.get("format", 1) not in (1, RECORD_FORMAT):
            raise ValueError(f"unknown record format {document['format']!r}")
        outputs = document["outputs"]
        if not isinstance(outputs, dict) or not all(
            isinstance(ref, dict) and "digest" in ref for ref in outputs.values()
        ):
            raise TypeError("its outputs are not value references")
        derivation = document.get("document")
        if derivation is not None and not isinstance(derivation, dict):
            raise TypeError("its key document is not a mapping")
        return Record(
            key,
            outputs,
            float(document["run_time"]),
            float(document["created"]),
            document.get("stage"),
            derivation,
            document.get("repype"),
        )


# --- leases ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    """A running writer: since when it writes (`started`) and when it last said it still does (`renewed`)."""

    id: str
    started: float
    renewed: float
    host: str
    pid: int


def lease_document(lease: Lease) -> bytes:
    """The `zarr.json` bytes of the node of `lease`."""
    document = {"started": lease.started, "renewed": lease.renewed, "host": lease.host, "pid": lease.pid}
    return layout.group_document({"repype_lease": document})


def parse_lease(lease_id: str, metadata: bytes) -> Lease:
    """The lease `lease_id` from the `zarr.json` bytes of its node; raises IntegrityError when damaged."""
    with _reading(f"writer lease {lease_id}"):
        document = layout.read_attributes(metadata)["repype_lease"]
        started, renewed = float(document["started"]), float(document["renewed"])
        return Lease(lease_id, started, renewed, str(document["host"]), int(document["pid"]))


# --- refs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A task's name, the digest of its manifest, and when the ref was pointed at it (seconds since the epoch)."""

    name: str
    manifest: str
    created: float


def ref_document(ref: Ref) -> bytes:
    """The `zarr.json` bytes of the node of `ref`."""
    return layout.group_document({"repype_ref": {"name": ref.name, "manifest": ref.manifest, "created": ref.created}})


def parse_ref(path: str, metadata: bytes) -> Ref:
    """The ref stored at node `path`; raises IntegrityError naming `path` when damaged.

    Refs of format 1 said `updated` where this format says `created`.
    """
    with _reading(f"ref {path}"):
        document = layout.read_attributes(metadata)["repype_ref"]
        created = document["created"] if "created" in document else document["updated"]
        name, digest = document["name"], document["manifest"]
        if not isinstance(name, str) or not isinstance(digest, str):
            raise TypeError("name and manifest must be strings")
        return Ref(name, digest, float(created))


# --- manifests -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputEntry:
    """What a manifest holds for one input: its field references, stage run times and record keys."""

    input_id: InputID
    refs: dict[str, ValueRef]
    times: dict[str, float] = field(default_factory=dict)
    records: list[str] = field(default_factory=list)


@dataclass
class Manifest:
    """A completed task: the spec adopted for the config, the config, stage hashes and every input."""

    spec: dict[str, Any]
    config: dict[str, Any]
    stages: dict[str, str]
    inputs: list[InputEntry]

    @property
    def input_ids(self) -> list[InputID]:
        """The input ids, in the task's order."""
        return [entry.input_id for entry in self.inputs]

    @property
    def fields(self) -> list[str]:
        """Names of the stored fields (of any input), sorted."""
        return sorted({name for entry in self.inputs for name in entry.refs})

    @property
    def records(self) -> set[str]:
        """Keys of every stage record the task reached."""
        return {key for entry in self.inputs for key in entry.records}


@dataclass
class ManifestHeader:
    """What a manifest says about the whole task, without its inputs' entries.

    `shards` are the digests of the shards in order (shard `i` holds the entries of
    `input_ids[i * shard_size:(i + 1) * shard_size]`); a format-1 manifest has no shards and
    its converted entries in `entries`.
    """

    digest: str
    format: int
    spec: dict[str, Any]
    config: dict[str, Any]
    stages: dict[str, str]
    input_ids: list[InputID]
    fields: list[str]
    shards: list[str]
    shard_size: int = SHARD_SIZE
    entries: list[InputEntry] | None = None
    _index: dict[InputID, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index = {input_id: index for index, input_id in enumerate(self.input_ids)}

    def __contains__(self, input_id: object) -> bool:
        return input_id in self._index

    def shard_of(self, input_id: InputID) -> int:
        """The index of the shard that holds `input_id` (KeyError when the task has no such input)."""
        return self._index[input_id] // self.shard_size


@dataclass(frozen=True)
class EncodedManifest:
    """A manifest as the store writes it: shard documents first, the header (the commit point) last."""

    digest: str
    header: bytes
    shards: list[bytes]


def _text(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _digest(document: Any) -> str:
    """SHA-1 of the canonical text of a document that is already in canonical form."""
    return hashlib.sha1(_text(document).encode("utf-8")).hexdigest()


def _entry_document(entry: InputEntry) -> list[Any]:
    if any(name.startswith("$") for name in entry.refs):
        refs = canonical(entry.refs)
    else:
        refs = {name: _canonical_ref(ref) for name, ref in entry.refs.items()}
    return [canonical(entry.input_id), refs, canonical(entry.times), sorted(set(entry.records))]


_PLAIN = (str, bool, int)


def _canonical_ref(ref: ValueRef) -> Any:
    """:func:`canonical` of a value reference, without walking the common ones.

    A reference of plain strings, bools, ints and lists of ints (an array's shape) is its own
    canonical form; others (inline JSON values, tagged documents) are walked.
    """
    for key, item in ref.items():
        kind = type(item)
        plain = kind in _PLAIN or (kind is list and all(type(size) is int for size in item))
        if not plain or key.startswith("$"):
            return canonical(ref)
    return ref


def encode_manifest(manifest: Manifest, shard_size: int = SHARD_SIZE) -> EncodedManifest:
    """The documents of `manifest` in format 2 and its digest (no time in it: equal manifests, equal digests)."""
    shard_documents = [
        {
            "format": MANIFEST_FORMAT,
            "inputs": [_entry_document(entry) for entry in manifest.inputs[start : start + shard_size]],
        }
        for start in range(0, len(manifest.inputs), shard_size)
    ]
    header = {
        "format": MANIFEST_FORMAT,
        "spec": canonical(manifest.spec),
        "config": canonical(manifest.config),
        "stages": canonical(manifest.stages),
        "input_ids": canonical(manifest.input_ids),
        "fields": manifest.fields,
        "shard_size": shard_size,
        "shards": [_digest(document) for document in shard_documents],
    }
    return EncodedManifest(
        _digest(header),
        layout.group_document({"repype_manifest": header}),
        [layout.group_document({"repype_manifest_shard": document}) for document in shard_documents],
    )


def parse_manifest(digest: str, metadata: bytes) -> ManifestHeader:
    """The header of the manifest `digest` from its node's `zarr.json` bytes (format 1 converted).

    Raises IntegrityError naming the manifest when the document is damaged or does not match its digest.
    """
    where = f"manifest {digest}"
    with _reading(where):
        document = layout.read_attributes(metadata)["repype_manifest"]
        if "format" not in document:
            return _header_from_format1(digest, document)
        if document["format"] != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {document['format']!r}")
        if _digest(document) != digest:
            raise ValueError("its content does not match its digest")
        return ManifestHeader(
            digest,
            document["format"],
            from_canonical(document["spec"]),
            from_canonical(document["config"]),
            from_canonical(document["stages"]),
            from_canonical(document["input_ids"]),
            list(document["fields"]),
            list(document["shards"]),
            int(document["shard_size"]),
        )


def parse_shard(header: ManifestHeader, index: int, metadata: bytes | None) -> list[InputEntry]:
    """The entries of shard `index` of the manifest `header`; raises IntegrityError when missing or damaged."""
    where = f"manifest {header.digest}, shard {index}"
    if metadata is None:
        raise IntegrityError(f"{where} is missing from the store")
    with _reading(where):
        document = layout.read_attributes(metadata)["repype_manifest_shard"]
        if _digest(document) != header.shards[index]:
            raise ValueError("its content does not match its digest")
        entries = [_entry_from_document(item) for item in document["inputs"]]
    expected = header.input_ids[index * header.shard_size : (index + 1) * header.shard_size]
    if [entry.input_id for entry in entries] != expected:
        raise IntegrityError(f"{where} is damaged: it holds other inputs than its header says")
    return entries


def _entry_from_document(item: list[Any]) -> InputEntry:
    input_id, refs, times, records = item
    return InputEntry(from_canonical(input_id), from_canonical(refs), from_canonical(times), list(records))


def manifest_from_format1(document: Mapping[str, Any]) -> Manifest:
    """The manifest a format-1 document describes (as repype wrote them before format 2).

    `inputs` holds `[input_id, refs]` pairs, `times` `[stage, input_id, seconds]` triples and
    `records` the task's record keys (given to the first input); `spec`, `config` and `stages`
    default to empty; `created` is dropped (a manifest's identity holds no time).
    """
    times: dict[InputID, dict[str, float]] = {}
    for stage_id, input_id, seconds in document.get("times", []):
        times.setdefault(input_id, {})[stage_id] = seconds
    records = list(document.get("records", []))
    entries = [
        InputEntry(input_id, refs, times.get(input_id, {}), records if index == 0 else [])
        for index, (input_id, refs) in enumerate(document["inputs"])
    ]
    return Manifest(document.get("spec", {}), document.get("config", {}), document.get("stages", {}), entries)


def _header_from_format1(digest: str, document: dict[str, Any]) -> ManifestHeader:
    """A format-1 manifest (one tagged document with every input) as a header holding its entries."""
    manifest = manifest_from_format1(from_canonical(document))
    return ManifestHeader(
        digest,
        1,
        manifest.spec,
        manifest.config,
        manifest.stages,
        manifest.input_ids,
        manifest.fields,
        [],
        0,
        manifest.inputs,
    )


def manifest_of(header: ManifestHeader, entries: list[InputEntry]) -> Manifest:
    """The whole manifest from its header and the entries of all its shards."""
    return Manifest(header.spec, header.config, header.stages, entries)
