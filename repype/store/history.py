"""The recorded executions of each stage: every record of the store, grouped by stage id.

What `repype ROOT --why` compares the key of a stage that must run against. One listing of the
`records/` section and one batched read of the records' documents, whatever the number of tasks.
"""

from __future__ import annotations

from typing import Any

from repype.store import layout
from repype.store.manifests import Record

SECTION = "records"


def executions_by_stage(store: Any) -> dict[str | None, list[Record]]:
    """Every readable record of `store` (a :class:`repype.store.Store`), by the id of its stage.

    Damaged records are left out (`verify` reports them); records written without a stage id
    are under None.
    """
    keys = sorted(
        {name for key in store.backend.list_prefix(SECTION + "/") if (name := layout.split_node(key, SECTION))}
    )
    by_stage: dict[str | None, list[Record]] = {}
    for record in store.get_records(keys, report_damage=False).values():
        by_stage.setdefault(record.stage, []).append(record)
    return by_stage
