"""Where a stored value came from: its derivation tree, read from the store alone.

A field of one input of a completed task was produced by a stage execution, whose record
(format 2) holds the key document it was keyed by: the stage's implementation hash, its
hyperparameters as adopted for the input, the digests of the fields it read, key material and
distributions. Each field read was produced by an earlier execution of the same input, found
among the records the task's manifest lists for that input by field name and digest, back to
the pipeline's source, the input id. Records written before format 2 have no document: their
node says so and ends the chain there.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from repype.canonical import from_canonical
from repype.store import marks
from repype.store.errors import StoreError
from repype.store.manifests import Record
from repype.typing import InputID

SOURCE = "input_id"
"""The field every pipeline starts from: the input id itself, produced by no stage."""


@dataclass
class Derivation:
    """How the value of one field of one input came to be.

    `field` and `digest` name the value. For a value a stage produced: `stage` (its id),
    `stage_sha` (`Stage.sha` of the code that ran), `record` (the execution's key), the
    `hyperparameters` of the stage as adopted for the input, `key_material`, `distributions`,
    `run_time` and `created` (seconds since the epoch) of the execution, `version` (of repype,
    that wrote the record), `tasks` (every task of the store whose manifest lists the
    execution), `nondeterministic` (the evidence of a determinism audit that marked the stage's
    code, else None) and `reads`, the derivations of the fields it read, in name order. The
    source `input_id` has `value` (the id) and no stage. `note` says why a node explains less
    (no record found, or a record without a key document).
    """

    field: str
    digest: str
    stage: str | None = None
    stage_sha: str | None = None
    record: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    key_material: Any = None
    distributions: dict[str, str] = field(default_factory=dict)
    run_time: float | None = None
    created: float | None = None
    version: str | None = None
    tasks: list[str] = field(default_factory=list)
    nondeterministic: dict[str, Any] | None = None
    reads: list[Derivation] = field(default_factory=list)
    value: Any = None
    note: str = ""


@dataclass
class Explanation:
    """The answer of `explain`: which task, input and field, in which store, and its :class:`Derivation`."""

    store: str
    task: str
    input_id: InputID
    field: str
    derivation: Derivation


def explain(view: Any, input_id: InputID, name: str) -> Explanation:
    """The derivation of field `name` of `input_id` in the task `view` (a :class:`repype.store.TaskView`).

    Reads the input's manifest entry, the records it lists (one batch), the manifests of every
    task (to say which tasks list each execution) and one mark per stage implementation.
    Raises KeyError naming the task, input and field when the task has no such input or field.
    """
    entry = view.entries([input_id])[input_id]
    if name not in entry.refs:
        raise KeyError(f"task '{view.name}', input {input_id!r} has no field '{name}' (fields: {sorted(entry.refs)})")
    keys = entry.records or sorted(view.record_keys())  # a format-1 manifest lists records once per task
    records = view.store.get_records(keys, report_damage=False)
    producers = {
        (output, ref["digest"]): record for record in records.values() for output, ref in record.outputs.items()
    }
    builder = _Builder(view.store, input_id, producers, _listing_tasks(view.store, set(records)))
    return Explanation(view.store.url, view.name, input_id, name, builder.node(name, entry.refs[name]["digest"], ()))


class _Builder:
    """Builds the nodes of one input's tree from the records found (and caches the marks it reads)."""

    def __init__(
        self, store: Any, input_id: InputID, producers: dict[tuple[str, str], Record], tasks: dict[str, list[str]]
    ) -> None:
        self.store = store
        self.input_id = input_id
        self.producers = producers
        self.tasks = tasks
        self.marks: dict[str, dict[str, Any] | None] = {}

    def node(self, name: str, digest: str, path: tuple[str, ...]) -> Derivation:
        record = self.producers.get((name, digest))
        if record is None:
            if name == SOURCE:
                return Derivation(name, digest, value=self.input_id, note="source: the input id")
            return Derivation(name, digest, note="no record of the execution that produced it is in the store")
        node = Derivation(
            name,
            digest,
            stage=record.stage,
            record=record.key,
            run_time=record.run_time,
            created=record.created,
            version=record.version,
            tasks=self.tasks.get(record.key, []),
        )
        document = record.document
        if document is None:
            node.note = "its record was written before records kept their key documents (format 1)"
            return node
        node.stage_sha = document.get("stage")
        node.hyperparameters = from_canonical(document.get("hyperparameters", {}))
        node.key_material = from_canonical(document.get("extra"))
        node.distributions = dict(document.get("distributions", {}))
        node.nondeterministic = self._mark(node.stage_sha)
        if record.key in path:  # only a damaged document can loop
            node.note = "its key document reads a field it produced itself (damaged record)"
            return node
        node.reads = [
            self.node(read, read_digest, (*path, record.key))
            for read, read_digest in sorted(document.get("inputs", {}).items())
        ]
        return node

    def _mark(self, stage_sha: str | None) -> dict[str, Any] | None:
        if stage_sha is None:
            return None
        if stage_sha not in self.marks:
            self.marks[stage_sha] = marks.nondeterministic(self.store, stage_sha)
        return self.marks[stage_sha]


def _listing_tasks(store: Any, keys: set[str]) -> dict[str, list[str]]:
    """For each record key of `keys`, the tasks of `store` whose manifests list it (damaged tasks are skipped)."""
    found: dict[str, list[str]] = {}
    for name in store.tasks(strict=False):
        try:
            listed = store.task(name).record_keys()
        except (StoreError, KeyError):  # `ls` and `verify` report damaged tasks
            continue
        for key in sorted(keys & listed):
            found.setdefault(key, []).append(name)
    return found


# --- text --------------------------------------------------------------------------------------


def format_explanation(explanation: Explanation) -> str:
    """The derivation tree as text: one node a line, its details indented below it."""
    lines = [f"field '{explanation.field}' of input {explanation.input_id!r} in task '{explanation.task}'"]
    _format_node(explanation.derivation, "", "", lines)
    return "\n".join(lines)


def _format_node(node: Derivation, first: str, rest: str, lines: list[str]) -> None:
    lines.append(f"{first}{node.field}  {node.digest[:12]}  {_headline(node)}")
    below = rest + ("│   " if node.reads else "    ")
    lines += [below + detail for detail in _details(node)]
    for index, read in enumerate(node.reads):
        last = index == len(node.reads) - 1
        _format_node(read, rest + ("└── " if last else "├── "), rest + ("    " if last else "│   "), lines)


def _headline(node: Derivation) -> str:
    if node.stage is None:
        return f"= {node.value!r}  ({node.note})" if node.value is not None else f"({node.note})"
    sha = f"code {node.stage_sha[:12]}" if node.stage_sha else "code unknown"
    return f"← stage '{node.stage}' ({sha}, {node.run_time:.3f} s, record {node.record[:12]})"


def _details(node: Derivation) -> list[str]:
    if node.stage is None:
        return []
    details = []
    if node.stage_sha is not None:
        settings = ", ".join(f"{key}={value!r}" for key, value in sorted(node.hyperparameters.items()))
        details.append(f"hyperparameters: {settings or '(none)'}")
    if node.key_material is not None:
        details.append(f"key material: {node.key_material!r}")
    if node.distributions:
        details.append("distributions: " + ", ".join(f"{n} {v}" for n, v in sorted(node.distributions.items())))
    written = datetime.datetime.fromtimestamp(node.created or 0, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    details.append(f"written {written} by repype {node.version or '(unknown)'}")
    details.append(f"listed by tasks: {', '.join(node.tasks) or '(none)'}")
    if node.nondeterministic is not None:
        details.append(
            f"NON-DETERMINISTIC: a determinism audit found execution {node.nondeterministic['key'][:12]} "
            "gave other outputs when re-run"
        )
    if node.note:
        details.append(node.note)
    return details
