"""The worker protocol of a parallel batch: one stage execution of one input, as bytes.

A :class:`StageOrder` names a stage of a task's pipeline and an input; the outcomes of the
input's earlier stages arrive beside it (as :class:`repype.runner.Outcome` objects, or Dask
futures of them). A worker opens the store by URL, brings the input to the stage with those
outcomes, then reuses the stage's record when the store has it (early cutoff) or runs the stage
and writes its outputs and record itself. Only references, and the values the order asks to
hold, travel back.

Pipelines travel as dill bytes with their digest; a worker loads each pipeline once and keeps
one runner per pipeline, so code fingerprints are computed once per worker process.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from dataclasses import dataclass, field
from typing import Any

import dill

from repype.config import Config
from repype.pipeline import Pipeline
from repype.runner import InputRunner, Outcome, open_shared_store
from repype.typing import InputID


@dataclass(frozen=True)
class ShippedPipeline:
    """A pipeline as dill bytes and their digest (a worker loads each digest once)."""

    digest: str
    payload: bytes

    @classmethod
    def of(cls, pipeline: Pipeline) -> ShippedPipeline:
        """Serialises `pipeline` (its stages must be importable in the workers, or defined by value)."""
        payload = dill.dumps(pipeline)
        return cls(hashlib.sha1(payload).hexdigest(), payload)


@dataclass
class StageOrder:
    """What a worker needs to resolve the execution of stage `stage` on one input of one task.

    `config` is the task's hyperparameters before adoption for the input; `hold` names the
    outputs whose values the outcome carries back when the stage runs.
    """

    store_url: str
    storage_options: dict | None
    pipeline: ShippedPipeline
    marginal_fields: frozenset[str]
    context: str
    input_id: InputID
    config: Config
    stage: str
    hold: frozenset[str] = frozenset()
    pickup: bool = True
    status: Any = None
    sys_path: list[str] = field(default_factory=lambda: list(sys.path))


def order_payload(order: StageOrder) -> bytes:
    """`order` as bytes for :func:`run_order`."""
    return pickle.dumps(order)


_PIPELINES: dict[str, Pipeline] = {}
_RUNNERS: dict[tuple, InputRunner] = {}


def _runner(order: StageOrder) -> InputRunner:
    """The worker's runner for the order's pipeline, store and task (created once per process)."""
    cache_key = (
        order.pipeline.digest,
        order.store_url,
        repr(order.storage_options),
        order.marginal_fields,
        order.context,
    )
    if cache_key not in _RUNNERS:
        if order.pipeline.digest not in _PIPELINES:
            _PIPELINES[order.pipeline.digest] = dill.loads(order.pipeline.payload)
        store = open_shared_store(order.store_url, order.storage_options)
        _RUNNERS[cache_key] = InputRunner(
            store, _PIPELINES[order.pipeline.digest], order.marginal_fields, order.context
        )
    return _RUNNERS[cache_key]


def run_order(payload: bytes, *priors: Outcome) -> Outcome:
    """Resolves the execution a :func:`order_payload` names (in a worker), after the `priors`.

    `priors` are the outcomes of the input's enabled stages before the order's stage, in order.
    Raises :class:`repype.pipeline.StageError` when the stage fails.
    """
    order: StageOrder = pickle.loads(payload)
    sys.path.extend(entry for entry in order.sys_path if entry not in sys.path)  # where the stages are importable
    runner = _runner(order)
    runner.status = order.status
    run = runner.start(order.input_id, order.config)
    stages = runner.pipeline.stages
    for outcome in priors:
        run.next_stage = runner.pipeline.find(outcome.stage)
        run.adopt(stages[run.next_stage], outcome)
    run.next_stage = runner.pipeline.find(order.stage)
    return runner.resolve_stage(run, order.pickup, order.hold)


def without_values(outcome: Outcome) -> Outcome:
    """`outcome` without the values it holds (what a Dask coordinator fetches; the values stay on the cluster)."""
    return outcome.without_values()
