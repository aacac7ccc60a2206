"""The content-addressed store: values by content digest, stage records by key, task manifests by ref."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from repype.store import codecs, layout, manifests
from repype.store.backend import Backend, local_path
from repype.store.claims import Claim, Claims
from repype.store.codecs import ValueRef
from repype.store.errors import (
    IntegrityError,
    IntegrityWarning,
    PickleRefusedError,
    StoreError,
    StoreFormatError,
    StoreMissingError,
    where,
)
from repype.store.leases import WriterLease
from repype.store.manifests import InputEntry, InputID, Manifest, ManifestHeader, Record, Ref
from repype.store.writes import WriteBatch, fanout_group


def _blobs() -> Any:
    """The module that writes and reads values as Zarr arrays, imported when first needed (zarr is slow to import)."""
    from repype.store import blobs

    return blobs


class Store:
    """A repype store: open one with :func:`repype.store.open`.

    Values are stored once per content digest; stage records map a stage-execution key to the
    references of its outputs; manifests describe completed tasks and refs name them. Every
    method is safe to call from many processes and machines at once.
    """

    def __init__(
        self,
        backend: Backend,
        allow_pickle: bool = True,
        compressor: Any = "zstd",
        format: int = layout.FORMAT_VERSION,
        pack_limit: int | None = codecs.PACK_LIMIT,
    ) -> None:
        self.backend = backend
        self.allow_pickle = allow_pickle
        self.pack_limit = pack_limit
        self.format = format
        self._compressor = compressor
        self._compressors: Any = None
        self._groups: set[str] = set()
        self._records: dict[str, Record] = {}
        self._damaged_records: set[str] = set()
        self._manifests: dict[str, ManifestHeader] = {}
        self._shards: dict[tuple[str, int], list[InputEntry]] = {}
        self._lock = threading.Lock()
        self.lease = WriterLease(backend)
        """This writer's lease in the store, held while :meth:`writing` blocks run."""
        self._writers = 0
        self.claims = Claims(backend)
        """The execution claims this process holds in the store (see :meth:`claim`)."""

    @property
    def url(self) -> str:
        """The store's URL (without credentials)."""
        return self.backend.display_url

    @property
    def read_only(self) -> bool:
        """Whether the store refuses writes."""
        return self.backend.read_only

    @property
    def compressors(self) -> Any:
        """The Zarr compressors of values written through this object."""
        if self._compressors is None:
            self._compressors = _blobs().compressors_for(self._compressor)
        return self._compressors

    def __repr__(self) -> str:
        return f"<repype store {self.url}{' (read-only)' if self.read_only else ''}>"

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Holds this writer's lease while the block runs (blocks of several threads may overlap).

        A concurrent :meth:`gc` spares everything written since the oldest held lease started,
        whatever its grace period: wrap work whose values stay unreferenced until a manifest is
        written (a task's run) in it. See :mod:`repype.store.leases`.
        """
        with self._lock:
            self._writers += 1
            if self._writers == 1:
                self.lease.hold()
        try:
            yield
        finally:
            with self._lock:
                self._writers -= 1
                if self._writers == 0:
                    self.lease.release()

    @contextlib.contextmanager
    def claim(self, key: str) -> Iterator[Claim | None]:
        """Claims the stage execution `key` for the block, so that other processes wait instead of running it too.

        Yields None when claims do not work on this store (read-only, or storage without an atomic
        create): run unclaimed. Yields a :class:`Claim` with `held` True when this block holds the
        claim (renewed in the background, released when the block ends, also by an exception), or
        with `held` False when another live process (or thread) holds it: nothing was acquired.
        See :mod:`repype.store.claims`.
        """
        claim = self.claims.acquire(key)
        try:
            yield claim
        finally:
            if claim is not None and claim.held:
                self.claims.release(claim)

    def live_claim(self, key: str) -> Claim | None:
        """The live claim on the execution `key`, or None when nobody holds it (or it expired, or claims are off)."""
        return self.claims.current(key)

    # --- groups --------------------------------------------------------------------------------

    def _new_groups(self, paths: Iterable[str]) -> list[str]:
        """Those of the intermediate groups `paths` this object has not seen yet (each once, in order).

        The first time a section is asked about, one listing tells which of its fan-out groups exist.
        """
        missing = [path for path in dict.fromkeys(paths) if path not in self._groups]
        for section in dict.fromkeys(path.split("/", 1)[0] for path in missing):
            if section not in self._groups:
                self._groups.update(f"{section}/{name}" for name in self.backend.list_dir(section))
                self._groups.add(section)
        return [path for path in missing if path not in self._groups]

    def _groups_written(self, paths: Iterable[str]) -> None:
        """Remembers that the groups `paths` exist (their `zarr.json` was written)."""
        self._groups.update(paths)

    def _ensure_groups(self, paths: Iterable[str]) -> None:
        """Writes the `zarr.json` of intermediate groups this object has not seen yet."""
        missing = self._new_groups(paths)
        self.backend.set_many((layout.metadata_key(path), layout.group_document()) for path in missing)
        self._groups_written(missing)

    # --- values --------------------------------------------------------------------------------

    def describe(self, value: Any, field: str = "") -> ValueRef:
        """The reference of `value` (its digest and codec) without writing anything.

        Small JSON and packed values are held in the reference itself (`stored` is then True).
        """
        return codecs.encode(value, field, self.pack_limit).ref

    def batch(self) -> WriteBatch:
        """A batch of values and records written together by its `commit()`: one call into the
        store's event loop for a stage execution (see :mod:`repype.store.writes`)."""
        return WriteBatch(self)

    def put_value(self, value: Any, field: str = "", rewrite: bool = False) -> ValueRef:
        """Stores `value` (once per content) and returns its reference.

        `rewrite` writes it even when a blob of that digest exists (to repair a damaged one).
        Raises :class:`SerializationError` naming `field` when the value cannot be stored.
        """
        batch = self.batch()
        ref = batch.put_value(value, field, rewrite)
        batch.commit()
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

    def get_value(
        self,
        ref: ValueRef,
        lazy: bool = False,
        context: dict[str, Any] | None = None,
        allow_pickle: bool | None = None,
    ) -> Any:
        """The value of `ref`, verified against its digest.

        With `lazy`, natively stored arrays come back as read-only `zarr.Array` objects that
        read only what is sliced (and are not verified); packed arrays (tiny, in the reference)
        come back as numpy arrays, verified, either way. `context` (`task`, `input`, `field`)
        names the value in errors. Damage raises :class:`IntegrityError`; a pickled value
        raises :class:`PickleRefusedError` when the store was opened with `allow_pickle=False`
        or this call says `allow_pickle=False` (None: as the store was opened).
        """
        if "value" in ref:
            return codecs.inline_value(ref)
        if "packed" in ref:
            try:
                payload = codecs.packed_payload(ref)
            except IntegrityError as error:
                raise IntegrityError(f"{where(context)}{error}") from None
        elif not ref.get("stored", False):
            raise StoreError(f"{where(context)}value {ref['digest']} was never stored")
        elif lazy and ref["codec"] == "ndarray" and ref.get("layout") == "native":
            return _blobs().lazy_array(self.backend, ref, context)
        else:
            payload = _blobs().read_payload(self.backend, ref, context)
        pickles = self.allow_pickle and allow_pickle is not False

        def refuse() -> Exception:
            opened = "this store (opened with allow_pickle=False)" if not self.allow_pickle else "this load"
            return PickleRefusedError(
                f"{where(context)}value {ref['digest']} is a pickle, which {opened} refuses to load"
            )

        return codecs.decode(ref, payload, pickles, refuse)

    # --- stage records --------------------------------------------------------------------------

    def put_record(
        self,
        key: str,
        outputs: dict[str, ValueRef],
        run_time: float,
        stage: str | None = None,
        document: Mapping[str, Any] | None = None,
    ) -> Record:
        """Records a stage execution under `key`; write its output values first (this is the commit point).

        `document` is the key document `key` was computed from (:func:`repype.store.keys.key_document`),
        kept in the record with this repype's version so that the record explains itself. A
        damaged record under `key` is replaced.
        """
        batch = self.batch()
        record = batch.put_record(key, outputs, run_time, stage, document)
        batch.commit()
        return record

    def _remember_records(self, records: Iterable[Record]) -> None:
        """Remembers `records`, just written (a damaged record they replace is forgotten)."""
        with self._lock:
            for record in records:
                self._records[record.key] = record
                self._damaged_records.discard(record.key)

    def get_record(self, key: str) -> Record | None:
        """The record of `key`, or None (also when it is damaged, see :meth:`get_records`)."""
        return self.get_records([key]).get(key)

    def known_record(self, key: str) -> Record | None:
        """The record of `key` if this object read or wrote it before, else None; asks the store nothing."""
        return self._records.get(key)

    def get_records(self, keys: Iterable[str], report_damage: bool = True) -> dict[str, Record]:
        """The records of those `keys` that exist, fetched concurrently.

        A damaged record counts as missing, so its stage runs again and replaces it; each is
        reported once per store object with an :class:`IntegrityWarning` naming its key
        (unless `report_damage` is False: a plan that runs nothing leaves that to the run).
        """
        keys = list(dict.fromkeys(keys))
        found = {key: self._records[key] for key in keys if key in self._records}
        missing = [key for key in keys if key not in found]
        if missing:
            documents = self.backend.get_many(layout.metadata_key(layout.record_path(key)) for key in missing)
            for key in missing:
                raw = documents[layout.metadata_key(layout.record_path(key))]
                if raw is not None:
                    try:
                        found[key] = manifests.parse_record(key, raw)
                    except IntegrityError as error:
                        if report_damage:
                            self._report_damaged_record(key, error)
            with self._lock:
                self._records.update((key, found[key]) for key in missing if key in found)
        return found

    def _report_damaged_record(self, key: str, error: IntegrityError) -> None:
        with self._lock:
            if key in self._damaged_records:
                return
            self._damaged_records.add(key)
        warnings.warn(f"store {self.url}: {error}; treating it as missing (it is recomputed)", IntegrityWarning, 3)

    def delete_record(self, key: str) -> None:
        """Removes the record of `key`."""
        self.backend.delete_dir(layout.record_path(key))
        with self._lock:
            self._records.pop(key, None)

    # --- manifests and refs --------------------------------------------------------------------

    def put_manifest(self, name: str, manifest: Manifest | Mapping[str, Any]) -> str:
        """Writes `manifest` and points the ref `name` at it; returns the manifest's digest.

        Every stored value the manifest refers to must be written before. When the ref already
        points at an intact copy of this manifest, nothing is written; when an intact copy exists
        (its header is the commit point), only the ref is (a damaged ref or manifest header is
        rewritten). A mapping is read as a format-1 document
        (:func:`repype.store.manifests.manifest_from_format1`) and written in the current format.
        """
        if not name:
            raise StoreError("a ref needs a non-empty name")
        if not isinstance(manifest, Manifest):
            manifest = manifests.manifest_from_format1(manifest)
        encoded = manifests.encode_manifest(manifest)
        path = layout.manifest_path(encoded.digest)
        header_key = layout.metadata_key(path)
        complete = self.backend.get(header_key) == encoded.header
        if complete and self._ref_points_at(name, encoded.digest):
            return encoded.digest
        self._upgrade_format()
        if not complete:
            self._ensure_groups([fanout_group(path)])
            shards = [
                (layout.metadata_key(layout.shard_path(encoded.digest, i)), doc) for i, doc in enumerate(encoded.shards)
            ]
            self.backend.set_many(shards)
            self.backend.set(header_key, encoded.header)  # the manifest is complete from here on
        self._ensure_groups(["refs"])
        ref = Ref(name, encoded.digest, time.time())
        self.backend.set(layout.metadata_key(layout.ref_path(name)), manifests.ref_document(ref))
        return encoded.digest

    def _ref_points_at(self, name: str, digest: str) -> bool:
        """Whether the ref `name` is intact and points at the manifest `digest`."""
        try:
            ref = self.get_ref(name)
        except IntegrityError:
            return False
        return ref is not None and ref.manifest == digest

    def _upgrade_format(self) -> None:
        """Marks a store of an older format as this format before writing what only this format reads."""
        if self.format < layout.FORMAT_VERSION:
            raw = self.backend.get(layout.METADATA)
            attributes = layout.read_attributes(raw) if raw is not None else {}
            attributes["repype"] = dict(attributes.get("repype", {}), format=layout.FORMAT_VERSION)
            self.backend.set(layout.METADATA, layout.group_document(attributes))
            self.format = layout.FORMAT_VERSION

    def get_ref(self, name: str) -> Ref | None:
        """The ref `name`, or None; raises :class:`IntegrityError` naming the ref when it is damaged."""
        path = layout.ref_path(name)
        raw = self.backend.get(layout.metadata_key(path))
        return None if raw is None else manifests.parse_ref(path, raw)

    def get_manifest(self, name: str) -> ManifestHeader | None:
        """The header of the manifest the ref `name` points at, or None when there is no such ref.

        Raises :class:`IntegrityError` naming the ref or manifest when either is damaged or missing.
        """
        ref = self.get_ref(name)
        return None if ref is None else self.target(ref)

    def target(self, ref: Ref) -> ManifestHeader:
        """The header of the manifest `ref` points at; IntegrityError when it is missing or damaged."""
        header = self.manifest(ref.manifest)
        if header is None:
            raise IntegrityError(f"ref '{ref.name}': its manifest {ref.manifest} is missing from the store {self.url}")
        return header

    def manifest(self, digest: str) -> ManifestHeader | None:
        """The header of the manifest with `digest`, or None; IntegrityError when it is damaged."""
        if digest not in self._manifests:
            raw = self.backend.get(layout.metadata_key(layout.manifest_path(digest)))
            if raw is None:
                return None
            self._manifests[digest] = manifests.parse_manifest(digest, raw)
        return self._manifests[digest]

    def manifest_inputs(
        self, header: ManifestHeader, input_ids: Iterable[InputID] | None = None
    ) -> dict[InputID, InputEntry]:
        """The entries of `input_ids` (default: all) of the manifest `header`, reading only their shards.

        Unknown input ids raise KeyError; a missing or damaged shard raises IntegrityError.
        """
        selected = header.input_ids if input_ids is None else list(input_ids)
        unknown = [input_id for input_id in selected if input_id not in header]
        if unknown:
            raise KeyError(f"manifest {header.digest} has no inputs {unknown}")
        if header.entries is not None:
            entries = {entry.input_id: entry for entry in header.entries}
            return {input_id: entries[input_id] for input_id in selected}
        needed = sorted({header.shard_of(input_id) for input_id in selected})
        absent = [index for index in needed if (header.digest, index) not in self._shards]
        keys = {index: layout.metadata_key(layout.shard_path(header.digest, index)) for index in absent}
        documents = self.backend.get_many(keys.values())
        for index in absent:
            self._shards[header.digest, index] = manifests.parse_shard(header, index, documents[keys[index]])
        found = {entry.input_id: entry for index in needed for entry in self._shards[header.digest, index]}
        return {input_id: found[input_id] for input_id in selected}

    def ref_target(self, name: str) -> str | None:
        """The digest of the manifest the ref `name` points at, or None."""
        ref = self.get_ref(name)
        return None if ref is None else ref.manifest

    def list_refs(self, strict: bool = True) -> list[str]:
        """The names of all refs, sorted; raises :class:`IntegrityError` naming a damaged ref.

        With `strict=False`, a damaged ref is listed under its node name instead (the best guess
        at its name), for listings that report damage rather than stop at it.
        """
        nodes = [f"refs/{node}" for node in self.backend.list_dir("refs") if node != layout.METADATA]
        documents = self.backend.get_many(layout.metadata_key(path) for path in nodes)
        names = []
        for path in nodes:
            raw = documents[layout.metadata_key(path)]
            if raw is None:
                continue
            try:
                names.append(manifests.parse_ref(path, raw).name)
            except IntegrityError:
                if strict:
                    raise
                names.append(layout.ref_name_guess(path))
        return sorted(names)

    def delete_ref(self, name: str) -> None:
        """Removes the ref `name` (what it reaches stays until :meth:`gc`)."""
        self.backend.delete_dir(layout.ref_path(name))

    # --- browsing and maintenance ------------------------------------------------------------

    def tasks(self, strict: bool = True) -> list[str]:
        """Names of the tasks in the store (their refs); raises :class:`IntegrityError` naming a damaged ref.

        With `strict=False`, a task whose ref is damaged is listed under its best-guess name, and
        `task(name)` then raises the IntegrityError (how `repype store ls` lists it as damaged).
        """
        return self.list_refs(strict)

    def task(self, name: str) -> Any:
        """A view of the completed task `name`: inputs, fields, config, times, values.

        Raises :class:`IntegrityError` naming the ref or manifest when either is damaged.
        """
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
        """Tasks, inputs, fields and sizes (a report with `.format()`; not `.ok` when a task is damaged)."""
        from repype.store import maintenance

        return maintenance.ls(self.backend)

    def du(self) -> Any:
        """Bytes per task, unique vs shared, and the dedup ratio (a report with `.format()` and `.ok`)."""
        from repype.store import maintenance

        return maintenance.du(self.backend)

    def verify(self, repair: bool = False) -> Any:
        """Re-hashes every value and checks every reference; `repair` deletes damage (report with `.ok`)."""
        from repype.store import maintenance

        report = maintenance.verify(self.backend, repair=repair)
        if report.repaired:
            self.forget_cache()
        return report

    def gc(self, grace: float = 86400.0, dry_run: bool = True) -> Any:
        """Deletes what no ref reaches, sparing records and values younger than `grace` seconds."""
        from repype.store import maintenance

        report = maintenance.gc(self.backend, grace=grace, dry_run=dry_run)
        if not dry_run:
            self.forget_cache()
        return report

    def forget_cache(self) -> None:
        """Drops what this object remembers of the store (after another process changed it)."""
        with self._lock:
            self._records.clear()
            self._groups.clear()
            self._manifests.clear()
            self._shards.clear()


def open(
    url: str | os.PathLike | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    mode: str = "a",
    allow_pickle: bool = True,
    compressor: Any = "zstd",
    pack_limit: int | None = codecs.PACK_LIMIT,
) -> Store:
    """Opens the store at `url` (a local path or any fsspec URL; default `.repype`).

    Mode `'a'` creates the store when missing; mode `'r'` never writes, refuses writes with
    :class:`ReadOnlyError` and raises :class:`StoreMissingError` when there is no store.
    `compressor` (`'zstd'`, `'zstd:<level>'`, `'blosc-lz4'`, `'none'` or a Zarr codec) applies to
    values written through this object. With `allow_pickle=False`, pickled values are refused.
    `storage_options` go to the fsspec filesystem; they are ignored for local paths.
    Arrays and encoded values (pickles, codec bytes) of at most `pack_limit` bytes (default
    :data:`repype.store.codecs.PACK_LIMIT`, 4 KiB) written through this object are packed into
    stage records and manifests instead of being Zarr arrays, and JSON of at most that size is
    inline: no object per tiny value; they load eagerly, without zarr, even with `lazy=True`;
    keys and digests are the same either way. `pack_limit=None` turns packing off (every array
    a Zarr array). A store of a newer format than this code writes raises
    :class:`StoreFormatError` in mode `'a'`, and in mode `'r'` too unless the store says that
    this code can read it.
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
        found = layout.FORMAT_VERSION
    else:
        found = _check_format(backend, root, mode)
    store = Store(backend, allow_pickle=allow_pickle, compressor=compressor, format=found, pack_limit=pack_limit)
    if mode == "a":
        store.compressors  # noqa: B018 -- an unknown compressor fails here, not at the first write
    return store


def _check_format(backend: Backend, root: bytes, mode: str) -> int:
    """The store format of an existing store; raises StoreFormatError when this code must not use it so."""
    try:
        attributes = layout.read_attributes(root)
    except ValueError as error:
        raise StoreError(f"{backend.display_url}: the root's zarr.json is damaged: {error}") from None
    if "repype" not in attributes:
        raise StoreError(f"{backend.display_url} is a Zarr hierarchy but not a repype store")
    info = attributes["repype"] if isinstance(attributes["repype"], dict) else {}
    found, reader = info.get("format"), info.get("min_reader_format", info.get("format"))
    if not isinstance(found, int) or not isinstance(reader, int):
        raise StoreError(f"{backend.display_url}: the root's zarr.json names no valid repype format ({info!r})")
    ours = layout.FORMAT_VERSION
    if mode == "a" and found > ours:
        raise StoreFormatError(
            f"store {backend.display_url} has format {found}, but this repype writes format {ours}: "
            "refusing to write to it; upgrade repype (pip install -U repype)"
        )
    if reader > ours:
        raise StoreFormatError(
            f"store {backend.display_url} has format {found}, which repype of format {ours} cannot read: "
            "upgrade repype (pip install -U repype)"
        )
    return found
