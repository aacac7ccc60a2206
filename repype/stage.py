"""Stages: the steps of a pipeline, each reading some fields of the pipeline data and writing others."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import types
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol

import xxhash

import repype.status
from repype import fingerprint

_CLASS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN = re.compile(r"[0-9]+|[A-Z]+(?![a-z])|[A-Z]?[a-z]+")
EVENTS = ("start", "end", "skip")
StageEvent = Literal["start", "end", "skip", "after"]
"""The events a stage callback can be registered for (`after` means both `end` and `skip`)."""
_FIELD_COLLECTIONS = frozenset({"inputs", "outputs", "consumes"})


class StageCallback(Protocol):
    """What :meth:`Stage.add_callback` accepts: called with keyword arguments only."""

    def __call__(
        self, *, stage: Stage, event: StageEvent, pipeline: Any, input_id: Any, data: dict, config: Any, status: Any
    ) -> None: ...


def suggest_stage_id(class_name: str) -> str:
    """A stage id derived from a class name: lower-case tokens joined by hyphens.

    Runs of capitals or digits stay together and a trailing `Stage` token is dropped, e.g.
    `TheGreat123PCMapper` → `the-great-123-pc-mapper`, `ABCStage` → `abc`.
    Raises `AssertionError` for a string that is not a valid class name.
    """
    if not _CLASS_NAME.match(class_name):
        raise AssertionError(f'Not a valid class name: "{class_name}"')
    tokens = _TOKEN.findall(class_name)
    if not tokens:
        raise AssertionError(f'Cannot derive a stage id from the class name "{class_name}"')
    if len(tokens) > 1 and tokens[-1] == "Stage":
        tokens = tokens[:-1]
    return "-".join(token.lower() for token in tokens)


def file_digest(path: str | os.PathLike) -> str:
    """Content digest (xxh3-128 hex) of a file, for use in :meth:`Stage.key_material`."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class Stage:
    """A pipeline stage. Subclass it and implement :meth:`process`.

    Class attributes: `inputs`, `outputs`, `consumes` (field names; a consumed field is read and
    then removed from the pipeline data), `enabled_by_default`, optional `id` (defaults to
    :func:`suggest_stage_id` of the class name) and optional `signature_bump`.
    """

    id: str | None = None
    inputs: Iterable[str] = frozenset()
    outputs: Iterable[str] = frozenset()
    consumes: Iterable[str] = frozenset()
    enabled_by_default: bool = True

    def __init__(self) -> None:
        cls = type(self)
        self.id = cls.id if cls.id is not None else suggest_stage_id(cls.__name__)
        if self.id.endswith("+"):
            raise AssertionError(f'Stage id must not end with "+": "{self.id}"')
        self.consumes = cls.consumes
        self.inputs = cls.inputs
        self.outputs = cls.outputs
        self.callbacks: dict[str, list[Callable]] = {event: [] for event in EVENTS}

    def __setattr__(self, name: str, value: Any) -> None:
        # Field collections may be given as lists anywhere (as upstream's examples do); instances always
        # hold frozensets, and `inputs` always includes the consumed fields.
        if name in _FIELD_COLLECTIONS:
            value = frozenset(value)
            if name == "inputs":
                self.__dict__["_read"] = value
                value |= self.__dict__.get("consumes", frozenset())
            elif name == "consumes":
                self.__dict__["inputs"] = self.__dict__.get("_read", frozenset()) | value
        super().__setattr__(name, value)

    # --- callbacks ------------------------------------------------------------------------------

    def add_callback(self, event: StageEvent, callback: StageCallback) -> None:
        """Calls `callback` on `event` (`start`, `end`, `skip`, or `after` for both end and skip)."""
        for name in self._event_names(event):
            self.callbacks[name].append(callback)

    def remove_callback(self, event: StageEvent, callback: StageCallback) -> None:
        """Stops calling `callback` on `event` (`after` removes it from `end` and `skip`)."""
        for name in self._event_names(event):
            self.callbacks[name].remove(callback)

    def _event_names(self, event: str) -> tuple[str, ...]:
        if event == "after":
            return ("end", "skip")
        if event not in EVENTS:
            raise ValueError(f"Stage '{self.id}': unknown event '{event}' (use one of {', '.join(EVENTS)}, after)")
        return (event,)

    def callback(self, event: str, **kwargs: Any) -> None:
        """Calls the callbacks of `event` with `stage`, `event` and `kwargs` as keyword arguments."""
        for callback in list(self.callbacks[event]):
            callback(stage=self, event=event, **kwargs)

    # --- work -----------------------------------------------------------------------------------

    def process(self, pipeline: Any, config: Any, status: Any = None, **inputs: Any) -> dict[str, Any]:
        """Computes the output fields from the input fields (given as keyword arguments)."""
        raise NotImplementedError(f"Stage '{self.id}' does not implement process()")

    def configure(self, pipeline: Any, input_id: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Rules for automatic hyperparameters: `{key: (factor, default_user_factor[, limits])}`.

        See :meth:`repype.pipeline.Pipeline.configure`.
        """
        return {}

    def key_material(self, pipeline: Any, input_id: Any, config: Any) -> Any:
        """Extra JSON-able material for the store key of this stage's execution on `input_id`.

        Override it when the stage reads something outside the pipeline data, e.g. return
        `file_digest(path)` of a file named in the hyperparameters, so that editing the file
        is not answered from the store. Default: `None` (nothing extra).
        """
        return None

    def is_enabled(self, config: Any) -> bool:
        """Whether the stage runs with the hyperparameters `config` (its `enabled` key, else `enabled_by_default`)."""
        entries = getattr(config, "entries", config)
        return bool(entries.get("enabled", self.enabled_by_default))

    def run(self, pipeline: Any, input_id: Any, data: dict, config: Any, status: Any = None, **kwargs: Any) -> float:
        """Runs the stage on `data` (updated in place) if enabled; returns the seconds taken.

        A disabled stage (hyperparameter `enabled`) is skipped and takes 0 seconds. Raises
        `AssertionError` naming the stage when `process` returns fields other than `outputs`.
        """
        if not self.is_enabled(config):
            self.skip(pipeline, input_id, data, config, status, **kwargs)
            return 0.0
        events = dict(pipeline=pipeline, input_id=input_id, data=data, config=config, status=status)
        self.callback("start", **events)
        repype.status.update(status, info="start-stage", stage=self.id, intermediate=True)
        inputs = {name: data[name] for name in self.inputs}
        started = time.perf_counter()
        outputs = self.process(pipeline=pipeline, config=config, status=status, **inputs, **kwargs)
        elapsed = time.perf_counter() - started
        self._check_outputs(outputs)
        data.update(outputs)
        for name in self.consumes:
            del data[name]
        self.callback("end", **events)
        return elapsed

    def _check_outputs(self, outputs: Any) -> None:
        # An explicit raise, not `assert`: the check must hold under `python -O` too.
        if not isinstance(outputs, dict):
            raise AssertionError(f"Stage '{self.id}' returned {type(outputs).__name__}, expected a dict")
        missing = sorted(self.outputs - outputs.keys())
        spurious = sorted(outputs.keys() - self.outputs)
        if missing or spurious:
            raise AssertionError(f"Stage '{self.id}' produced wrong outputs: missing {missing}, spurious {spurious}")

    def skip(self, pipeline: Any, input_id: Any, data: dict, config: Any, status: Any = None, **kwargs: Any) -> None:
        """Skips the stage (fires the `skip` event)."""
        repype.status.update(status, info="skip-stage", stage=self.id, intermediate=True)
        self.callback("skip", pipeline=pipeline, input_id=input_id, data=data, config=config, status=status, **kwargs)

    # --- identity -------------------------------------------------------------------------------

    @property
    def signature(self) -> dict[str, Any]:
        """A JSON-able description of the implementation of this stage.

        It covers the code of every method defined by the stage class and its bases other than
        `Stage` itself, mixins included (as a syntax tree when the source is available, so
        comments, formatting and docstrings do not count; otherwise bytecode with its constants
        and default argument values), its JSON-able class attributes (`inputs`, `outputs`, ...)
        and `signature_bump`; and, under `closure`, the user code those methods reach through
        their globals, closures and default values, transitively: module-level functions,
        classes and constants (see :func:`repype.fingerprint.reach`). Installed distributions
        they reach count by name and version (`distributions`); the standard library does not
        count. It is the same in every process. Fingerprints are computed once per function object.

        It cannot see what is reached without being named in the code (a name built at run
        time and passed to `getattr`, code loaded from files at run time) nor the state of
        objects other than plain data: change `signature_bump` (any JSON-able value) when such
        code changes the results.
        """
        classes = [cls for cls in type(self).__mro__ if cls not in (Stage, object)]  # mixins included
        methods: dict[str, types.FunctionType] = {}
        attributes: dict[str, Any] = {}
        others: dict[str, Any] = {}
        for cls in reversed(classes):
            for name, member in vars(cls).items():
                function = fingerprint.function_of(member)
                if function is not None:
                    methods[name] = function
                elif not name.startswith("__"):
                    jsonable = fingerprint.as_json(member)
                    if jsonable is not fingerprint.NOT_JSON:
                        attributes[name] = jsonable
                    else:
                        others[f"{cls.__qualname__}.{name}"] = member
        attributes["id"] = self.id
        reached = fingerprint.reach(methods.values(), values=others, exclude=classes, home=type(self).__module__)
        return {
            "id": self.id,
            "methods": {name: fingerprint.code_fingerprint(function) for name, function in methods.items()},
            "attributes": attributes,
            "closure": reached.code,
            "distributions": reached.distributions,
        }

    @property
    def sha(self) -> str:
        """SHA-1 hex digest of :attr:`signature` (see :func:`signature_sha`)."""
        return signature_sha(self.signature)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.signature == self.signature

    def __hash__(self) -> int:
        return hash(self.sha)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} '{self.id}'>"


def signature_sha(signature: dict[str, Any]) -> str:
    """SHA-1 hex digest of a stage's :attr:`Stage.signature`: what `Stage.sha` is, for a signature already at hand."""
    text = json.dumps(signature, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()
