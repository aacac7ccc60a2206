"""Maintenance of a store: list (`ls`), sizes (`du`), integrity (`verify`) and garbage collection (`gc`).

Built on the backend's primitives (listing keys, reading node metadata, deleting nodes), the
layout and the document formats of :mod:`repype.store.manifests`; it never goes through `Store`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from repype.store import blobs, claims, codecs, keys, layout, leases, manifests
from repype.store.backend import Backend
from repype.store.codecs import ValueRef
from repype.store.errors import IntegrityError
from repype.store.manifests import Manifest, Record


@dataclass
class Inventory:
    """Everything in a store, as listed and read at one moment.

    `blobs` maps digests to their metadata attributes (None: incomplete, no metadata yet);
    `unreadable` maps node paths whose metadata cannot be parsed to the reason (a damaged shard
    counts against its manifest's node); `partials` are temporary files of writers killed before
    their rename.
    """

    blobs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    blob_keys: dict[str, list[str]] = field(default_factory=dict)
    records: dict[str, Record] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    manifest_keys: dict[str, list[str]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    ref_paths: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    partials: list[str] = field(default_factory=list)


PARTIAL_SUFFIX = ".partial"
"""Local writes go to `<key>.<uuid>.partial` first, then are renamed."""
PARTIAL_GRACE = leases.EXPIRY
"""Seconds for which gc spares a temporary file whatever its grace: its writer may be about to rename
it, and not every write runs under a lease (creating a store writes its sections' groups first)."""


def _nodes(backend: Backend, section: str, partials: list[str]) -> dict[str, list[str]]:
    nodes: dict[str, list[str]] = {}
    for key in backend.list_prefix(section + "/"):
        if key.endswith(PARTIAL_SUFFIX):
            partials.append(key)
            continue
        name = layout.split_node(key, section)
        if name is not None:
            nodes.setdefault(name, []).append(key)
    return nodes


def _metadata_of(backend: Backend, section: str, nodes: dict[str, list[str]]) -> dict[str, bytes | None]:
    keys = {name: layout.metadata_key(layout.fanout(section, name)) for name in nodes}
    present = {name: key for name, key in keys.items() if key in nodes[name]}
    documents = backend.get_many(present.values())
    return {name: documents[present[name]] if name in present else None for name in nodes}


def _parsed(inventory: Inventory, path: str, raw: bytes | None, parse: Any) -> Any:
    """`parse(raw)`, or None when `raw` is missing; unparsable metadata is noted in `inventory.unreadable`."""
    if raw is None:
        return None
    try:
        return parse(raw)
    except (ValueError, KeyError, TypeError, IntegrityError) as error:
        inventory.unreadable[path] = f"its metadata cannot be read: {error}"
        return None


def take_inventory(backend: Backend) -> Inventory:
    """Lists and reads the metadata of every node of the store."""
    inventory = Inventory()
    inventory.blob_keys = _nodes(backend, "blobs", inventory.partials)
    for digest, raw in _metadata_of(backend, "blobs", inventory.blob_keys).items():
        path = layout.blob_path(digest)
        inventory.blobs[digest] = _parsed(inventory, path, raw, lambda raw: layout.read_attributes(raw)["repype"])
    for key, raw in _metadata_of(backend, "records", _nodes(backend, "records", inventory.partials)).items():
        record = _parsed(inventory, layout.record_path(key), raw, lambda raw, key=key: manifests.parse_record(key, raw))
        if record is not None:
            inventory.records[key] = record
    _take_manifests(backend, inventory)
    _take_refs(backend, inventory)
    return inventory


def _take_manifests(backend: Backend, inventory: Inventory) -> None:
    inventory.manifest_keys = _nodes(backend, "manifests", inventory.partials)
    headers = {}
    for digest, raw in _metadata_of(backend, "manifests", inventory.manifest_keys).items():
        path = layout.manifest_path(digest)
        header = _parsed(inventory, path, raw, lambda raw, digest=digest: manifests.parse_manifest(digest, raw))
        if header is not None:
            headers[digest] = header
    shard_keys = {
        (digest, index): layout.metadata_key(layout.shard_path(digest, index))
        for digest, header in headers.items()
        for index in range(len(header.shards))
    }
    documents = backend.get_many(shard_keys.values())
    for digest, header in headers.items():
        try:
            entries = header.entries or [
                entry
                for index in range(len(header.shards))
                for entry in manifests.parse_shard(header, index, documents[shard_keys[digest, index]])
            ]
        except IntegrityError as error:
            inventory.unreadable[layout.manifest_path(digest)] = str(error)
            continue
        inventory.manifests[digest] = manifests.manifest_of(header, entries)


def _take_refs(backend: Backend, inventory: Inventory) -> None:
    nodes = []
    for key in backend.list_prefix("refs/"):
        if key.endswith(PARTIAL_SUFFIX):
            inventory.partials.append(key)
        elif key.count("/") == 2 and key.endswith("/" + layout.METADATA):
            nodes.append(key.rsplit("/", 1)[0])
    documents = backend.get_many(layout.metadata_key(path) for path in nodes)
    for path in nodes:
        ref = _parsed(
            inventory, path, documents[layout.metadata_key(path)], lambda raw, path=path: manifests.parse_ref(path, raw)
        )
        if ref is not None:
            inventory.refs[ref.name] = ref.manifest
            inventory.ref_paths[ref.name] = path


def stored_digests(refs: Iterable[ValueRef]) -> set[str]:
    """Digests of the blobs that `refs` point at (inline values have none)."""
    return {ref["digest"] for ref in refs if ref.get("stored") and not codecs.is_inline(ref)}


def manifest_refs(manifest: Manifest) -> list[ValueRef]:
    """Every value reference of a manifest."""
    return [ref for entry in manifest.inputs for ref in entry.refs.values()]


def blob_size(info: dict[str, Any] | None) -> int:
    """Stored bytes of a value from its metadata attributes (0 when unknown)."""
    return int((info or {}).get("stored_bytes", 0))


def _format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


# --- ls and du --------------------------------------------------------------------------------


@dataclass
class TaskUsage:
    """Inputs, fields and bytes of one task; `unique` bytes are reached by no other task."""

    name: str
    inputs: int
    fields: list[str]
    bytes: int
    unique: int


@dataclass
class UsageReport:
    """Result of `ls`/`du`: per-task usage, total logical vs physical bytes, dedup ratio.

    `damaged` names the tasks whose ref or manifest cannot be read (with the reason); the
    report is then not `ok`.
    """

    tasks: list[TaskUsage]
    logical_bytes: int
    physical_bytes: int
    total_bytes: int
    detail: bool = False
    damaged: dict[str, str] = field(default_factory=dict)
    running: int = 0
    """Stage executions that running processes have claimed (`claims/`, see :mod:`repype.store.claims`)."""

    @property
    def ok(self) -> bool:
        """True when every task in the store could be read."""
        return not self.damaged

    @property
    def dedup_ratio(self) -> float:
        """Bytes the tasks would take stored separately, over the bytes they take together."""
        return self.logical_bytes / self.physical_bytes if self.physical_bytes else 1.0

    def format(self) -> str:
        """A readable table, then one line per damaged task."""
        lines = [f"{'task':<40} {'inputs':>6} {'bytes':>10} {'unique':>10}  fields"]
        for task in self.tasks:
            lines.append(
                f"{task.name:<40} {task.inputs:>6} {_format_bytes(task.bytes):>10} "
                f"{_format_bytes(task.unique):>10}  {', '.join(task.fields)}"
            )
        lines.append(
            f"{len(self.tasks)} task(s); {_format_bytes(self.physical_bytes)} reached by tasks "
            f"({_format_bytes(self.logical_bytes)} without sharing, dedup ratio {self.dedup_ratio:.2f}); "
            f"{_format_bytes(self.total_bytes)} of values in the store"
        )
        if self.running:
            lines.append(f"{self.running} stage execution(s) being run now by running processes (claims)")
        lines += [f"damaged task {name}: {reason}" for name, reason in sorted(self.damaged.items())]
        if self.damaged:
            lines.append(f"DAMAGED: {len(self.damaged)} task(s) cannot be read (repype store verify --repair)")
        return "\n".join(lines)


def damaged_tasks(inventory: Inventory) -> dict[str, str]:
    """Tasks whose ref cannot be read or whose manifest is missing or cannot be read, with the reason."""
    damaged = {
        layout.ref_name_guess(path): f"ref {path}: {reason}"
        for path, reason in inventory.unreadable.items()
        if path.startswith("refs/")
    }
    for name, digest in inventory.refs.items():
        if digest not in inventory.manifests:
            path = layout.manifest_path(digest)
            damaged[name] = inventory.unreadable.get(path, f"its manifest {digest} is missing from the store")
    return damaged


def du(backend: Backend) -> UsageReport:
    """Bytes per task, unique vs shared, and the dedup ratio; damaged tasks are listed apart."""
    inventory = take_inventory(backend)
    per_task: dict[str, set[str]] = {}
    reached: dict[str, Manifest] = {}
    for name, digest in inventory.refs.items():
        manifest = inventory.manifests.get(digest)
        if manifest is not None:
            reached[name] = manifest
            per_task[name] = stored_digests(manifest_refs(manifest))
    owners: dict[str, int] = {}
    for digests in per_task.values():
        for digest in digests:
            owners[digest] = owners.get(digest, 0) + 1
    sizes = {digest: blob_size(info) for digest, info in inventory.blobs.items()}
    tasks = [
        TaskUsage(
            name,
            len(reached[name].inputs),
            reached[name].fields,
            sum(sizes.get(d, 0) for d in digests),
            sum(sizes.get(d, 0) for d in digests if owners[d] == 1),
        )
        for name, digests in sorted(per_task.items())
    ]
    return UsageReport(
        tasks,
        logical_bytes=sum(task.bytes for task in tasks),
        physical_bytes=sum(sizes.get(d, 0) for d in owners),
        total_bytes=sum(sizes.values()),
        damaged=damaged_tasks(inventory),
        running=len(claims_by_state(backend)[0]),
    )


def claims_by_state(backend: Backend) -> tuple[list[str], list[str]]:
    """Node names of the live claims of running stage executions (not damage: they come and go as processes
    run) and of the dead ones (not renewed for :data:`repype.store.claims.EXPIRY`, or damaged)."""
    now = time.time()
    found = claims.read_claims(backend)
    live = [node for node, claim in found.items() if claim is not None and claim.is_live(now)]
    return live, [node for node in found if node not in live]


def ls(backend: Backend) -> UsageReport:
    """Tasks with their inputs, fields and sizes (damaged tasks listed apart)."""
    return du(backend)


# --- verify -------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """Result of `verify`: what was checked, what is damaged, what was repaired."""

    checked_blobs: int = 0
    checked_records: int = 0
    checked_manifests: int = 0
    incomplete_blobs: list[str] = field(default_factory=list)
    damaged_blobs: dict[str, str] = field(default_factory=dict)
    broken_records: dict[str, str] = field(default_factory=dict)
    broken_manifests: dict[str, str] = field(default_factory=dict)
    broken_refs: dict[str, str] = field(default_factory=dict)
    ref_paths: dict[str, str] = field(default_factory=dict, repr=False)
    repaired: bool = False
    running: int = 0
    """Stage executions claimed by running processes (`claims/`): reported, never damage."""

    @property
    def ok(self) -> bool:
        """True when nothing is damaged (incomplete leftovers of killed writers are not damage)."""
        return not (self.damaged_blobs or self.broken_records or self.broken_manifests or self.broken_refs)

    def format(self) -> str:
        """A readable summary, one line per problem."""
        lines = [
            f"checked {self.checked_blobs} value(s), {self.checked_records} record(s), "
            f"{self.checked_manifests} manifest(s)"
        ]
        for title, problems in [
            ("damaged value", self.damaged_blobs),
            ("broken record", self.broken_records),
            ("broken manifest", self.broken_manifests),
            ("broken ref", self.broken_refs),
        ]:
            lines += [f"{title} {name}: {reason}" for name, reason in sorted(problems.items())]
        if self.incomplete_blobs:
            lines.append(
                f"{len(self.incomplete_blobs)} incomplete value(s) left by interrupted writers (gc removes them)"
            )
        if self.running:
            lines.append(f"{self.running} stage execution(s) being run now by running processes (not damage)")
        if self.repaired:
            lines.append("repaired: damaged values, the records and refs that reach them were deleted")
        lines.append("OK" if self.ok else "DAMAGED")
        return "\n".join(lines)


def _check_blob(backend: Backend, digest: str, info: dict[str, Any]) -> str | None:
    try:
        blobs.read_payload(backend, dict(info, stored=True))
    except IntegrityError as error:
        return str(error)
    return None


def verify(backend: Backend, repair: bool = False) -> VerifyReport:
    """Re-hashes every value, checks every reference and that each record's key document hashes to its key.

    `repair` deletes the damage.
    """
    inventory = take_inventory(backend)
    report = VerifyReport()
    good: set[str] = set()
    for digest, info in inventory.blobs.items():
        if info is None:
            if layout.blob_path(digest) not in inventory.unreadable:
                report.incomplete_blobs.append(digest)
            continue
        report.checked_blobs += 1
        problem = _check_blob(backend, digest, info)
        if problem is None:
            good.add(digest)
        else:
            report.damaged_blobs[digest] = problem

    def missing(refs: Iterable[ValueRef]) -> list[str]:
        return sorted(stored_digests(refs) - good)

    for key, record in inventory.records.items():
        report.checked_records += 1
        if missing(record.outputs.values()):
            report.broken_records[key] = f"points at missing or damaged values {missing(record.outputs.values())}"
        elif record.document is not None and keys.document_key(record.document) != key:
            report.broken_records[key] = (
                f"its key document hashes to {keys.document_key(record.document)}, not to its key"
            )
    for digest, manifest in inventory.manifests.items():
        report.checked_manifests += 1
        if missing(manifest_refs(manifest)):
            report.broken_manifests[digest] = f"points at missing or damaged values {missing(manifest_refs(manifest))}"
    for name, digest in inventory.refs.items():
        if inventory.manifests.get(digest) is None or digest in report.broken_manifests:
            report.broken_refs[name] = f"its manifest {digest} is missing or broken"
    report.ref_paths = dict(inventory.ref_paths)
    report.running = len(claims_by_state(backend)[0])
    for path, reason in inventory.unreadable.items():
        section, node = path.split("/", 1)[0], path.rsplit("/", 1)[-1]
        if section == "refs":  # its name is in the unreadable document: the node name is the best guess
            report.broken_refs[layout.ref_name_guess(path)] = reason
            report.ref_paths[layout.ref_name_guess(path)] = path
            continue
        target = {"blobs": report.damaged_blobs, "records": report.broken_records, "manifests": report.broken_manifests}
        target[section][node] = reason
    if repair and not report.ok:
        _repair(backend, report)
    return report


def _repair(backend: Backend, report: VerifyReport) -> None:
    ref_paths = [report.ref_paths.get(name, name) for name in report.broken_refs]
    delete_nodes(backend, ref_paths, report.broken_records, report.broken_manifests, report.damaged_blobs)
    report.repaired = True


def delete_nodes(
    backend: Backend, ref_paths: Iterable[str], records: Iterable[str], manifests: Iterable[str], blobs: Iterable[str]
) -> None:
    """Deletes refs (by node path), then records and manifests, then values: nothing points at a deleted value."""
    for path in ref_paths:
        backend.delete_dir(path)
    for key in records:
        backend.delete_dir(layout.record_path(key))
    for digest in manifests:
        backend.delete_dir(layout.manifest_path(digest))
    for digest in blobs:
        backend.delete_dir(layout.blob_path(digest))


# --- gc -------------------------------------------------------------------------------------------


@dataclass
class GcReport:
    """Result of `gc`: what is (or, in a dry run, would be) deleted and what was spared."""

    dry_run: bool
    blobs: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    partials: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    spared_young: int = 0
    running_writers: int = 0
    expired_leases: list[str] = field(default_factory=list)
    expired_claims: list[str] = field(default_factory=list)
    ok: bool = True

    def format(self) -> str:
        """A readable summary."""
        verb = "would delete" if self.dry_run else "deleted"
        text = (
            f"{verb} {len(self.blobs)} value(s) ({_format_bytes(self.freed_bytes)}), {len(self.records)} record(s), "
            f"{len(self.manifests)} manifest(s), {len(self.partials)} leftover temporary file(s); "
            f"spared {self.spared_young} unreferenced item(s) "
            "within the grace period"
        )
        if self.running_writers:
            text += f" or written since the oldest of {self.running_writers} running writer(s) started"
        if self.expired_leases:
            text += f"; {verb} {len(self.expired_leases)} expired writer lease(s)"
        if self.expired_claims:
            text += f"; {verb} {len(self.expired_claims)} expired execution claim(s)"
        return text + ("\nDRY RUN: nothing was deleted; run again with --yes to delete" if self.dry_run else "")


def gc(backend: Backend, grace: float = 86400.0, dry_run: bool = True) -> GcReport:
    """Deletes blobs, records and manifests that no ref reaches, sparing those younger than `grace` seconds.

    Whatever the grace, everything written since the oldest running writer started is spared
    (see :mod:`repype.store.leases`): a run's values stay unreferenced until its task is committed.
    Expired writer leases and execution claims (:mod:`repype.store.claims`) are removed.
    """
    report = GcReport(dry_run=dry_run)
    now = time.time()
    young_before = now - grace
    held = leases.read_leases(backend)
    live = [lease for lease in held if leases.is_live(lease, now)]
    if live:
        young_before = min(young_before, min(lease.started for lease in live) - leases.CLOCK_SKEW)
    report.running_writers = len(live)
    report.expired_leases = [lease.id for lease in held if lease not in live]
    report.expired_claims = claims_by_state(backend)[1]
    inventory = take_inventory(backend)

    def is_young(created: float | None) -> bool:
        return created is None or created > young_before

    live_manifests = set(inventory.refs.values())
    live_records: set[str] = set()
    live_blobs: set[str] = set()
    for digest in live_manifests:
        manifest = inventory.manifests.get(digest)
        if manifest is not None:
            live_blobs |= stored_digests(manifest_refs(manifest))
            live_records |= manifest.records
    for digest in inventory.manifest_keys:
        if digest in live_manifests:
            continue
        manifest = inventory.manifests.get(digest)  # None: unreadable, or its writer stopped before the header
        if is_young(_node_modified(backend, inventory.manifest_keys[digest], layout.manifest_path(digest))):
            report.spared_young += 1
            if manifest is not None:
                live_blobs |= stored_digests(manifest_refs(manifest))
        else:
            report.manifests.append(digest)
    for key, record in inventory.records.items():
        if key in live_records or (record is not None and is_young(record.created)):
            if key not in live_records:
                report.spared_young += 1
            if record is not None:
                live_blobs |= stored_digests(record.outputs.values())
        else:
            report.records.append(key)
    for digest in inventory.blob_keys:
        if digest in live_blobs:
            continue
        if is_young(_blob_modified(backend, inventory, digest)):
            report.spared_young += 1
        else:
            report.blobs.append(digest)
    partials_before = min(young_before, now - PARTIAL_GRACE)
    report.partials = [key for key in inventory.partials if (backend.modified(key) or now) < partials_before]
    if not dry_run:
        _spare_what_writers_touched(backend, inventory, report, is_young)
        delete_nodes(backend, (), report.records, report.manifests, report.blobs)
        backend.delete_many(report.partials)
        for lease_id in report.expired_leases:
            backend.delete_dir(layout.lease_path(lease_id))
        for node in report.expired_claims:
            backend.delete_dir(f"{layout.CLAIMS}/{node}")
    report.freed_bytes = sum(blob_size(inventory.blobs.get(digest)) for digest in report.blobs)
    return report


def _node_modified(backend: Backend, keys: list[str], path: str) -> float | None:
    """When a node was last written: its metadata's modification time (else that of any key of it)."""
    metadata = layout.metadata_key(path)
    return backend.modified(metadata if metadata in keys else keys[0])


def _blob_modified(backend: Backend, inventory: Inventory, digest: str) -> float | None:
    """When a blob was last written or reused (writers rewrite the metadata of values they reuse)."""
    return _node_modified(backend, inventory.blob_keys[digest], layout.blob_path(digest))


def _spare_what_writers_touched(backend: Backend, inventory: Inventory, report: GcReport, is_young: Any) -> None:
    """Just before deleting: spare values reused since the listing, and values that new records reach."""
    new_records = [key for key in _nodes(backend, "records", []) if key not in inventory.records]
    documents = backend.get_many(layout.metadata_key(layout.record_path(key)) for key in new_records)
    reached: set[str] = set()
    for key in new_records:
        raw = documents[layout.metadata_key(layout.record_path(key))]
        with contextlib.suppress(IntegrityError):  # a damaged new record reaches nothing
            if raw is not None:
                reached |= stored_digests(manifests.parse_record(key, raw).outputs.values())
    kept = [d for d in report.blobs if d in reached or is_young(_blob_modified(backend, inventory, d))]
    report.spared_young += len(kept)
    report.blobs = [digest for digest in report.blobs if digest not in set(kept)]
