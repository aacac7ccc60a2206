"""A parameter sweep as whole processes: sequential vs `--jobs 2` vs Dask vs 4 concurrent runs on one store.

K sibling tasks differ only in the last stage's threshold, over a shared expensive prefix: the
stages of `treestages.py` (`render` sleeps and renders an image, `blur`, then the swept
`measure`), each sleeping `delay` seconds (50 ms in the quick and full modes). N inputs. Every
mode runs on a fresh tree and store, as `python -m repype ROOT --run ...` processes timed by
this process:

* sequential: one `--run`;
* `--jobs 2`: one `--run --jobs 2`;
* Dask: a `distributed.LocalCluster(n_workers=2, threads_per_worker=1)` that this script starts
  (not timed) and passes as `--dask ADDRESS`;
* 4 concurrent processes (2 in the tiny mode): four `--run` started at once on the same tree and
  store (execution claims make them wait for each other instead of running an execution twice),
  timed until the last one ends;
* ancestor-only pick-up: sequential, but each sibling's `task.yml` has its own `store:` key, so
  siblings cannot share results (how the original framework lays a sweep out).

Per mode: wall seconds, the ratio to sequential, executions of each stage (the shared prefix is
`render` and `blur`), counted by the work functions into a file (`REPYPE_BENCH_COUNTS`), the
plan's count (`python -m repype ROOT --json` on the fresh store: `totals.to_run`) and the executed
count (every counted execution). The loaded results of every mode must equal the sequential ones.

Headlines: `sweep_stage_runs_ratio` (first-stage runs, ancestor-only / sequential; goal = K),
`sweep_wall_time_ratio` (wall time, ancestor-only / sequential), `sweep_jobs2_vs_sequential`,
`sweep_dask_vs_sequential` (goals <= 0.6), `sweep_concurrent_vs_sequential`,
`sweep_prefix_runs_per_input` (the most `render` runs per input of any repype mode; goal 1),
`sweep_executed_vs_planned` (the largest executed / planned of any repype mode; goal 1) and
`sweep_concurrent_duplicates` (executions beyond the plan with the concurrent processes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common
import peers
import treestages
from common import Result, Table, goal, ratio, scratch

PREFIX = ("render", "blur")
"""The work functions of the stages every sibling shares."""


def sweep_size(mode: str) -> dict[str, Any]:
    """K siblings, N inputs, the seconds every stage sleeps and the image side, in `mode`."""
    sizes = {"siblings": (2, 8, 8), "inputs": (2, 4, 8), "delay": (0.005, 0.05, 0.05), "side": (32, 64, 128)}
    return {name: values[common.MODES.index(mode)] for name, values in sizes.items()}


def write_sweep(root: pathlib.Path, size: Mapping[str, Any], **spec: Any) -> None:
    """The sweep's tree: a non-runnable root with the pipeline and every stage's delay, K siblings below it."""
    delay = size["delay"]
    config = {
        "render": {"delay": delay, "side": size["side"]},
        "blur": {"delay": delay},
        "measure": {"threshold": 0.0, "delay": delay},
    }
    peers.write_tree(root, treestages.SWEEP, f"1-{size['inputs']}", config, peers.sweep_children(size, **spec))


@dataclass
class Measured:
    """One mode's wall time, planned and counted executions, and the loaded results."""

    seconds: float
    planned: int
    executions: Counter
    results: list[list[float]]

    @property
    def executed(self) -> int:
        """Every counted stage execution."""
        return sum(self.executions.values())


def planned(root: pathlib.Path) -> int:
    """Stage executions the dry run announces for the tree (`totals.to_run` of `--json`)."""
    _, out = peers.cli(sys.executable, root, "--json")
    return int(json.loads(out)["totals"]["to_run"])


def concurrent(root: pathlib.Path, processes: int, counts: pathlib.Path) -> float:
    """Wall seconds of `processes` `python -m repype ROOT --run` started at once, until the last ends."""
    command = [sys.executable, "-m", "repype", str(root), "--run"]
    start = time.perf_counter()
    started = [
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=peers.child_env(counts),
            cwd=tempfile.gettempdir(),
        )
        for _ in range(processes)
    ]
    outputs = [process.communicate()[0] for process in started]
    seconds = time.perf_counter() - start
    for process, output in zip(started, outputs):
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}:\n{output[-3000:]}")
    return seconds


def loaded(root: pathlib.Path) -> list[list[float]]:
    """The `foreground` of every input of every sibling, loaded from the store (in this process)."""
    from repype.batch import Batch

    batch = Batch()
    batch.load(root)
    return [[data[key]["foreground"] for key in sorted(data)] for data in (c.task.load() for c in batch.contexts)]


def measure_mode(root: pathlib.Path, flags: tuple[str, ...], processes: int = 1) -> Measured:
    """Plans, runs (`processes` processes at once) and loads the fresh tree at `root`."""
    counts = root.parent / f"{root.name}.counts"
    count = planned(root)
    if processes == 1:
        seconds, _ = peers.cli(sys.executable, root, "--run", *flags, counts=counts)
    else:
        seconds = concurrent(root, processes, counts)
    return Measured(seconds, count, peers.executions(counts), loaded(root))


