"""Pipelines: ordered stages run on the inputs of a task, with automatic hyperparameters."""

from __future__ import annotations

import builtins
import math
import pathlib
import traceback
from collections.abc import Iterable, Sequence
from typing import Any

from repype.config import Config
from repype.stage import Stage
from repype.typing import InputID


class StageError(Exception):
    """A stage failed; `stage` is the failed stage and the original error is chained as `__cause__`.

    `input_id` names the input it failed on (when known); :attr:`stage_traceback` is the
    traceback of the original error, which survives the trip back from worker processes.
    """

    def __init__(
        self, stage: Stage, message: str | None = None, input_id: Any = None, stage_traceback: str | None = None
    ) -> None:
        super().__init__(f"Stage '{stage.id}' failed")
        self.stage = stage
        self.input_id = input_id
        self._message = message
        self._traceback = stage_traceback

    def __reduce__(self) -> tuple:
        return (type(self), (self.stage, str(self), self.input_id, self.stage_traceback))

    @property
    def stage_traceback(self) -> str:
        """The traceback of the error raised by the stage itself (empty when there is none)."""
        if self._traceback is None and self.__cause__ is not None:
            self._traceback = "".join(traceback.format_exception(self.__cause__))
        return self._traceback or ""

    def __str__(self) -> str:
        if self._message is not None:
            return self._message
        cause = self.__cause__
        where = f" on input {self.input_id!r}" if self.input_id is not None else ""
        detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        return f"Stage '{self.stage.id}' failed{where}{detail}"


def run_stage(
    pipeline: Pipeline, stage: Stage, input_id: InputID, data: dict, config: Any, status: Any = None, **kwargs: Any
) -> float:
    """Runs `stage` on `data` (updated in place; a disabled stage is skipped); returns the seconds taken.

    Every stage execution goes through here, whether :meth:`Pipeline.process` or the store-driven
    runner (:mod:`repype.runner`) runs it. A failure raises :class:`StageError` naming the stage
    and the input, chained to the original error.
    """
    try:
        return stage.run(pipeline, input_id, data, config, status=status, **kwargs)
    except Exception as error:
        raise StageError(stage, input_id=input_id) from error


def failure_details(error: BaseException) -> dict[str, Any]:
    """The fields of an `error` status event about `error`: its message and traceback, and the stage
    and input it failed on when a stage failed (its own traceback then)."""
    stage_error = error if isinstance(error, StageError) else None
    return {
        "message": str(error) or type(error).__name__,
        "traceback": stage_error.stage_traceback if stage_error else "".join(traceback.format_exception(error)),
        "stage": stage_error.stage.id if stage_error else None,
        "input_id": stage_error.input_id if stage_error else None,
    }


def create_config_entry(
    config: Config,
    key: str,
    factor: Any,
    default_user_factor: Any,
    type: Any = None,
    min: Any = None,
    max: Any = None,
) -> None:
    """Sets `key` (when missing or None) to `factor` times the user factor `AF_<name>`.

    The user factor lives beside `key` (`stage/AF_param`) and defaults to
    `default_user_factor`; the result is cast with `type` and clamped to `min`/`max`.
    """
    *parents, name = key.split("/")
    factor_key = "/".join([*parents, f"AF_{name}"])
    config.set_default(key, factor * config.get(factor_key, default_user_factor), override_none=True)
    if type is not None:
        config.update(key, type)
    if max is not None:
        config.update(key, lambda value: builtins.min(value, max))
    if min is not None:
        config.update(key, lambda value: builtins.max(value, min))


