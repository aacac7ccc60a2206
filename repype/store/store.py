"""The content-addressed store: values by content digest, stage records by key, task manifests by ref."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from repype.canonical import from_canonical
from repype.store import blobs, codecs, layout
from repype.store.backend import Backend, local_path
from repype.store.codecs import ValueRef
from repype.store.errors import IntegrityError, PickleRefusedError, StoreError, StoreMissingError
from repype.store.keys import canonical, document_digest

SMALL_BLOB_BYTES = 64 << 10
"""Values up to this size are written without asking first whether they exist (same bytes either way)."""


@dataclass(frozen=True)
class Record:
    """A stage execution: the digests of its outputs by field, its run time, when it was written."""

    key: str
    outputs: dict[str, ValueRef]
    run_time: float
    created: float
    stage: str | None = None


class Store:
    """A repype store: open one with :func:`repype.store.open`.

    Values are stored once per content digest; stage records map a stage-execution key to the
    references of its outputs; manifests describe completed tasks and refs name them. Every
    method is safe to call from many processes and machines at once.
    """

    def __init__(self, backend: Backend, allow_pickle: bool = True, compressor: Any = "zstd") -> None:
        self.backend = backend
        self.allow_pickle = allow_pickle
        self.compressors = blobs.compressors_for(compressor)
        self._groups: set[str] = set()
        self._records: dict[str, Record] = {}
        self._manifests: dict[str, dict] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The store's URL (without credentials)."""
        return self.backend.display_url

    @property
    def read_only(self) -> bool:
        """Whether the store refuses writes."""
        return self.backend.read_only

    def __repr__(self) -> str:
        return f"<repype store {self.url}{' (read-only)' if self.read_only else ''}>"

    # --- groups --------------------------------------------------------------------------------

    def _ensure_groups(self, paths: Iterable[str]) -> None:
        """Writes the `zarr.json` of intermediate groups this process has not seen yet."""
        missing = [path for path in paths if path not in self._groups]
        if not missing:
            return
        section = missing[0].split("/", 1)[0]
        if section not in self._groups:  # one listing tells which fan-out groups exist already
            self._groups.update(f"{section}/{name}" for name in self.backend.list_dir(section))
            self._groups.add(section)
            missing = [path for path in missing if path not in self._groups]
        self.backend.set_many((layout.metadata_key(path), layout.group_document()) for path in missing)
        self._groups.update(missing)

    def _fanout_group(self, path: str) -> str:
        return path.rsplit("/", 1)[0]

    # --- values --------------------------------------------------------------------------------

    def describe(self, value: Any, field: str = "") -> ValueRef:
        """The reference of `value` (its digest and codec) without writing anything.

        Small JSON values are held in the reference itself (`stored` is then True).
        """
        return codecs.encode(value, field).ref

    def put_value(self, value: Any, field: str = "", rewrite: bool = False) -> ValueRef:
        """Stores `value` (once per content) and returns its reference.

        `rewrite` writes it even when a blob of that digest exists (to repair a damaged one).
        Raises :class:`SerializationError` naming `field` when the value cannot be stored.
        """
        encoded = codecs.encode(value, field)
        ref = dict(encoded.ref)
        if encoded.array is None:
            return ref
        digest = ref["digest"]
        path = layout.blob_path(digest)
        # Writing a small blob costs the requests that checking for it would: just write it.
        small = encoded.array.nbytes <= SMALL_BLOB_BYTES
        if rewrite or small or not self._touch_blob(digest):
            self._ensure_groups([self._fanout_group(path)])
            metadata = blobs.write_blob_chunks(encoded, self.compressors, self.backend.set_many)
            self.backend.set(layout.metadata_key(path), metadata)  # the blob is complete from here on
        ref["stored"] = True
        return ref

    def _touch_blob(self, digest: str) -> bool:
        """Whether the blob exists; if so, its metadata is written again (same bytes).

        The fresh modification time tells a concurrent :meth:`gc` that the value is in use
        again. Nothing is remembered between calls: another process's gc may delete any value.
        """
        key = layout.metadata_key(layout.blob_path(digest))
        metadata = self.backend.get(key)
        if metadata is None:
            return False
        self.backend.set(key, metadata)
        return True

    def get_value(self, ref: ValueRef, lazy: bool = False, context: dict[str, Any] | None = None) -> Any:
        """The value of `ref`, verified against its digest.

        With `lazy`, natively stored arrays come back as read-only `zarr.Array` objects that
        read only what is sliced (and are not verified). `context` (`task`, `input`, `field`)
        names the value in errors. Damage raises :class:`IntegrityError`; a pickled value in a
        store opened with `allow_pickle=False` raises :class:`PickleRefusedError`.
        """
        if "value" in ref:
            return codecs.inline_value(ref)
        if not ref.get("stored", False):
            raise StoreError(f"{blobs.where(context)}value {ref['digest']} was never stored")
        if lazy and ref["codec"] == "ndarray" and ref.get("layout") == "native":
            return blobs.lazy_array(self.backend, ref, context)
        payload = blobs.read_payload(self.backend, ref, context)

        def refuse() -> Exception:
            return PickleRefusedError(
                f"{blobs.where(context)}value {ref['digest']} is a pickle, which this store (opened with "
                "allow_pickle=False) refuses to load"
            )

        return codecs.decode(ref, payload, self.allow_pickle, refuse)

    # --- stage records --------------------------------------------------------------------------

    def put_record(self, key: str, outputs: dict[str, ValueRef], run_time: float, stage: str | None = None) -> Record:
        """Records a stage execution under `key`; write its output values first (this is the commit point)."""
        record = Record(key, dict(outputs), float(run_time), time.time(), stage)
        path = layout.record_path(key)
        self._ensure_groups([self._fanout_group(path)])
        document = {
            "repype_record": {
                "outputs": record.outputs,
                "run_time": record.run_time,
                "created": record.created,
                "stage": stage,
            }
        }
        self.backend.set(layout.metadata_key(path), layout.group_document(document))
        with self._lock:
            self._records[key] = record
        return record

    def get_record(self, key: str) -> Record | None:
        """The record of `key`, or None."""
        return self.get_records([key]).get(key)

    def get_records(self, keys: Iterable[str]) -> dict[str, Record]:
        """The records of those `keys` that exist, fetched concurrently."""
        keys = list(dict.fromkeys(keys))
        found = {key: self._records[key] for key in keys if key in self._records}
        missing = [key for key in keys if key not in found]
        if missing:
            documents = self.backend.get_many(layout.metadata_key(layout.record_path(key)) for key in missing)
            for key in missing:
                raw = documents[layout.metadata_key(layout.record_path(key))]
                if raw is not None:
                    found[key] = parse_record(key, raw)
            with self._lock:
                self._records.update((key, found[key]) for key in missing if key in found)
        return found

    def delete_record(self, key: str) -> None:
        """Removes the record of `key`."""
        self.backend.delete_dir(layout.record_path(key))
        with self._lock:
            self._records.pop(key, None)

    # --- manifests and refs --------------------------------------------------------------------

    def put_manifest(self, name: str, manifest: dict[str, Any]) -> str:
        """Writes `manifest` and points the ref `name` at it; returns the manifest's digest.

        Every stored value the manifest refers to must be written before.
        """
        if not name:
            raise StoreError("a ref needs a non-empty name")
        document = canonical(manifest)  # JSON data that keeps tuples, int keys, NaN, ...
        digest = document_digest(manifest)
        path = layout.manifest_path(digest)
        self._ensure_groups([self._fanout_group(path)])
        self.backend.set(layout.metadata_key(path), layout.group_document({"repype_manifest": document}))
        self._ensure_groups(["refs"])
        ref = {"repype_ref": {"name": name, "manifest": digest, "updated": time.time()}}
        self.backend.set(layout.metadata_key(layout.ref_path(name)), layout.group_document(ref))
        self._manifests[digest] = from_canonical(document)
        return digest

    def get_manifest(self, name: str) -> dict[str, Any] | None:
        """The manifest the ref `name` points at, or None when there is no such ref."""
        raw = self.backend.get(layout.metadata_key(layout.ref_path(name)))
        if raw is None:
            return None
        digest = layout.read_attributes(raw)["repype_ref"]["manifest"]
        manifest = self.manifest(digest)
        if manifest is None:
            raise IntegrityError(f"ref '{name}': its manifest {digest} is missing from the store {self.url}")
        return manifest

    def manifest(self, digest: str) -> dict[str, Any] | None:
        """The manifest with `digest`, or None."""
        if digest not in self._manifests:
            raw = self.backend.get(layout.metadata_key(layout.manifest_path(digest)))
            if raw is None:
                return None
            self._manifests[digest] = layout.read_attributes(raw, tagged=True)["repype_manifest"]
        return self._manifests[digest]

    def ref_target(self, name: str) -> str | None:
        """The digest of the manifest the ref `name` points at, or None."""
        raw = self.backend.get(layout.metadata_key(layout.ref_path(name)))
        return None if raw is None else layout.read_attributes(raw)["repype_ref"]["manifest"]

    def list_refs(self) -> list[str]:
        """The names of all refs, sorted."""
        nodes = [node for node in self.backend.list_dir("refs") if node != layout.METADATA]
        documents = self.backend.get_many(layout.metadata_key(f"refs/{node}") for node in nodes)
        return sorted(
            layout.read_attributes(raw)["repype_ref"]["name"] for raw in documents.values() if raw is not None
        )

    def delete_ref(self, name: str) -> None:
        """Removes the ref `name` (what it reaches stays until :meth:`gc`)."""
        self.backend.delete_dir(layout.ref_path(name))

    # --- browsing and maintenance ------------------------------------------------------------

    def tasks(self) -> list[str]:
        """Names of the tasks in the store (their refs)."""
        return self.list_refs()

    def task(self, name: str) -> Any:
        """A view of the completed task `name`: inputs, fields, config, times, values."""
        from repype.store.browse import TaskView

        return TaskView(self, name)

    def table(
        self, tasks: Iterable[str] | None = None, fields: list[str] | None = None, config: list[str] | None = None
    ) -> Any:
        """A pandas DataFrame with one row per task and input of `tasks` (default: every task).

        Columns: `task`, `input_id`, the hyperparameters `config` names as `stage/key` columns (a
        section such as `'smooth'` names all of its keys; default: those that differ across the
        tasks), then the `fields` (default: every field holding a scalar). Small arrays and
        containers fit in a cell; bigger values raise ValueError naming task, input and field.
        Needs pandas (`pip install 'repype[results]'`).
        """
        from repype.store.table import results_table

        names = self.tasks() if tasks is None else list(tasks)
        return results_table([self.task(name) for name in names], fields, config)

    def ls(self) -> Any:
        """Tasks, inputs, fields and sizes (a report with `.format()`)."""
        from repype.store import maintenance

        return maintenance.ls(self)

    def du(self) -> Any:
        """Bytes per task, unique vs shared, and the dedup ratio (a report with `.format()`)."""
        from repype.store import maintenance

        return maintenance.du(self)

    def verify(self, repair: bool = False) -> Any:
        """Re-hashes every value and checks every reference; `repair` deletes damage (report with `.ok`)."""
        from repype.store import maintenance

        return maintenance.verify(self, repair=repair)

    def gc(self, grace: float = 86400.0, dry_run: bool = True) -> Any:
        """Deletes what no ref reaches, sparing records and values younger than `grace` seconds."""
        from repype.store import maintenance

        return maintenance.gc(self, grace=grace, dry_run=dry_run)

    def forget_cache(self) -> None:
        """Drops what this object remembers of the store (after another process changed it)."""
        with self._lock:
            self._records.clear()
            self._groups.clear()