@contextlib.contextmanager
def dask_cluster(counts: pathlib.Path) -> Iterator[str | None]:
    """The address of a 2-worker `LocalCluster` whose workers count into `counts` (None without distributed)."""
    try:
        from distributed import LocalCluster
    except ImportError:
        yield None
        return
    saved = {name: os.environ.get(name) for name in ("REPYPE_BENCH_COUNTS", "PYTHONPATH")}
    os.environ.update(peers.child_env(counts))  # the workers inherit it: stages import and count there
    try:
        with LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.CRITICAL,  # workers that lose the scheduler while it stops log tracebacks
        ) as cluster:
            yield cluster.scheduler_address
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run(mode: str) -> Result:
    size = sweep_size(mode)
    together = common.pick(mode, 2, 4, 4)
    measured: dict[str, Measured] = {}
    notes = []
    with scratch() as tmp:
        for label, flags, processes in (
            ("sequential", (), 1),
            ("--jobs 2", ("--jobs", "2"), 1),
            (f"{together} concurrent processes, one store", (), together),
        ):
            root = tmp / f"sweep-{len(measured)}"
            write_sweep(root, size)
            measured[label] = measure_mode(root, flags, processes)
        root = tmp / "sweep-dask"
        write_sweep(root, size)
        with dask_cluster(root.parent / f"{root.name}.counts") as address:
            if address is None:
                notes.append("Dask skipped: distributed is not installed")
            else:
                measured["Dask LocalCluster (2 workers x 1 thread)"] = measure_mode(root, ("--dask", address))
        root = tmp / "sweep-own"
        write_sweep(root, size, store=".repype-own")
        measured["ancestor-only pick-up (a store per sibling), sequential"] = measure_mode(root, ())
    return report(size, measured, notes)


def exactly(value: float, target: float) -> str:
    """`met` when `value` is `target`, else `MISSED`."""
    return "met" if value == target else "MISSED"


def report(size: Mapping[str, Any], measured: dict[str, Measured], notes: list[str]) -> Result:
    """The table and headlines of the measured modes."""
    sequential = measured["sequential"]
    for label, result in measured.items():
        assert result.results == sequential.results, f"{label} computed different results than the sequential run"
    table = Table(
        f"Sweep: K={size['siblings']} siblings differing in the last stage's threshold, N={size['inputs']} inputs, "
        f"every stage sleeps {size['delay'] * 1000:.0f} ms (render also renders a {size['side']}x{size['side']} "
        "image), as whole processes on a fresh store",
        ["mode", "seconds", "vs sequential", "render runs", "blur runs", "measure runs", "planned", "executed"],
    )
    for label, result in measured.items():
        counts = result.executions
        table.add(
            label,
            result.seconds,
            ratio(result.seconds, sequential.seconds),
            counts.get("render", 0),
            counts.get("blur", 0),
            counts.get("measure", 0),
            result.planned,
            result.executed,
        )
    ours = {label: result for label, result in measured.items() if not label.startswith("ancestor-only")}
    ancestor = measured["ancestor-only pick-up (a store per sibling), sequential"]
    together = next(result for label, result in measured.items() if "concurrent" in label)
    headlines = {
        "sweep_stage_runs_ratio": ratio(ancestor.executions["render"], sequential.executions["render"]),
        "sweep_wall_time_ratio": ratio(ancestor.seconds, sequential.seconds),
        "sweep_jobs2_vs_sequential": ratio(measured["--jobs 2"].seconds, sequential.seconds),
        "sweep_concurrent_vs_sequential": ratio(together.seconds, sequential.seconds),
        "sweep_prefix_runs_per_input": max(
            ratio(result.executions[name], size["inputs"]) for result in ours.values() for name in PREFIX
        ),
        "sweep_executed_vs_planned": max(ratio(result.executed, result.planned) for result in ours.values()),
        "sweep_concurrent_duplicates": together.executed - together.planned,
    }
    dask = next((result for label, result in measured.items() if label.startswith("Dask")), None)
    if dask is not None:
        headlines["sweep_dask_vs_sequential"] = ratio(dask.seconds, sequential.seconds)
    table.notes += [
        *notes,
        "each mode on a fresh tree and store; seconds as the parent process sees them; Dask's cluster start "
        "is excluded (started before, stopped after); planned = totals.to_run of `--json` on the fresh store; "
        "executed = every counted stage execution",
        f"sweep_stage_runs_ratio (render runs, ancestor-only / sequential): {headlines['sweep_stage_runs_ratio']} "
        f"(goal = K = {size['siblings']})",
        f"--jobs 2 / sequential: {headlines['sweep_jobs2_vs_sequential']} (goal <= 0.6: "
        f"{goal(headlines['sweep_jobs2_vs_sequential'], 0.6, False)})"
        + (
            f"; Dask / sequential: {headlines['sweep_dask_vs_sequential']} "
            f"(goal <= 0.6: {goal(headlines['sweep_dask_vs_sequential'], 0.6, False)})"
            if dask is not None
            else ""
        ),
        f"shared prefix runs per input, most of any repype mode: {headlines['sweep_prefix_runs_per_input']} "
        f"(goal 1: {exactly(headlines['sweep_prefix_runs_per_input'], 1)}); executed / planned, largest: "
        f"{headlines['sweep_executed_vs_planned']} (goal 1: {exactly(headlines['sweep_executed_vs_planned'], 1)})",
        f"concurrent processes: {headlines['sweep_concurrent_duplicates']} execution(s) beyond the plan",
    ]
    return Result([table], headlines)


if __name__ == "__main__":
    common.main(run, description=__doc__)
