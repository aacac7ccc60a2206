"""Browsing completed tasks from the store alone (no task directories needed)."""

from __future__ import annotations

from typing import Any

from repype.store.codecs import ValueRef
from repype.store.errors import StoreError
from repype.store.manifests import InputEntry, ManifestHeader
from repype.store.table import results_table
from repype.typing import InputID


class TaskView:
    """A completed task as its manifest in the store describes it.

    Obtain one with `store.task(name)`, where `name` is the task's path relative to its root
    task (`'.'` for the root itself; `store.tasks()` lists them). Opening a view reads the
    task's ref and manifest header only; the entries of inputs are read when first needed.
    A damaged ref or manifest raises :class:`repype.store.IntegrityError` naming it.
    """

    def __init__(self, store: Any, name: str) -> None:
        ref = store.get_ref(name)
        if ref is None:
            raise StoreError(f"no task '{name}' in the store {store.url} (tasks: {', '.join(store.tasks()) or 'none'})")
        self.store = store
        self.name = name
        self.manifest: ManifestHeader = store.target(ref)
        self._created = ref.created

    def __repr__(self) -> str:
        return f"<task '{self.name}' in {self.store.url}: {len(self.input_ids)} inputs, fields {self.fields}>"

    @property
    def input_ids(self) -> list[InputID]:
        """The input ids, in the task's order."""
        return list(self.manifest.input_ids)

    @property
    def fields(self) -> list[str]:
        """Names of the stored fields (of any input), sorted."""
        return list(self.manifest.fields)

    @property
    def config(self) -> dict[str, Any]:
        """The hyperparameters the task was run with (before per-input adoption)."""
        return self.manifest.config

    @property
    def spec(self) -> dict[str, Any]:
        """The full task specification adopted for the config."""
        return self.manifest.spec

    @property
    def stages(self) -> dict[str, str]:
        """The implementation hash of each stage, by stage id."""
        return self.manifest.stages

    @property
    def times(self) -> dict[str, dict[InputID, float]]:
        """Run time in seconds of each stage for each input: `times[stage][input_id]` (reads every input's entry)."""
        table: dict[str, dict[InputID, float]] = {}
        for input_id, entry in self.entries().items():
            for stage_id, seconds in entry.times.items():
                table.setdefault(stage_id, {})[input_id] = seconds
        return table

    @property
    def created(self) -> float:
        """When the task completed (seconds since the epoch): when its ref was pointed at this manifest."""
        return self._created

    def entries(self, input_ids: list[InputID] | None = None) -> dict[InputID, InputEntry]:
        """The manifest's entries of `input_ids` (default: all): references, run times, record keys."""
        unknown = [input_id for input_id in input_ids or () if input_id not in self.manifest]
        if unknown:
            raise KeyError(f"task '{self.name}' has no input {unknown[0]!r} (inputs: {self.input_ids})")
        return self.store.manifest_inputs(self.manifest, input_ids)

    def record_keys(self) -> set[str]:
        """Keys of every stage record the task's manifest lists (reads every input's entry)."""
        return {key for entry in self.entries().values() for key in entry.records}

    def explain(self, input_id: InputID, field: str) -> Any:
        """Where the value of field `field` of `input_id` came from: a :class:`repype.store.explain.Explanation`.

        Its `derivation` is a tree of :class:`repype.store.explain.Derivation` (dataclasses,
        JSON-able with `dataclasses.asdict`): the stage that produced the value, that stage's
        code sha and hyperparameters, the digests of the fields it read and the same for each of
        those back to the input id, with the tasks listing each execution, its run time and
        whether a determinism audit marked the stage. Needs the store alone.
        """
        from repype.store.explain import explain

        return explain(self, input_id, field)

    def refs(self, input_id: InputID) -> dict[str, ValueRef]:
        """The references (digest, codec, size) of the fields of `input_id`."""
        return self.entries([input_id])[input_id].refs

    def field(self, input_id: InputID, name: str, lazy: bool = False, allow_pickle: bool | None = None) -> Any:
        """The value of field `name` of `input_id`; with `lazy`, arrays come back as `zarr.Array`.

        `allow_pickle=False` refuses a pickled value (None: as the store was opened).
        """
        return self._value(input_id, self.refs(input_id), name, lazy, allow_pickle)

    def _value(self, input_id: InputID, refs: dict[str, ValueRef], name: str, lazy: bool, allow_pickle: bool | None):
        if name not in refs:
            raise KeyError(f"task '{self.name}', input {input_id!r} has no field '{name}' (fields: {sorted(refs)})")
        context = {"task": self.name, "input": input_id, "field": name}
        return self.store.get_value(refs[name], lazy=lazy, context=context, allow_pickle=allow_pickle)

    def load(
        self,
        input_ids: list[InputID] | None = None,
        fields: list[str] | None = None,
        lazy: bool = False,
        allow_pickle: bool | None = None,
    ) -> dict[InputID, dict[str, Any]]:
        """The task data of `input_ids` (default: all), with `fields` (default: all stored)."""
        return {
            input_id: {
                name: self._value(input_id, entry.refs, name, lazy, allow_pickle)
                for name in (entry.refs if fields is None else fields)
            }
            for input_id, entry in self.entries(input_ids).items()
        }

    def table(self, fields: list[str] | None = None, config: list[str] | None = None) -> Any:
        """A pandas DataFrame with one row per input: `task`, `input_id`, hyperparameter and field columns.

        `config` names hyperparameters (`'smooth/sigma'`, or a section `'smooth'`; default: none, as
        one task's hyperparameters are the same in every row), `fields` the fields (default: the
        scalar ones). See :meth:`repype.store.Store.table` for a table across tasks.
        """
        return results_table([self], fields, [] if config is None else config)

    def to_xarray(self, field: str, input_ids: list[InputID] | None = None, dims: list[str] | None = None) -> Any:
        """Field `field` of every input (or of `input_ids`) stacked into one lazy `xarray.DataArray`.

        Its dimensions are `input_id` (a coordinate of the input ids) and the array's axes: `dims`
        if given (e.g. `['y', 'x']`), else `dim_0`, `dim_1`, ...; it reads chunks only when computed.
        The inputs' values must agree in shape (ValueError naming the field when not). Needs
        xarray and dask (`pip install 'repype[results]'`).
        """
        from repype.store.xarrays import stack_field

        return stack_field(self, field, input_ids, dims)