def parse_record(key: str, metadata: bytes) -> Record:
    """A record from the `zarr.json` bytes of its node."""
    try:
        document = layout.read_attributes(metadata)["repype_record"]
        return Record(key, document["outputs"], document["run_time"], document["created"], document.get("stage"))
    except (ValueError, KeyError, TypeError) as error:
        raise IntegrityError(f"stage record {key} is damaged: {error}") from error


def open(
    url: str | os.PathLike | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    mode: str = "a",
    allow_pickle: bool = True,
    compressor: Any = "zstd",
) -> Store:
    """Opens the store at `url` (a local path or any fsspec URL; default `.repype`).

    Mode `'a'` creates the store when missing; mode `'r'` never writes, refuses writes with
    :class:`ReadOnlyError` and raises :class:`StoreMissingError` when there is no store.
    `compressor` (`'zstd'`, `'zstd:<level>'`, `'blosc-lz4'`, `'none'` or a Zarr codec) applies to
    values written through this object. With `allow_pickle=False`, pickled values are refused.
    `storage_options` go to the fsspec filesystem; they are ignored for local paths.
    """
    if mode not in ("r", "a"):
        raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
    url = os.fspath(url) if url is not None else ".repype"
    if local_path(url) is not None:
        storage_options = None  # options are for fsspec filesystems; a tree may set them for a sibling store
    backend = Backend(url, storage_options, read_only=mode == "r")
    root = backend.get(layout.METADATA)
    if root is None:
        if mode == "r":
            raise StoreMissingError(f"there is no repype store at {backend.display_url}")
        sections = [(layout.metadata_key(section), layout.group_document()) for section in layout.SECTIONS]
        backend.set_many(sections)
        backend.set(layout.METADATA, layout.group_document({"repype": {"format": layout.FORMAT_VERSION}}))
    elif "repype" not in layout.read_attributes(root):
        raise StoreError(f"{backend.display_url} is a Zarr hierarchy but not a repype store")
    return Store(backend, allow_pickle=allow_pickle, compressor=compressor)
