"""Marks on stages: a stage implementation found non-deterministic by a determinism audit.

    marks/nondeterministic/<stage sha>/zarr.json   a group whose attributes are the evidence

A mark is small, names the stage by its implementation hash (`Stage.sha`), and holds the
evidence of the latest audit that found it: the key of a re-run execution and the recorded
and re-computed digests of the outputs that differed. Marks sit beside the store's other
sections, so garbage collection and verification leave them alone; no value or record is ever
rewritten by marking.
"""

from __future__ import annotations

import time
from typing import Any

from repype.store import layout
from repype.store.store import Store

SECTION = "marks"
NONDETERMINISTIC = f"{SECTION}/nondeterministic"
ATTRIBUTE = "repype_nondeterministic"


def mark_nondeterministic(
    store: Store, stage_id: str, stage_sha: str, key: str, recorded: dict[str, str], rerun: dict[str, str]
) -> dict[str, Any]:
    """Marks the stage implementation `stage_sha` as non-deterministic; returns the evidence written.

    `key` is the execution that was re-run, `recorded` and `rerun` the digests of the outputs
    that differed, by field.
    """
    evidence = {
        "stage": stage_id,
        "stage_sha": stage_sha,
        "key": key,
        "recorded": dict(sorted(recorded.items())),
        "rerun": dict(sorted(rerun.items())),
        "created": time.time(),
    }
    path = f"{NONDETERMINISTIC}/{stage_sha}"
    groups = [(layout.metadata_key(group), layout.group_document()) for group in (SECTION, NONDETERMINISTIC)]
    store.backend.set_many(groups)
    store.backend.set(layout.metadata_key(path), layout.group_document({ATTRIBUTE: evidence}))
    return evidence


def nondeterministic(store: Store, stage_sha: str) -> dict[str, Any] | None:
    """The evidence that the stage implementation `stage_sha` is non-deterministic, or None."""
    raw = store.backend.get(layout.metadata_key(f"{NONDETERMINISTIC}/{stage_sha}"))
    return None if raw is None else layout.read_attributes(raw).get(ATTRIBUTE)


def nondeterministic_stages(store: Store) -> dict[str, dict[str, Any]]:
    """Every mark of the store: the evidence by stage sha."""
    marks = {}
    for key in store.backend.list_prefix(NONDETERMINISTIC + "/"):
        parts = key.split("/")
        if len(parts) == 4 and parts[3] == layout.METADATA:
            evidence = nondeterministic(store, parts[2])
            if evidence is not None:
                marks[parts[2]] = evidence
    return marks
