"""Browsing completed tasks from the store alone (no task directories needed)."""

from __future__ import annotations

from typing import Any

from repype.store.codecs import ValueRef
from repype.store.errors import StoreError
from repype.typing import InputID


class TaskView:
    """A completed task as its manifest in the store describes it.

    Obtain one with `store.task(name)`, where `name` is the task's path relative to its root
    task (`'.'` for the root itself; `store.tasks()` lists them).
    """

    def __init__(self, store: Any, name: str) -> None:
        manifest = store.get_manifest(name)
        if manifest is None:
            raise StoreError(f"no task '{name}' in the store {store.url} (tasks: {', '.join(store.tasks()) or 'none'})")
        self.store = store
        self.name = name
        self.manifest = manifest
        self._inputs: dict[InputID, dict[str, ValueRef]] = {input_id: refs for input_id, refs in manifest["inputs"]}

    def __repr__(self) -> str:
        return f"<task '{self.name}' in {self.store.url}: {len(self._inputs)} inputs, fields {self.fields}>"

    @property
    def input_ids(self) -> list[InputID]:
        """The input ids, in the task's order."""
        return list(self._inputs)

    @property
    def fields(self) -> list[str]:
        """Names of the stored fields (of any input), sorted."""
        return sorted({name for refs in self._inputs.values() for name in refs})

    @property
    def config(self) -> dict[str, Any]:
        """The hyperparameters the task was run with (before per-input adoption)."""
        return self.manifest["config"]

    @property
    def spec(self) -> dict[str, Any]:
        """The full task specification adopted for the config."""
        return self.manifest["spec"]

    @property
    def stages(self) -> dict[str, str]:
        """The implementation hash of each stage, by stage id."""
        return self.manifest["stages"]

    @property
    def times(self) -> dict[str, dict[InputID, float]]:
        """Run time in seconds of each stage for each input: `times[stage][input_id]`."""
        table: dict[str, dict[InputID, float]] = {}
        for stage_id, input_id, seconds in self.manifest["times"]:
            table.setdefault(stage_id, {})[input_id] = seconds
        return table

    @property
    def created(self) -> float:
        """When the task completed (seconds since the epoch)."""
        return self.manifest["created"]

    def refs(self, input_id: InputID) -> dict[str, ValueRef]:
        """The references (digest, codec, size) of the fields of `input_id`."""
        if input_id not in self._inputs:
            raise KeyError(f"task '{self.name}' has no input {input_id!r} (inputs: {self.input_ids})")
        return self._inputs[input_id]

    def field(self, input_id: InputID, name: str, lazy: bool = False) -> Any:
        """The value of field `name` of `input_id`; with `lazy`, arrays come back as `zarr.Array`."""
        refs = self.refs(input_id)
        if name not in refs:
            raise KeyError(f"task '{self.name}', input {input_id!r} has no field '{name}' (fields: {sorted(refs)})")
        context = {"task": self.name, "input": input_id, "field": name}
        return self.store.get_value(refs[name], lazy=lazy, context=context)

    def load(
        self, input_ids: list[InputID] | None = None, fields: list[str] | None = None, lazy: bool = False
    ) -> dict[InputID, dict[str, Any]]:
        """The task data of `input_ids` (default: all), with `fields` (default: all stored)."""
        selected = self.input_ids if input_ids is None else list(input_ids)
        return {
            input_id: {
                name: self.field(input_id, name, lazy=lazy)
                for name in (self.refs(input_id) if fields is None else fields)
            }
            for input_id in selected
        }
