"""Executors: where the inputs of a task run.

In this process (:class:`SequentialExecutor`, the default), in local worker processes
(:class:`ProcessExecutor`, ``--jobs N``) or on a Dask cluster (:class:`DaskExecutor`, ``--dask
ADDRESS``). A parallel batch submits one stage execution at a time (see :mod:`repype.graph`);
workers open the store by URL and write records themselves, so mostly digests travel back.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable, Collection
from typing import Any


class Executor:
    """Runs functions on payloads; work is submitted one call at a time and waited for.

    Capabilities: :attr:`remote` (work leaves this process), :attr:`local` (workers run on this
    machine, so they can write a local status journal) and :attr:`holds_data` (a submission may
    take handles of unfinished work as arguments; results stay with the workers until needed).
    """

    remote = True
    """Whether work leaves this process (the store must then be reachable by URL from the workers)."""
    local = True
    """Whether the workers run on this machine."""
    holds_data = False
    """Whether handles of unfinished work may be passed to :meth:`submit` (their results stay on the workers)."""

    def submit(self, function: Callable[..., Any], *args: Any, key: str | None = None, priority: int = 0) -> Any:
        """Starts `function(*args)`; returns a handle. `key` names the work where the executor shows names;
        work of a higher `priority` goes first where the executor orders work (Dask)."""
        raise NotImplementedError

    def wait(self, handles: Collection[Any], timeout: float) -> set[Any]:
        """The handles among `handles` that are done (waits up to `timeout` seconds for the first)."""
        raise NotImplementedError

    def result(self, handle: Any) -> Any:
        """The result of done work (raises its error)."""
        return handle.result()

    def cancel(self, handles: Collection[Any]) -> None:
        """Cancels the work of `handles` that has not finished."""
        for handle in handles:
            handle.cancel()

    def close(self) -> None:
        """Releases workers (an executor can be used as a context manager)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class SequentialExecutor(Executor):
    """Runs everything in this process: a task resolves its inputs one after the other (the default).

    It takes no submissions: a batch or task given it runs sequentially.
    """

    remote = False


class ProcessExecutor(Executor):
    """Runs work in `jobs` fresh local processes (spawned, so stages must be importable)."""

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, not {jobs}")
        self.jobs = jobs
        self.pool = concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, function: Callable[..., Any], *args: Any, key: str | None = None, priority: int = 0) -> Any:
        """Queues `function(*args)` for the worker processes (in order: `priority` is not used)."""
        return self.pool.submit(function, *args)

    def wait(self, handles: Collection[Any], timeout: float) -> set[Any]:
        """The done handles, after waiting up to `timeout` seconds for the first."""
        done, _ = concurrent.futures.wait(handles, timeout, return_when=concurrent.futures.FIRST_COMPLETED)
        return set(done)

    def close(self) -> None:
        """Stops the worker processes: queued work is cancelled, running work is terminated."""
        processes = list((getattr(self.pool, "_processes", None) or {}).values())  # no public way to stop them
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(5)


class DaskExecutor(Executor):
    """Runs work on a Dask cluster: at `address` (`tcp://host:port`), or on a new local cluster.

    Work is submitted under the keys it is given (the dashboard shows the stage names), and
    handles of unfinished work may be arguments of later work: Dask passes the results between
    workers directly.

    Args:
        address: The scheduler's address, or None for a `LocalCluster` of `workers` processes.
        workers: Worker processes of the local cluster (default: one per core).
    """

    holds_data = True

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
        self.local = address.startswith(("tcp://127.", "tcp://localhost", "inproc://")) or self.cluster is not None
        self.client = distributed.Client(address)

    def submit(self, function: Callable[..., Any], *args: Any, key: str | None = None, priority: int = 0) -> Any:
        """Submits `function(*args)` under `key`; futures among `args` are resolved on the cluster."""
        return self.client.submit(function, *args, key=key, pure=False, priority=priority)

    def wait(self, handles: Collection[Any], timeout: float) -> set[Any]:
        """The done futures, after waiting up to `timeout` seconds for the first."""
        import distributed

        try:
            done, _ = distributed.wait(list(handles), timeout=timeout, return_when="FIRST_COMPLETED")
        except distributed.TimeoutError:
            return set()
        return set(done)

    def cancel(self, handles: Collection[Any]) -> None:
        """Cancels the futures and releases their results."""
        self.client.cancel(list(handles))

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