class Pipeline:
    """An ordered list of stages.

    Args:
        stages: The stages, in the order they run.
        scopes: Named path patterns with a `%s` placeholder for the input id (see :meth:`resolve`).
    """

    def __init__(self, stages: Iterable[Stage] = (), scopes: dict[str, Any] | None = None) -> None:
        self.stages: list[Stage] = []
        self.scopes: dict[str, Any] = dict(scopes or {})
        for stage in stages:
            self.append(stage)

    # --- structure ------------------------------------------------------------------------------

    def find(self, stage_id: str, not_found_dummy: Any = math.inf) -> Any:
        """Index of the stage with `stage_id`, or `not_found_dummy`."""
        for index, stage in enumerate(self.stages):
            if stage.id == stage_id:
                return index
        return not_found_dummy

    def stage(self, stage_id: str) -> Stage | None:
        """The stage with `stage_id`, or `None`."""
        index = self.find(stage_id, None)
        return None if index is None else self.stages[index]

    def append(self, stage: Stage, after: str | int | None = None) -> int:
        """Adds `stage` at the end, or after the stage `after` (an id or an index); returns its index.

        Raises `RuntimeError` when the stage object or its id is already in the pipeline.
        """
        for present in self.stages:
            if present is stage:
                raise RuntimeError(f"Stage '{stage.id}' is already in the pipeline")
            if present.id == stage.id:
                raise RuntimeError(f"A stage with id '{stage.id}' is already in the pipeline")
        if after is None:
            self.stages.append(stage)
            return len(self.stages) - 1
        if isinstance(after, str):
            index = self.find(after, None)
            if index is None:
                raise ValueError(f"Cannot append stage '{stage.id}' after unknown stage '{after}'")
            after = index
        self.stages.insert(after + 1, stage)
        return after + 1

    @property
    def fields(self) -> frozenset[str]:
        """`input_id` and every output of every stage."""
        return frozenset({"input_id"}).union(*(stage.outputs for stage in self.stages))

    @property
    def persistent_fields(self) -> frozenset[str]:
        """:attr:`fields` without the fields consumed by a stage."""
        return self.fields - frozenset().union(*(stage.consumes for stage in self.stages))

    def resolve(self, scope: str, input_id: InputID | None = None) -> pathlib.Path | None:
        """Absolute path of `scope` for `input_id`, or `None` if the scope is unknown or `input_id` is None."""
        pattern = self.scopes.get(scope)
        if pattern is None or input_id is None:
            return None
        return pathlib.Path(str(pattern) % input_id).resolve()

    # --- hyperparameters -----------------------------------------------------------------------

    def configure(self, base_config: Config, input_id: InputID, *args: Any, **kwargs: Any) -> Config:
        """A copy of `base_config` with the automatic hyperparameters of every stage for `input_id`."""
        config = base_config.copy()
        for stage in self.stages:
            for key, rule in stage.configure(self, input_id, *args, **kwargs).items():
                if len(rule) not in (2, 3):
                    raise ValueError(f"Stage '{stage.id}': rule for '{key}' must be (factor, default[, limits])")
                limits = rule[2] if len(rule) == 3 else {}
                create_config_entry(config, f"{stage.id}/{key}", rule[0], rule[1], **limits)
        return config

    create_config_entry = staticmethod(create_config_entry)
    """The same as the module-level :func:`create_config_entry` (kept as a method too)."""

    # --- running ----------------------------------------------------------------------------------

    def _stage_index(self, stage_id: str | None, default: int) -> int:
        if stage_id is None:
            return default
        if stage_id.endswith("+"):
            return self._stage_index(stage_id[:-1], default) + 1
        index = self.find(stage_id, None)
        if index is None:
            raise ValueError(f"Unknown stage '{stage_id}' (stages: {[s.id for s in self.stages]})")
        return index

    def get_extra_stages(
        self, first_stage: str | None, last_stage: str | None, available_inputs: Iterable[str]
    ) -> list[str]:
        """Ids of stages outside the range that must run to produce inputs the range needs."""
        first = self._stage_index(first_stage, 0)
        last = self._stage_index(last_stage, len(self.stages) - 1)
        available = set(available_inputs) | {"input_id"}
        needed: set[str] = set()
        for stage in self.stages[first : last + 1]:
            needed |= stage.inputs - available
            available |= stage.outputs
        producers = {name: index for index, stage in enumerate(self.stages) for name in stage.outputs}
        extra: set[int] = set()
        while needed:
            name = needed.pop()
            index = producers.get(name)
            if index is None or first <= index <= last or index in extra:
                continue
            extra.add(index)
            needed |= self.stages[index].inputs - available
        return [self.stages[index].id for index in sorted(extra)]

    def process(
        self,
        input_id: InputID,
        config: Config,
        first_stage: str | None = None,
        last_stage: str | None = None,
        data: dict | None = None,
        status: Any = None,
        **kwargs: Any,
    ) -> tuple[dict, Config, dict[str, float]]:
        """Runs the stages from `first_stage` to `last_stage` (inclusive) on one input.

        `first_stage` may be `'x+'` for the stage after `x`. Starting later than the first stage
        requires `data`. Returns the pipeline data, the configuration and the seconds per stage.
        A failing stage raises :class:`StageError` chained to the original error.
        """
        config = config.copy()
        first = self._stage_index(first_stage, 0)
        last = self._stage_index(last_stage, len(self.stages) - 1)
        if first > last:
            return data, config, {}
        if first > 0 and data is None:
            raise ValueError("data argument must be provided if first_stage is used")
        data = {} if data is None else data
        data["input_id"] = input_id
        extra = set(self.get_extra_stages(first_stage, last_stage, data.keys()))
        times: dict[str, float] = {}
        for index, stage in enumerate(self.stages):
            stage_config = config.get(stage.id, {})
            if first <= index <= last or stage.id in extra:
                times[stage.id] = run_stage(self, stage, input_id, data, stage_config, status, **kwargs)
            else:
                stage.skip(self, input_id, data, stage_config, status=status, **kwargs)
        return data, config, times


def create_pipeline(stages: Sequence[Stage], *args: Any, pipeline_cls: type = Pipeline, **kwargs: Any) -> Pipeline:
    """A pipeline of `stages` ordered by data flow.

    Repeatedly takes the first remaining stage whose inputs are available and that does not
    consume a field another remaining stage still reads. Raises `AssertionError` for duplicate
    stage ids or outputs, and `RuntimeError` naming the stuck stages and their missing fields.
    """
    ids = [stage.id for stage in stages]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise AssertionError(f"Ambiguous stage identifiers: {duplicates}")
    outputs = ["input_id", *(name for stage in stages for name in stage.outputs)]
    ambiguous = sorted({name for name in outputs if outputs.count(name) > 1})
    if ambiguous:
        raise AssertionError(f"Ambiguous outputs (produced more than once): {ambiguous}")
    pipeline = pipeline_cls(*args, **kwargs)
    available = {"input_id"}
    remaining = list(stages)
    while remaining:
        stage = next((s for s in remaining if _can_run_next(s, remaining, available)), None)
        if stage is None:
            missing = {s.id: sorted(s.inputs - available) for s in remaining}
            raise RuntimeError(
                f"Failed to resolve the order of stages: pipeline so far {[s.id for s in pipeline.stages]}, "
                f"remaining stages with missing inputs {missing}, available fields {sorted(available)}"
            )
        remaining.remove(stage)
        pipeline.append(stage)
        available |= stage.outputs
    return pipeline


def _can_run_next(stage: Stage, remaining: list[Stage], available: set[str]) -> bool:
    if not stage.inputs <= available:
        return False
    return not any(other is not stage and stage.consumes & other.inputs for other in remaining)
