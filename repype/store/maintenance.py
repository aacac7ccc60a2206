"""Maintenance of a store: list (`ls`), sizes (`du`), integrity (`verify`) and garbage collection (`gc`).

Built only on the store's primitives: listing keys, reading node metadata, deleting nodes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from repype.store import blobs, layout
from repype.store.codecs import ValueRef
from repype.store.errors import IntegrityError
from repype.store.store import Record, Store, parse_record


@dataclass
class Inventory:
    """Everything in a store: blobs (metadata attributes, or None when incomplete), records, manifests, refs."""

    blobs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    blob_keys: dict[str, list[str]] = field(default_factory=dict)
    records: dict[str, Record | None] = field(default_factory=dict)
    manifests: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)


def _nodes(store: Store, section: str) -> dict[str, list[str]]:
    nodes: dict[str, list[str]] = {}
    for key in store.backend.list_prefix(section + "/"):
        name = layout.split_node(key, section)
        if name is not None:
            nodes.setdefault(name, []).append(key)
    return nodes


def _metadata_of(store: Store, section: str, nodes: dict[str, list[str]]) -> dict[str, bytes | None]:
    keys = {name: layout.metadata_key(layout.fanout(section, name)) for name in nodes}
    present = {name: key for name, key in keys.items() if key in nodes[name]}
    documents = store.backend.get_many(present.values())
    return {name: documents[present[name]] if name in present else None for name in nodes}


def take_inventory(store: Store) -> Inventory:
    """Lists and reads the metadata of every node of the store."""
    inventory = Inventory()
    blob_nodes = _nodes(store, "blobs")
    inventory.blob_keys = blob_nodes
    for digest, raw in _metadata_of(store, "blobs", blob_nodes).items():
        inventory.blobs[digest] = None if raw is None else layout.read_attributes(raw).get("repype", {})
    for key, raw in _metadata_of(store, "records", _nodes(store, "records")).items():
        try:
            inventory.records[key] = None if raw is None else parse_record(key, raw)
        except IntegrityError:
            inventory.records[key] = None
    for digest, raw in _metadata_of(store, "manifests", _nodes(store, "manifests")).items():
        inventory.manifests[digest] = None if raw is None else layout.read_attributes(raw).get("repype_manifest")
    for name in store.list_refs():
        target = store.ref_target(name)
        if target is not None:
            inventory.refs[name] = target
    return inventory


def stored_digests(refs: Iterable[ValueRef]) -> set[str]:
    """Digests of the blobs that `refs` point at (inline values have none)."""
    return {ref["digest"] for ref in refs if ref.get("stored") and "value" not in ref}


def manifest_refs(manifest: dict[str, Any]) -> list[ValueRef]:
    """Every value reference of a manifest."""
    return [ref for _, refs in manifest.get("inputs", []) for ref in refs.values()]


def blob_size(info: dict[str, Any] | None) -> int:
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
    """Result of `ls`/`du`: per-task usage, total logical vs physical bytes, dedup ratio."""

    tasks: list[TaskUsage]
    logical_bytes: int
    physical_bytes: int
    total_bytes: int
    detail: bool = False
    ok: bool = True

    @property
    def dedup_ratio(self) -> float:
        """Bytes the tasks would take stored separately, over the bytes they take together."""
        return self.logical_bytes / self.physical_bytes if self.physical_bytes else 1.0

    def format(self) -> str:
        """A readable table."""
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
        return "\n".join(lines)


def du(store: Store) -> UsageReport:
    """Bytes per task, unique vs shared, and the dedup ratio."""
    inventory = take_inventory(store)
    per_task: dict[str, set[str]] = {}
    manifests: dict[str, dict[str, Any]] = {}
    for name, digest in inventory.refs.items():
        manifest = inventory.manifests.get(digest)
        if manifest is not None:
            manifests[name] = manifest
            per_task[name] = stored_digests(manifest_refs(manifest))
    owners: dict[str, int] = {}
    for digests in per_task.values():
        for digest in digests:
            owners[digest] = owners.get(digest, 0) + 1
    sizes = {digest: blob_size(info) for digest, info in inventory.blobs.items()}
    tasks = []
    for name, digests in sorted(per_task.items()):
        manifest = manifests[name]
        fields = sorted({field for _, refs in manifest["inputs"] for field in refs})
        tasks.append(
            TaskUsage(
                name,
                len(manifest["inputs"]),
                fields,
                sum(sizes.get(d, 0) for d in digests),
                sum(sizes.get(d, 0) for d in digests if owners[d] == 1),
            )
        )
    return UsageReport(
        tasks,
        logical_bytes=sum(task.bytes for task in tasks),
        physical_bytes=sum(sizes.get(d, 0) for d in owners),
        total_bytes=sum(sizes.values()),
    )


def ls(store: Store) -> UsageReport:
    """Tasks with their inputs, fields and sizes."""
    return du(store)


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
    repaired: bool = False

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
        if self.repaired:
            lines.append("repaired: damaged values, the records and refs that reach them were deleted")
        lines.append("OK" if self.ok else "DAMAGED")
        return "\n".join(lines)


def _check_blob(store: Store, digest: str, info: dict[str, Any]) -> str | None:
    try:
        blobs.read_payload(store.backend, dict(info, stored=True))
    except IntegrityError as error:
        return str(error)
    return None


def verify(store: Store, repair: bool = False) -> VerifyReport:
    """Re-hashes every value and checks every reference; `repair` deletes the damage."""
    inventory = take_inventory(store)
    report = VerifyReport()
    good: set[str] = set()
    for digest, info in inventory.blobs.items():
        if info is None:
            report.incomplete_blobs.append(digest)
            continue
        report.checked_blobs += 1
        problem = _check_blob(store, digest, info)
        if problem is None:
            good.add(digest)
        else:
            report.damaged_blobs[digest] = problem

    def missing(refs: Iterable[ValueRef]) -> list[str]:
        return sorted(stored_digests(refs) - good)

    for key, record in inventory.records.items():
        report.checked_records += 1
        if record is None:
            report.broken_records[key] = "the record cannot be read"
        elif missing(record.outputs.values()):
            report.broken_records[key] = f"points at missing or damaged values {missing(record.outputs.values())}"
    for digest, manifest in inventory.manifests.items():
        report.checked_manifests += 1
        if manifest is None:
            report.broken_manifests[digest] = "the manifest cannot be read"
        elif missing(manifest_refs(manifest)):
            report.broken_manifests[digest] = f"points at missing or damaged values {missing(manifest_refs(manifest))}"
    for name, digest in inventory.refs.items():
        if inventory.manifests.get(digest) is None or digest in report.broken_manifests:
            report.broken_refs[name] = f"its manifest {digest} is missing or broken"
    if repair and not report.ok:
        _repair(store, report)
    return report


def _repair(store: Store, report: VerifyReport) -> None:
    delete_nodes(store, report.broken_refs, report.broken_records, report.broken_manifests, report.damaged_blobs)
    report.repaired = True


def delete_nodes(
    store: Store, refs: Iterable[str], records: Iterable[str], manifests: Iterable[str], blobs: Iterable[str]
) -> None:
    """Deletes refs, then records and manifests, then values: nothing ever points at a deleted value."""
    for name in refs:
        store.delete_ref(name)
    for key in records:
        store.delete_record(key)
    for digest in manifests:
        store.backend.delete_dir(layout.manifest_path(digest))
    for digest in blobs:
        store.backend.delete_dir(layout.blob_path(digest))
    store.forget_cache()


# --- gc -------------------------------------------------------------------------------------------


@dataclass
class GcReport:
    """Result of `gc`: what is (or, in a dry run, would be) deleted and what was spared."""

    dry_run: bool
    blobs: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    spared_young: int = 0
    ok: bool = True

    def format(self) -> str:
        """A readable summary."""
        verb = "would delete" if self.dry_run else "deleted"
        text = (
            f"{verb} {len(self.blobs)} value(s) ({_format_bytes(self.freed_bytes)}), {len(self.records)} record(s), "
            f"{len(self.manifests)} manifest(s); spared {self.spared_young} unreferenced item(s) "
            "within the grace period"
        )
        return text + ("\nDRY RUN: confirm to delete" if self.dry_run else "")


def gc(store: Store, grace: float = 86400.0, dry_run: bool = True) -> GcReport:
    """Deletes blobs, records and manifests that no ref reaches, sparing those younger than `grace` seconds."""
    inventory = take_inventory(store)
    report = GcReport(dry_run=dry_run)
    young_before = time.time() - grace

    def is_young(created: float | None) -> bool:
        return created is None or created > young_before

    live_manifests = set(inventory.refs.values())
    live_records: set[str] = set()
    live_blobs: set[str] = set()
    for digest in live_manifests:
        manifest = inventory.manifests.get(digest) or {}
        live_blobs |= stored_digests(manifest_refs(manifest))
        live_records.update(manifest.get("records", []))
    for digest, manifest in inventory.manifests.items():
        if digest in live_manifests:
            continue
        if is_young((manifest or {}).get("created")):
            report.spared_young += 1
            live_blobs |= stored_digests(manifest_refs(manifest or {}))
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
    for digest, keys in inventory.blob_keys.items():
        if digest in live_blobs:
            continue
        if is_young(store.backend.modified(keys[0])):
            report.spared_young += 1
        else:
            report.blobs.append(digest)
            report.freed_bytes += blob_size(inventory.blobs.get(digest))
    if not dry_run:
        delete_nodes(store, (), report.records, report.manifests, report.blobs)
    return report
