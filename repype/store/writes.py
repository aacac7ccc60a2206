"""Batched writes: a stage execution's values and its record in one call into the store's event loop.

A :class:`WriteBatch` (from :meth:`repype.store.Store.batch`) collects what :meth:`put_value` and
:meth:`put_record` would write and :meth:`WriteBatch.commit` writes it with one
:meth:`~repype.store.backend.Backend.set_in_order` call, in three phases whose requests are each
in flight at once: the chunks of the values (and the documents of fan-out groups new to this
store object), then the values' metadata (a value is complete once its metadata exists), then
the records (the commit point of a stage execution). A reader therefore never finds a record
whose values are incomplete, and a writer killed half-way leaves only values nothing reaches
(:meth:`Store.gc` removes them).

Values of more than :data:`SMALL_BLOB_BYTES` are written at once by :meth:`WriteBatch.put_value`
(their chunks compress and write in parallel as they are ready, and an intact copy is reused
after one request asking for it); tiny values are packed into their reference and write nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from repype.store import codecs, layout, manifests
from repype.store.codecs import ValueRef
from repype.store.manifests import Record

if TYPE_CHECKING:
    from repype.store.store import Store

SMALL_BLOB_BYTES = 64 << 10
"""Values up to this size are written in the batch without asking first whether they exist (same
bytes either way); larger ones are written at once, after asking."""


def fanout_group(path: str) -> str:
    """The fan-out group of the node at `path` (`blobs/ab/<digest>` → `blobs/ab`)."""
    return path.rsplit("/", 1)[0]


class WriteBatch:
    """Values and records of `store` to write together with :meth:`commit` (one call into the event loop).

    References and records returned before :meth:`commit` describe what the commit writes; use
    them only once it has returned. A batch can be committed again after more puts.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._groups: list[str] = []
        self._chunks: list[tuple[str, bytes]] = []
        self._metadata: list[tuple[str, bytes]] = []
        self._records: list[Record] = []

    def put_value(self, value: Any, field: str = "", rewrite: bool = False) -> ValueRef:
        """The reference of `value`, its bytes written by :meth:`commit` (large values: at once).

        `rewrite` writes a large value even when a blob of its digest exists (to repair a damaged
        one). Raises :class:`SerializationError` naming `field` when the value cannot be stored.
        """
        store = self.store
        encoded = codecs.encode(value, field, store.pack_limit)
        ref = dict(encoded.ref)
        if encoded.array is None:
            return ref
        digest = ref["digest"]
        path = layout.blob_path(digest)
        from repype.store import blobs  # imported when first needed (zarr is slow to import)

        if encoded.array.nbytes <= SMALL_BLOB_BYTES:  # writing it costs the requests that checking would
            self._groups.append(fanout_group(path))
            metadata = blobs.write_blob_chunks(encoded, store.compressors, self._chunks.extend)
            self._metadata.append((layout.metadata_key(path), metadata))
        elif rewrite or not store._touch_blob(digest):
            store._ensure_groups([fanout_group(path)])
            metadata = blobs.write_blob_chunks(encoded, store.compressors, store.backend.set_many)
            store.backend.set(layout.metadata_key(path), metadata)  # the blob is complete from here on
        ref["stored"] = True
        return ref

    def put_record(
        self,
        key: str,
        outputs: Mapping[str, ValueRef],
        run_time: float,
        stage: str | None = None,
        document: Mapping[str, Any] | None = None,
    ) -> Record:
        """The record of a stage execution under `key`, written by :meth:`commit` after the values.

        See :meth:`repype.store.Store.put_record` for `document`.
        """
        derivation = None if document is None else dict(document)
        record = Record(key, dict(outputs), float(run_time), time.time(), stage, derivation, _version())
        self._groups.append(fanout_group(layout.record_path(key)))
        self._records.append(record)
        return record

    def commit(self) -> None:
        """Writes everything put since the last commit: chunks, then value metadata, then records."""
        if not (self._metadata or self._records):
            return  # nothing was put but packed values and large ones written already
        store = self.store
        groups = store._new_groups(self._groups)
        documents = [(layout.metadata_key(group), layout.group_document()) for group in groups]
        records = [
            (layout.metadata_key(layout.record_path(r.key)), manifests.record_document(r)) for r in self._records
        ]
        store.backend.set_in_order([documents + self._chunks, self._metadata, records])
        store._groups_written(groups)
        store._remember_records(self._records)
        self._groups, self._chunks, self._metadata, self._records = [], [], [], []


def _version() -> str:
    """The repype version records name (read from the package metadata on first use)."""
    from repype.version import VERSION

    return VERSION
