"""Tasks: the nodes of a task tree, each a directory with a `task.yml`.

A child task inherits the specification of its parent and overrides parts of it. Results of
tasks live in a content-addressed store (see :mod:`repype.store`); the task directory keeps
only small digest files (`.task.json`, `.sha.json`) and `times.csv`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Literal

import yaml

import repype.pipeline
import repype.status
import repype.store
from repype import checks
from repype.benchmark import Benchmark
from repype.canonical import canonical_json
from repype.config import Config
from repype.errors import TaskError
from repype.executor import Executor, create_executor
from repype.files import write_text_atomically
from repype.graph import run_graph
from repype.pipeline import Pipeline
from repype.plan import PlanContext, Recorded, supplying_task
from repype.results import load_data, manifest_of, run_from_data
from repype.runner import InputRun, InputRunner, open_shared_store, progress_event
from repype.spec import decode_input_ids, load_from_module, validate_spec  # the first two: upstream names here
from repype.stage import Stage
from repype.typing import InputID, PathLike, PipelineData, TaskData

PendingReason = Literal["incomplete", "pipeline", "specification", ""]
"""Reasons why a task is pending, or not pending at all (the empty string)."""

LOCATION_KEYS = ("store", "storage_options")
"""Spec keys that say where results live, not what they are: never part of a digest."""

DEFAULT_STORE_DIRNAME = ".repype"


# --- module-level helpers -------------------------------------------------------------------


def _deep_freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({key: _deep_freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_deep_freeze(item) for item in value)
    return value


# --- the task -------------------------------------------------------------------------------


class Task:
    """Task in batch processing.

    Each task can have a parent task, so each task is part of a task tree.

    Args:
        path: The path to the task directory.
        spec: The task specification.
        parent: The parent task of this task.
    """

    def __init__(self, path: PathLike, spec: dict, parent: Task | None = None):
        self.path = pathlib.Path(path)
        self.spec = spec if spec is not None else {}
        self.parent = parent
        validate_spec(self.path, self.spec)
        self.findings: list[checks.Finding] = []
        """What the last :meth:`run` found: hyperparameters that a stage never read (**new**)."""

    def __repr__(self) -> str:
        return f"Task({str(self.path)!r})"

    # --- the tree and the specification ---------------------------------------------------

    @property
    def full_spec(self) -> dict[str, Any]:
        """The full specification of the task, including the parent task specifications.

        A deep merge: the child wins, nested mappings merge, lists are replaced.
        """
        if self.parent is None:
            return dict(self.spec)
        return Config(self.parent.full_spec).copy().merge(self.spec).entries  # child wins, lists replaced

    @property
    def runnable(self) -> bool:
        """True if the task is runnable (the `runnable` spec key), False otherwise."""
        return bool(self.full_spec.get("runnable", False))

    @property
    def input_ids(self) -> list[InputID]:
        """The identifiers of the inputs of the task (see :func:`decode_input_ids`)."""
        try:
            return decode_input_ids(self.full_spec.get("input_ids"))
        except ValueError as error:
            raise ValueError(f"task {self.path}: invalid input_ids: {error}") from error

    @property
    def root(self) -> Task:
        """The root task of the task tree."""
        return self.parent.root if self.parent else self

    @property
    def parents(self) -> Iterator[Task]:
        """Generator which yields all parent tasks of this task, starting with the immediate parent."""
        task = self.parent
        while task is not None:
            yield task
            task = task.parent

    @property
    def marginal_stages(self) -> Iterator[str]:
        """The stages which are considered marginal (the `marginal_stages` spec key).

        Outputs of marginal stages are removed from the pipeline data objects when storing the
        results of the task. Yields stage ids; dotted stage class paths are resolved to ids.
        """
        for entry in self.full_spec.get("marginal_stages", []) or []:
            if "." in entry:
                try:
                    stage_cls = load_from_module(entry)
                except ImportError as error:
                    raise ImportError(f"task {self.path}: 'marginal_stages': {error}") from error
                yield getattr(stage_cls, "id", None) or stage_cls().id
            else:
                yield entry

    @property
    def ref_name(self) -> str:
        """The task's path relative to its root task, as named in the store ("." for the root)."""
        return self.path.resolve().relative_to(self.root.path.resolve()).as_posix()

    def resolve_path(self, path: PathLike | None) -> pathlib.Path | None:
        """Resolves a path relatively to the task directory.

        `~` is expanded and these placeholders are replaced: ``{DIRNAME}`` (the name of the task
        directory) and ``{ROOTDIR}`` (the root directory of the task tree).
        """
        if path is None:
            return None
        path = pathlib.Path(self._substitute(os.path.expanduser(str(path))))
        if not path.is_absolute():
            path = self.path / path
        return path.resolve()

    def _substitute(self, text: str) -> str:
        return text.replace("{DIRNAME}", self.path.name).replace("{ROOTDIR}", str(self.root.path.resolve()))

    def get_full_spec_with_config(self, config: Config) -> dict[str, Any]:
        """Get the full specification of the task adopted for the config.

        The store location (`store`, `storage_options`) is left out: it says where results
        live, not what they are.
        """
        spec = {key: value for key, value in self.full_spec.items() if key not in LOCATION_KEYS}
        spec["config"] = config.entries
        return spec

    def compute_sha(self, config: Config | None = None) -> str:
        """Compute the SHA-1 hash of the full task specification adopted for the config."""
        spec = self.full_spec if config is None else self.get_full_spec_with_config(config)
        spec = {key: value for key, value in spec.items() if key not in LOCATION_KEYS}
        return hashlib.sha1(canonical_json(spec).encode("utf8")).hexdigest()

    def create_config(self) -> Config:
        """Creates object which represents the hyperparameters of this task.

        The hyperparameters are combined from three sources, later ones taking precedence: the
        hyperparameters of the parent task, the `base_config_path` file of this task's own
        specification (if any), and the `config` section of this task's own specification.
        Changes to the returned object are not reflected in the task specification.
        """
        config = Config(self.spec.get("config") or {}).copy()
        base_config_path = self.spec.get("base_config_path")
        if base_config_path:
            path = self.resolve_path(base_config_path)
            if not path.is_file():
                raise FileNotFoundError(f"task {self.path}: base_config_path '{base_config_path}' not found ({path})")
            with path.open() as file:
                config = Config(yaml.safe_load(file) or {}).merge(config)
        if self.parent:
            return self.parent.create_config().merge(config)
        return config

    def create_pipeline(self, *args, **kwargs) -> Pipeline:
        """Instantiates and returns the pipeline from the task specification.

        Can be overridden in subclasses to create custom pipelines.
        """
        entry = self.full_spec.get("pipeline")
        if entry is None:
            raise TaskError(f"task {self.path}: the specification names no pipeline")
        scopes = {key: self.resolve_path(value) for key, value in (self.full_spec.get("scopes") or {}).items()}
        try:
            if isinstance(entry, str):
                return self._load_class(entry, Pipeline)(*args, scopes=scopes, **kwargs)
            stages = [self._load_class(stage, Stage)() for stage in entry]
        except ImportError as error:
            raise ImportError(f"task {self.path}: {error}") from error
        try:
            return repype.pipeline.create_pipeline(stages, *args, scopes=scopes, **kwargs)
        except (AssertionError, RuntimeError) as error:  # duplicate stage ids or outputs, no order by data flow
            raise TaskError(f"task {self.path}: 'pipeline': {error}") from error

    def _load_class(self, name: str, base: type) -> type:
        loaded = load_from_module(name)
        if not (isinstance(loaded, type) and issubclass(loaded, base)):
            kind = type(loaded).__name__ if not isinstance(loaded, type) else f"class {loaded.__name__}"
            raise TaskError(f"task {self.path}: 'pipeline': '{name}' is a {kind}, not a {base.__name__} subclass")
        return loaded

    def setup_callbacks(self, pipeline: Pipeline) -> None:
        """Add callbacks to the pipeline stages for methods named ``on_<stage id>_<event>``.

        Hyphens in stage ids become underscores; events are `start`, `end`, `skip`, `after`.
        """
        for stage in pipeline.stages:
            for event in ("start", "end", "skip", "after"):
                callback = getattr(self, f"on_{stage.id.replace('-', '_')}_{event}", None)
                if callback is not None:
                    stage.add_callback(event, callback)

    # --- digests in the task directory ----------------------------------------------------

    @property
    def digest_task_filepath(self) -> pathlib.Path:
        """The path to the full task specification of the task completion."""
        return self.resolve_path(".task.json")

    @property
    def digest_sha_filepath(self) -> pathlib.Path:
        """The path to the hash values of the task completion (task spec and stages)."""
        return self.resolve_path(".sha.json")

    @property
    def times_filepath(self) -> pathlib.Path:
        """The path to the run times of the task completion (CSV, stage x input)."""
        return self.resolve_path("times.csv")

    @property
    def digest(self) -> Mapping[str, Any] | None:
        """Immutable full specification of the task completion (or None)."""
        if not self.digest_task_filepath.is_file():
            return None
        return _deep_freeze(json.loads(self.digest_task_filepath.read_text()))

    @property
    def times(self) -> Benchmark:
        """Run times of the task completion, a `Benchmark` indexed by stage id and input id."""
        return Benchmark(self.times_filepath)

    def _digest_sha(self) -> dict | None:
        if not self.digest_sha_filepath.is_file():
            return None
        return json.loads(self.digest_sha_filepath.read_text())

    # --- the store ------------------------------------------------------------------------

    @property
    def store_url(self) -> str:
        """Where the task's results live: the `store` spec key, resolved.

        Relative paths resolve against the directory of the task whose `task.yml` declares the
        key, so its children share one store. Default: `.repype` in the root task's directory.
        """
        for task in (self, *self.parents):
            if task.spec.get("store"):
                location = self._substitute(os.path.expanduser(str(task.spec["store"])))
                if "://" in location:
                    return location
                path = pathlib.Path(location)
                return str((path if path.is_absolute() else task.path / path).resolve())
        return str((self.root.path / DEFAULT_STORE_DIRNAME).resolve())

    def open_store(self, mode: str = "a") -> repype.store.Store:
        """Open the task's store (shared by every task of this process that names the same one)."""
        options = self.full_spec.get("storage_options") or None
        try:
            return open_shared_store(self.store_url, options, mode)
        except repype.store.StoreUnavailableError as error:
            raise repype.store.StoreUnavailableError(f"task {self.path}: {error}") from error

    def _existing_store(self) -> repype.store.Store | None:
        """The task's store opened read-only, or None when it does not exist yet (creates nothing)."""
        try:
            return self.open_store(mode="r")
        except repype.store.StoreMissingError:
            return None

    # --- pending, pick-up ------------------------------------------------------------------

    def is_pending(self, pipeline: Pipeline, config: Config) -> PendingReason:
        """Tells whether the task needs to run, and why.

        Returns `'incomplete'` when the task was never completed or its results are gone from
        the store, `'pipeline'` when a stage is new or its implementation changed,
        `'specification'` when the specification or hyperparameters changed, and `''` when
        the task is completed or not runnable.
        """
        if not self.runnable:
            return ""
        hashes = self._digest_sha()
        if hashes is None:
            return "incomplete"
        if not self._has_manifest():
            return "incomplete"
        if any(hashes["stages"].get(stage.id) != stage.sha for stage in pipeline.stages):
            return "pipeline"
        if hashes["task"] != self.compute_sha(config):
            return "specification"
        return ""

    def _has_manifest(self) -> bool:
        """Whether the store holds the task's ref and an intact manifest header (a damaged one is none)."""
        store = self._existing_store()
        try:
            return store is not None and store.get_manifest(self.ref_name) is not None
        except repype.store.IntegrityError:
            return False

    def find_first_diverging_stage(self, pipeline: Pipeline, config: Config) -> Stage | None:
        """Find the first diverging stage of the task.

        Stages are diverging if they are new, or if their implementation or hyperparameters
        changed since the task was completed (the first stage when never completed). Returns
        None when no stage diverges.
        """
        hashes, digest = self._digest_sha(), self.digest
        if hashes is None or digest is None:
            return pipeline.stages[0] if pipeline.stages else None
        completed_config = digest.get("config", {})
        for stage in pipeline.stages:
            if hashes["stages"].get(stage.id) != stage.sha:
                return stage
            completed = _thaw(completed_config.get(stage.id, {}))
            if completed != config.entries.get(stage.id, {}):  # get() would insert the default
                return stage
        return None

    def find_pickup_task(self, pipeline: Pipeline, config: Config) -> dict[str, Task | Stage | None]:
        """Find a previously completed task to pick up computations from.

        Returns a dictionary with `task` (the task among this task and its parents to pick up
        from, or None) and `first_diverging_stage` (the first stage that needs to run, or None
        when no further computations are required). The run itself reuses every stage
        execution in the store, which may be more than this task-level view shows.
        """
        candidates = [*self.parents, self]
        diverging = {task: task.find_first_diverging_stage(pipeline, config) for task in candidates}
        for task, stage in diverging.items():
            if stage is None:
                return {"task": task, "first_diverging_stage": None}
        first = pipeline.stages[0] if pipeline.stages else None
        best = max(candidates, key=lambda task: pipeline.find(diverging[task].id))
        if diverging[best] is first:
            return {"task": None, "first_diverging_stage": first}
        return {"task": best, "first_diverging_stage": diverging[best]}

    # --- marginals ------------------------------------------------------------------------

    def get_marginal_fields(self, pipeline: Pipeline) -> frozenset[str]:
        """The outputs of the marginal stages of `pipeline` (see :attr:`marginal_stages`)."""
        marginal = set(self.marginal_stages)
        return frozenset(name for stage in pipeline.stages if stage.id in marginal for name in stage.outputs)

    def strip_marginals(self, pipeline: Pipeline, data_chunk: PipelineData) -> PipelineData:
        """Shallow copy of the pipeline data object `data_chunk` without the marginal fields."""
        marginal = self.get_marginal_fields(pipeline)
        return {name: value for name, value in data_chunk.items() if name not in marginal}

    # --- running --------------------------------------------------------------------------

    def run(
        self,
        config: Config,
        pipeline: Pipeline | None = None,
        pickup: bool = True,
        strip_marginals: bool = True,
        status: Any = None,
        executor: Executor | int | str | None = None,
        *,
        return_data: bool = True,
        recorded: Recorded | None = None,
    ) -> TaskData | None:
        """Run the task and return its task data object.

        With `pickup`, every stage execution recorded in the store is reused (whichever task
        recorded it); stages that must run write their outputs to the store as they finish.
        The `start` status event names as `pickup` the task that supplies the reused
        executions (the one whose manifest references most of them), or None.
        On completion the manifest and ref are written to the store, then `.task.json`,
        `.sha.json` and `times.csv` to the task directory.

        Without `pipeline`, the task creates one with :meth:`create_pipeline` and connects its
        ``on_<stage>_<event>`` methods with :meth:`setup_callbacks`; a given pipeline is used as is.

        With `return_data=False` (**new**), nothing is loaded back from the store and None is
        returned: what a batch does, since nobody receives the data there.

        `recorded` (**new**) is what the batch's plan found recorded for this task (see
        :func:`repype.plan.recorded_of`): those executions are adopted without asking the store
        again, and the plan's supplier is named in the `start` event.

        Afterwards :attr:`findings` lists the hyperparameters of the task's config that a stage
        which ran never read (on any input; a likely typo, with the closest name it did read),
        each also reported to `status` as an event with `info="finding"` and a `text` line.

        `executor` (**new**) runs the stage executions in parallel: None or 1 runs the inputs
        here, in order; an int N runs the executions in N local processes; `'dask'` on a local
        Dask cluster; a scheduler address on that Dask cluster (see
        :func:`repype.executor.create_executor` and :mod:`repype.graph`). Workers open the store
        by URL, so it must be reachable from them. A failing stage raises its
        :class:`repype.pipeline.StageError` once the other inputs are resolved.
        """
        if not self.runnable:
            raise TaskError(f"task {self.path} is not runnable")
        if pipeline is None:
            pipeline = self.create_pipeline()
            self.setup_callbacks(pipeline)
        workers = create_executor(executor)
        try:
            if workers.remote:
                runner, runs = self._run_in_parallel(workers, pipeline, config, pickup, status)
            else:
                runner, runs = self._run_here(pipeline, config, pickup, status, recorded)
        finally:
            if workers is not executor:  # close only what this run created
                workers.close()
        data = {run.input_id: self._data_of(runner, run, strip_marginals) for run in runs} if return_data else None
        return data

    def _run_here(
        self, pipeline: Pipeline, config: Config, pickup: bool, status: Any, recorded: Recorded | None
    ) -> tuple[InputRunner, list[InputRun]]:
        """Resolves every input in this process, in order, then completes the task."""
        store = self.open_store()
        runner = InputRunner(store, pipeline, self.get_marginal_fields(pipeline), str(self.path), status)
        runs = [runner.start(input_id, config) for input_id in self.input_ids]
        if pickup and recorded is not None:
            for run in runs:
                for outcome in recorded.outcomes.get(run.input_id, ()):
                    runner.apply(run, outcome, ran_here=False)
        if pickup:
            runner.advance_recorded(runs)  # beyond what the plan found
        if recorded is not None:
            supplier = recorded.supplier
        else:
            supplier = supplying_task(store, [key for run in runs for key in run.record_keys])
        task = str(self.path.resolve())
        repype.status.update(
            status,
            info="start",
            task=task,
            pickup=str((self.root.path / supplier).resolve()) if supplier else None,
            first_stage=_first_stage_to_run(pipeline, runs),
            store=store.url,
            reused=sum(len(run.reused) for run in runs),
            stage_count=len(pipeline.stages) * len(runs),
        )
        stages = len(pipeline.stages)
        resolved = [run for run in runs if run.next_stage >= stages]  # by the store, before anything runs
        if resolved:  # one event for them all: a null build of many inputs would spend its time on events
            reused = sum(len(run.reused) for run in resolved)
            repype.status.update(status, info="processed", inputs=len(resolved), reused=reused, executed=0)
        with store.writing():  # a concurrent gc spares what this run writes until the task is committed
            for step, run in enumerate(runs):
                if run.next_stage >= stages:
                    continue
                repype.status.update(
                    status,
                    info="process",
                    task=task,
                    input_id=run.input_id,
                    step=step,
                    step_count=len(runs),
                )
                runner.finish(run, pickup=pickup)
                repype.status.update(status, info="processed", input_id=run.input_id, **progress_event(run))
            self.complete(runner, runs, config, status)
        return runner, runs

    def _run_in_parallel(
        self, workers: Executor, pipeline: Pipeline, config: Config, pickup: bool, status: Any
    ) -> tuple[InputRunner, list[InputRun]]:
        """Resolves the inputs' stage executions on `workers` (see :mod:`repype.graph`); raises the first failure."""
        context = PlanContext(self, pipeline, config)
        result = run_graph([context], workers, status=status, pickup=pickup, per_task_status=False)
        if result.failed:
            raise next(iter(result.failed.values()))
        return result.completed[str(self.path)]

    def complete(self, runner: InputRunner, runs: list[InputRun], config: Config, status: Any = None) -> None:
        """Completes the task with its resolved inputs `runs` (**new**; :meth:`run` calls it).

        Writes each input's adopted config (the `config` scope, if the pipeline has one), then
        the manifest and ref to the store and `.task.json`, `.sha.json` and `times.csv` to the
        task directory; then reports :attr:`findings` and the `completed` event to `status`.
        """
        for run in runs:
            self._write_input_config(runner.pipeline, run)
        repype.status.update(status, info="storing", intermediate=True)
        with runner.store.writing():
            self._commit(runner, runs, config, self._times_of(runs))
        self.findings = checks.unread_findings(str(self.path), [(run.config.entries, run.reads) for run in runs])
        for finding in self.findings:
            repype.status.update(status, str(finding), info="finding", kind=finding.kind, key=finding.key)
        repype.status.update(status, info="completed", task=str(self.path.resolve()))

    def _fields_to_store(self, pipeline: Pipeline) -> frozenset[str]:
        return frozenset(pipeline.persistent_fields) - self.get_marginal_fields(pipeline)

    def _data_of(self, runner: InputRunner, run: InputRun, strip_marginals: bool) -> PipelineData:
        names = [name for name in run.persistent_refs]
        if strip_marginals:
            marginal = runner.marginal_fields
            names = [name for name in names if name not in marginal]
        return runner.materialize(run, names)

    def _write_input_config(self, pipeline: Pipeline, run: InputRun) -> None:
        path = pipeline.resolve("config", run.input_id)
        if path is not None:
            write_text_atomically(path, run.config.yaml + "\n")

    def _times_of(self, runs: list[InputRun]) -> Benchmark:
        times = Benchmark(self.times_filepath)
        for run in runs:
            for stage_id, seconds in run.times.items():
                times[stage_id, run.input_id] = seconds
        return times

    def store(self, pipeline: Pipeline, data: TaskData, config: Config, times: Benchmark) -> None:
        """Store the computed task data object.

        Writes every non-marginal field value and, for each stage whose inputs and outputs
        are all in `data`, its stage record; then the manifest, the ref and the digest files.

        Args:
            pipeline: The pipeline used to compute data.
            data: The task data object.
            config: The hyperparameters used to compute data.
            times: The run times of the pipeline stages.
        """
        if not self.runnable:
            raise TaskError(f"task {self.path} is not runnable")
        missing = set(self.input_ids) - set(data)
        spurious = set(data) - set(self.input_ids)
        if missing or spurious:
            raise TaskError(
                f"task {self.path}: data does not match input_ids (missing {sorted(map(repr, missing))}, "
                f"spurious {sorted(map(repr, spurious))})"
            )
        store = self.open_store()
        runner = InputRunner(store, pipeline, self.get_marginal_fields(pipeline), str(self.path))
        with store.writing():
            runs = [run_from_data(runner, input_id, data[input_id], config, times) for input_id in self.input_ids]
            self._commit(runner, runs, config, times)

    def _commit(self, runner: InputRunner, runs: list[InputRun], config: Config, times: Benchmark) -> None:
        """Write the manifest and ref, then the digest files: the task is complete."""
        pipeline = runner.pipeline
        spec = self.get_full_spec_with_config(config)
        manifest = manifest_of(runner, runs, spec, config, self._fields_to_store(pipeline))
        times.retain([stage.id for stage in pipeline.stages], [run.input_id for run in runs])
        runner.store.put_manifest(self.ref_name, manifest)
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.digest_task_filepath, json.dumps(spec))
        write_text_atomically(
            self.digest_sha_filepath, json.dumps({"stages": manifest.stages, "task": self.compute_sha(config)})
        )
        times.save()

    # --- loading and resetting ------------------------------------------------------------

    def load(
        self,
        pipeline: Pipeline | None = None,
        *,
        input_ids: list[InputID] | None = None,
        fields: list[str] | None = None,
        lazy: bool = False,
        allow_pickle: bool = True,
    ) -> TaskData:
        """Load the previously computed task data object from the store.

        A full load verifies that the stored data holds results for exactly the task's input
        ids and, if `pipeline` is given, exactly its non-marginal persistent fields (plus
        `input_id`). `input_ids` and `fields` load a subset (exactly the fields named); with
        `lazy`, array fields come back as `zarr.Array` objects that read only what is sliced.
        With `allow_pickle=False`, a pickled field raises `repype.store.PickleRefusedError`
        instead of being unpickled (unpickling can run code). A damaged value raises
        `repype.store.IntegrityError` naming the task, input and field.
        """
        if not self.runnable:
            raise TaskError(f"task {self.path} is not runnable")
        store = self._existing_store()
        manifest = None if store is None else store.get_manifest(self.ref_name)
        if manifest is None:
            raise TaskError(f"task {self.path} has no results in the store {self.store_url} (run it first)")
        return load_data(
            store,
            manifest,
            f"task {self.path}",
            self.ref_name,
            expected_inputs=self.input_ids,
            required_fields=None if pipeline is None else self._fields_to_store(pipeline),
            input_ids=input_ids,
            fields=fields,
            lazy=lazy,
            allow_pickle=allow_pickle,
        )

    def reset(self) -> None:
        """Reset the task: it becomes incomplete.

        Removes the digest files and `times.csv` from the task directory and the task's ref
        from the store; values shared with other tasks stay until garbage collection.
        """
        for path in (self.digest_task_filepath, self.digest_sha_filepath, self.times_filepath):
            path.unlink(missing_ok=True)
        self.open_store().delete_ref(self.ref_name)


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


def _first_stage_to_run(pipeline: Pipeline, runs: list[InputRun]) -> str | None:
    """The earliest stage that some input still has to run after the store lookups."""
    pending = [run.next_stage for run in runs if run.next_stage < len(pipeline.stages)]
    return pipeline.stages[min(pending)].id if pending else None
