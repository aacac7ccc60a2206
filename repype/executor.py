"""Executors: where the inputs of a task run.

In this process (:class:`SequentialExecutor`, the default), in local worker processes
(:class:`ProcessExecutor`, ``--jobs N``) or on a Dask cluster (:class:`DaskExecutor`, ``--dask
ADDRESS``). Work travels as dill-serialised bytes; workers open the store by URL and write
records themselves, so only digests travel back.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from typing import Any


class Executor:
    """Runs a function on many payloads; results arrive as `(index, result)` in completion order."""

    remote = True
    """Whether work leaves this process (the store must then be reachable by URL from the workers)."""

    def map(self, function: Callable[[bytes], bytes], payloads: Sequence[bytes]) -> Iterator[tuple[int, bytes]]:
        """Yields `(index, function(payloads[index]))` for every payload as each completes."""
        raise NotImplementedError

    def close(self) -> None:
        """Releases workers (an executor can be used as a context manager)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class SequentialExecutor(Executor):
    """Runs everything in this process, in order."""

    remote = False

    def map(self, function: Callable[[bytes], bytes], payloads: Sequence[bytes]) -> Iterator[tuple[int, bytes]]:
        """Yields `(index, function(payloads[index]))` in order, in this process."""
        for index, payload in enumerate(payloads):
            yield index, function(payload)


class ProcessExecutor(Executor):
    """Runs work in `jobs` fresh local processes (spawned, so stages must be importable)."""

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, not {jobs}")
        self.pool = concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))

    def map(self, function: Callable[[bytes], bytes], payloads: Sequence[bytes]) -> Iterator[tuple[int, bytes]]:
        """Yields `(index, result)` as the worker processes finish; a failure is raised as it arrives."""
        futures = {self.pool.submit(function, payload): index for index, payload in enumerate(payloads)}
        try:
            for future in concurrent.futures.as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        """Stops the worker processes (pending work is cancelled)."""
        self.pool.shutdown(cancel_futures=True)


class DaskExecutor(Executor):
    """Runs work on a Dask cluster: at `address` (`tcp://host:port`), or on a new local cluster.

    Args:
        address: The scheduler's address, or None for a `LocalCluster` of `workers` processes.
        workers: Worker processes of the local cluster (default: one per core).
    """

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            import distributed
        except ImportError as error:
            raise ImportError("the Dask executor needs dask.distributed: pip install 'repype[dask]'") from error
        self.cluster = None
        if address is None:
            self.cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            address = self.cluster.scheduler_address
        self.client = distributed.Client(address)

    def map(self, function: Callable[[bytes], bytes], payloads: Sequence[bytes]) -> Iterator[tuple[int, bytes]]:
        """Yields `(index, result)` as the Dask tasks finish; a failure is raised as it arrives."""
        import distributed

        futures = [self.client.submit(function, payload, pure=False) for payload in payloads]
        index_of = {future.key: index for index, future in enumerate(futures)}
        try:
            for future in distributed.as_completed(futures):
                yield index_of[future.key], future.result()
        finally:
            self.client.cancel(futures)

    def close(self) -> None:
        """Disconnects from the scheduler (and stops the local cluster this executor started)."""
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def create_executor(spec: Executor | int | str | None) -> Executor:
    """An executor from a spec: None or 1 → sequential; an int N > 1 → N local processes;
    `'dask'` → a local Dask cluster; `'tcp://...'` or another scheduler address → that Dask cluster."""
    if isinstance(spec, Executor):
        return spec
    if spec is None or spec == 1:
        return SequentialExecutor()
    if isinstance(spec, int):
        return ProcessExecutor(spec)
    if spec == "dask":
        return DaskExecutor()
    return DaskExecutor(spec)
